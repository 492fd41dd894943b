//! The invariants checked after each run (and, for reads and leaders, during it). Each lives in
//! its own file with the reason it must hold.

mod acknowledged_events;
mod backups_restore_the_state;
mod checkpoints_survive_retries;
mod children_end_before_parents;
mod claimed_once;
mod fan_in_counts_every_part;
mod liveness;
mod monotonic_reads;
mod no_task_work_after_the_end;
mod reads_see_acknowledged_runs;
mod replica_digests;
mod rescues_consume_failures;
mod schedules_fire_once_per_time;
mod search_finds_runs;
mod tasks_once;
mod terms_never_go_back;
mod timeout_xor_complete;
mod user_tasks_once;
mod worker_heartbeats_recorded;
mod workflow_events_once;

use std::collections::BTreeMap;
use std::time::Duration;

use halter_api::littlehorse::*;
use halter_api::wf_run_id::wf_run_id_of;

use crate::cluster::{within, ClusterView};
use crate::oracle::Shared;
use crate::workload::{orphan_name, wf_name, PRE_POOL, WF_POOL};

/// What the checker read back from the healed cluster.
pub struct Observed {
    /// WfRun id -> the run (None: not found).
    pub runs: BTreeMap<String, Option<WfRun>>,
    /// WfRun id -> its NodeRuns.
    pub node_runs: BTreeMap<String, Vec<NodeRun>>,
    /// (node index, WfRun id) -> that node's events of the WfRun.
    pub events: BTreeMap<(usize, String), Vec<ExternalEvent>>,
    /// WfRun id -> its TaskRuns.
    pub task_runs: BTreeMap<String, Vec<TaskRun>>,
    /// WfRun id -> the WorkflowEvents it threw (node 0).
    pub workflow_events: BTreeMap<String, Vec<WorkflowEvent>>,
    /// WfRun id -> its UserTaskRuns (node 0).
    pub user_task_runs: BTreeMap<String, Vec<UserTaskRun>>,
}

impl Observed {
    /// The TaskRun `guid` of WfRun `wf` in the final state.
    pub fn task_run(&self, wf: &str, guid: &str) -> Option<&TaskRun> {
        self.task_runs
            .get(wf)?
            .iter()
            .find(|t| t.id.as_ref().is_some_and(|i| i.task_guid == guid))
    }
}

async fn retry<T, F, Fut>(mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut last = String::from("timeout");
    for _ in 0..20 {
        match within(4000, f()).await {
            Some(Ok(v)) => return Ok(v),
            Some(Err(s)) => last = format!("{:?}: {}", s.code(), s.message()),
            None => last = "timeout".into(),
        }
        madsim::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last)
}

/// A WfRun by its key (`parent_child` for a child), from node 0; None when it is not found.
async fn get_run(c: &ClusterView, key: &str) -> Result<Option<WfRun>, String> {
    retry(|| {
        let mut lh = c.lh(0);
        let id = wf_run_id_of(key);
        async move {
            match lh.get_wf_run(id).await {
                Ok(r) => Ok(Some(r.into_inner())),
                Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
                Err(s) => Err(s),
            }
        }
    })
    .await
    .map_err(|e| format!("reading WfRun {key}: {e}"))
}

/// Thread 0's variable `name` of WfRun `key`, from node 0; None when it is not found (a null
/// value reads as the default VariableValue).
async fn get_var(c: &ClusterView, key: &str, name: &str) -> Result<Option<VariableValue>, String> {
    retry(|| {
        let mut lh = c.lh(0);
        let id = VariableId {
            wf_run_id: Some(wf_run_id_of(key)),
            thread_run_number: 0,
            name: name.into(),
        };
        async move {
            match lh.get_variable(id).await {
                Ok(v) => Ok(Some(v.into_inner().value.unwrap_or_default())),
                Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
                Err(s) => Err(s),
            }
        }
    })
    .await
    .map_err(|e| format!("reading {key}'s {name}: {e}"))
}

/// A NodeRun of WfRun `key`, from node 0.
async fn get_node(
    c: &ClusterView,
    key: &str,
    thread: i32,
    position: i32,
) -> Result<NodeRun, String> {
    retry(|| {
        let mut lh = c.lh(0);
        let id = NodeRunId {
            wf_run_id: Some(wf_run_id_of(key)),
            thread_run_number: thread,
            position,
        };
        async move { lh.get_node_run(id).await }
    })
    .await
    .map(tonic::Response::into_inner)
    .map_err(|e| format!("reading NodeRun {key}/{thread}/{position}: {e}"))
}

async fn observe(c: &ClusterView) -> Result<Observed, String> {
    let mut obs = Observed {
        runs: BTreeMap::new(),
        node_runs: BTreeMap::new(),
        events: BTreeMap::new(),
        task_runs: BTreeMap::new(),
        workflow_events: BTreeMap::new(),
        user_task_runs: BTreeMap::new(),
    };
    let ids: Vec<String> = (0..WF_POOL)
        .map(wf_name)
        .chain((0..PRE_POOL).map(orphan_name))
        .collect();
    for id in &ids {
        let wf = WfRunId {
            id: id.clone(),
            parent_wf_run_id: None,
        };
        let mut lh = c.lh(0);
        let run = get_run(c, id).await?;
        if run.is_some() {
            let nrs = retry(|| {
                let mut lh = lh.clone();
                let wf = wf.clone();
                async move {
                    lh.list_node_runs(ListNodeRunsRequest {
                        wf_run_id: Some(wf),
                        limit: Some(1000),
                        ..Default::default()
                    })
                    .await
                }
            })
            .await
            .map_err(|e| format!("listing NodeRuns of {id}: {e}"))?;
            obs.node_runs.insert(id.clone(), nrs.into_inner().results);
            let trs = retry(|| {
                let mut lh = lh.clone();
                let wf = wf.clone();
                async move {
                    lh.list_task_runs(ListTaskRunsRequest {
                        wf_run_id: Some(wf),
                        bookmark: None,
                        limit: Some(1000),
                    })
                    .await
                }
            })
            .await
            .map_err(|e| format!("listing TaskRuns of {id}: {e}"))?;
            obs.task_runs.insert(id.clone(), trs.into_inner().results);
            let uts = retry(|| {
                let mut lh = lh.clone();
                let wf = wf.clone();
                async move {
                    lh.list_user_task_runs(ListUserTaskRunRequest {
                        wf_run_id: Some(wf),
                        bookmark: None,
                        limit: Some(1000),
                    })
                    .await
                }
            })
            .await
            .map_err(|e| format!("listing UserTaskRuns of {id}: {e}"))?;
            obs.user_task_runs
                .insert(id.clone(), uts.into_inner().results);
        }
        let wevs = retry(|| {
            let mut lh = lh.clone();
            let wf = wf.clone();
            async move {
                lh.list_workflow_events(ListWorkflowEventsRequest {
                    wf_run_id: Some(wf),
                    bookmark: None,
                    limit: Some(1000),
                })
                .await
            }
        })
        .await
        .map_err(|e| format!("listing WorkflowEvents of {id}: {e}"))?;
        obs.workflow_events
            .insert(id.clone(), wevs.into_inner().results);
        obs.runs.insert(id.clone(), run);
        for node in 0..c.len() {
            lh = c.lh(node);
            let evs = retry(|| {
                let mut lh = lh.clone();
                let wf = wf.clone();
                async move {
                    lh.list_external_events(ListExternalEventsRequest {
                        wf_run_id: Some(wf),
                        bookmark: None,
                        limit: Some(1000),
                    })
                    .await
                }
            })
            .await
            .map_err(|e| format!("listing events of {id} on node {node}: {e}"))?;
            obs.events
                .insert((node, id.clone()), evs.into_inner().results);
        }
    }
    Ok(obs)
}

/// How much of the thread machinery a seed exercised, counted in the final state.
#[derive(Debug, Default, Clone, Copy)]
pub struct Coverage {
    pub interrupts: usize,
    pub failure_handlers: usize,
    pub tasks_succeeded: usize,
    /// ExternalEvents made by correlations (on node 0).
    pub correlated_events: usize,
    /// WorkflowEvents thrown, and returned to `AwaitWorkflowEvent` calls.
    pub workflow_events: usize,
    pub awaited: usize,
    /// Reviews (UserTaskRuns) completed and cancelled.
    pub reviews_done: usize,
    pub reviews_cancelled: usize,
    /// RescueThreadRun calls acknowledged.
    pub rescued: usize,
    /// WfRuns started by schedules.
    pub scheduled_runs: usize,
    /// Family runs whose child completed (and so did they).
    pub families_completed: usize,
    /// Gather runs that completed, and the parts they joined.
    pub gathers_completed: usize,
    pub gathered_parts: usize,
    /// Checkpoints saved (in the final state), and read back by later attempts.
    pub checkpoints: usize,
    pub checkpoints_read: usize,
}

/// Checks everything; returns the cluster's final state digest and the coverage.
pub async fn check_all(c: &ClusterView, oracle: &Shared) -> Result<(String, Coverage), String> {
    let digest = replica_digests::check(c).await?;
    backups_restore_the_state::check(c).await?;
    let obs = observe(c).await?;
    search_finds_runs::check(c, &obs).await?;
    let ticks = schedules_fire_once_per_time::observe(c).await?;
    let families = children_end_before_parents::observe(c).await?;
    children_end_before_parents::check(&families)?;
    let gathers = fan_in_counts_every_part::observe(c).await?;
    let checkpoints = checkpoints_survive_retries::observe(c, &obs).await?;
    let heartbeats = worker_heartbeats_recorded::observe(c).await?;
    fan_in_counts_every_part::check(&gathers)?;
    let o = oracle.lock();
    acknowledged_events::check(&o, &obs)?;
    claimed_once::check(&obs)?;
    timeout_xor_complete::check(&obs)?;
    liveness::check(&o, &obs)?;
    monotonic_reads::check(&o)?;
    reads_see_acknowledged_runs::check(&o)?;
    terms_never_go_back::check(&o)?;
    tasks_once::check(&o, &obs)?;
    checkpoints_survive_retries::check(&o, &obs, &checkpoints)?;
    worker_heartbeats_recorded::check(&o, &heartbeats)?;
    no_task_work_after_the_end::check(&obs)?;
    workflow_events_once::check(&o, &obs)?;
    user_tasks_once::check(&o, &obs)?;
    rescues_consume_failures::check(&o, &obs)?;
    schedules_fire_once_per_time::check(&o, &ticks)?;
    let mut cov = Coverage {
        tasks_succeeded: obs
            .task_runs
            .values()
            .flatten()
            .filter(|t| t.status() == TaskStatus::TaskSuccess)
            .count(),
        correlated_events: obs
            .events
            .iter()
            .filter(|((node, _), _)| *node == 0)
            .flat_map(|(_, evs)| evs)
            .filter(|e| e.id.as_ref().is_some_and(|i| i.guid.starts_with("ce")))
            .count(),
        workflow_events: obs.workflow_events.values().map(Vec::len).sum(),
        awaited: o.awaited.values().map(Vec::len).sum(),
        reviews_done: obs
            .user_task_runs
            .values()
            .flatten()
            .filter(|r| r.status() == UserTaskRunStatus::Done)
            .count(),
        reviews_cancelled: obs
            .user_task_runs
            .values()
            .flatten()
            .filter(|r| r.status() == UserTaskRunStatus::Cancelled)
            .count(),
        rescued: o.rescues_acked.values().sum(),
        scheduled_runs: ticks.runs.len(),
        families_completed: families
            .iter()
            .filter(|f| {
                f.parent
                    .as_ref()
                    .is_some_and(|p| p.status() == LhStatus::Completed)
            })
            .count(),
        gathers_completed: gathers
            .iter()
            .filter(|g| g.run.status() == LhStatus::Completed)
            .count(),
        gathered_parts: gathers.iter().map(|g| g.waits.len()).sum(),
        checkpoints: checkpoints.len(),
        checkpoints_read: o.checkpoints_read,
        ..Default::default()
    };
    for t in obs.runs.values().flatten().flat_map(|r| &r.thread_runs) {
        match t.r#type() {
            ThreadType::Interrupt => cov.interrupts += 1,
            ThreadType::FailureHandler => cov.failure_handlers += 1,
            _ => {}
        }
    }
    Ok((digest, cov))
}
