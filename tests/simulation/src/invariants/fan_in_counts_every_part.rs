//! A fan-out is joined exactly once per part, on every replica. Clients start `sim-gather`
//! runs `gat-K` with one to four parts (START_MULTIPLE_THREADS) and put `part` events to them
//! through the faults. Each part thread adds one to thread 0's `done` when its event comes, or
//! in its TIMEOUT handler when it does not; thread 0 waits until `done` >= `n`
//! (WAIT_FOR_CONDITION, met only by a write from a child thread) and then joins the parts.
//! After healing (node 0):
//!
//! - **Ends**: every gather run COMPLETED: each part ends within 3 s, and the last part's
//!   write must wake the condition (a missed wake leaves the run RUNNING for ever).
//! - **Once per part**: `done` == `n`, there are exactly `n` part threads, all COMPLETED, and
//!   each part's wait either claimed an event or timed out (never both, never neither).
//! - **Events match waits**: the run's claimed `part` events are exactly the ones the parts'
//!   waits name, each with the claiming thread recorded.
//! - **Not early**: the condition's NodeRun ended no earlier than any part's wait.
//!
//! `replica_digests` checks that every node applied the same.

use std::collections::BTreeSet;

use halter_api::littlehorse::*;
use halter_api::wf_run_id::wf_run_id_of;
use halter_state_machine::time::ms;

use super::{get_node, get_run, get_var, retry};
use crate::cluster::ClusterView;
use crate::workload::{gather_name, GATHER_POOL};

pub struct Gather {
    pub id: String,
    pub run: WfRun,
    pub n: Option<VariableValue>,
    pub done: Option<VariableValue>,
    /// The condition's NodeRun (thread 0, position 2).
    pub until: NodeRun,
    /// Each part thread's number and its wait's NodeRun (position 1).
    pub waits: Vec<(i32, NodeRun)>,
    /// The run's `part` events, as stored.
    pub events: Vec<ExternalEvent>,
}

pub async fn observe(c: &ClusterView) -> Result<Vec<Gather>, String> {
    let mut out = Vec::new();
    for i in 0..GATHER_POOL {
        let id = gather_name(i);
        let run = get_run(c, &id).await?;
        let Some(run) = run else { continue };
        let mut waits = Vec::new();
        for t in &run.thread_runs {
            if t.thread_spec_name == "part" {
                waits.push((t.number, get_node(c, &id, t.number, 1).await?));
            }
        }
        let events = retry(|| {
            let mut lh = c.lh(0);
            let req = ListExternalEventsRequest {
                wf_run_id: Some(wf_run_id_of(&id)),
                ..Default::default()
            };
            async move { lh.list_external_events(req).await }
        })
        .await
        .map_err(|e| format!("listing {id}'s events: {e}"))?
        .into_inner()
        .results
        .into_iter()
        .filter(|e| {
            e.id.as_ref()
                .and_then(|i| i.external_event_def_id.as_ref())
                .is_some_and(|d| d.name == crate::scenario::PART)
        })
        .collect();
        out.push(Gather {
            n: get_var(c, &id, "n").await?,
            done: get_var(c, &id, "done").await?,
            until: get_node(c, &id, 0, 2).await?,
            id,
            run,
            waits,
            events,
        });
    }
    Ok(out)
}

pub fn check(gathers: &[Gather]) -> Result<(), String> {
    for g in gathers {
        let id = &g.id;
        let status = g.run.status();
        if status != LhStatus::Completed {
            return Err(format!("gather {id}: {status:?} after healing"));
        }
        let n = match g.n.as_ref().and_then(|v| v.value.clone()) {
            Some(variable_value::Value::Int(n)) => n,
            other => return Err(format!("gather {id}: n is {other:?}")),
        };
        let done = g.done.as_ref().and_then(|v| v.value.clone());
        if done != Some(variable_value::Value::Int(n)) {
            return Err(format!("gather {id}: done is {done:?} for {n} parts"));
        }
        if g.waits.len() as i64 != n {
            return Err(format!(
                "gather {id}: {} part threads for {n}",
                g.waits.len()
            ));
        }
        for t in g
            .run
            .thread_runs
            .iter()
            .filter(|t| t.thread_spec_name == "part")
        {
            if t.status() != LhStatus::Completed {
                return Err(format!("gather {id}: part {} {:?}", t.number, t.status()));
            }
        }
        let mut named = BTreeSet::new();
        for (number, wait) in &g.waits {
            let Some(node_run::NodeType::ExternalEvent(ee)) = &wait.node_type else {
                return Err(format!(
                    "gather {id}: part {number}'s wait is {:?}",
                    wait.node_type
                ));
            };
            let timed_out = wait.failures.iter().any(|f| f.failure_name == "TIMEOUT");
            match (&ee.external_event_id, timed_out || ee.timed_out) {
                (Some(ev), false) if wait.status() == LhStatus::Completed => {
                    if !named.insert(ev.guid.clone()) {
                        return Err(format!("gather {id}: event {} claimed twice", ev.guid));
                    }
                }
                (None, true) if wait.status() == LhStatus::Error => {}
                (ev, t) => {
                    return Err(format!(
                        "gather {id}: part {number}'s wait {:?}, event {ev:?}, timed out {t}",
                        wait.status()
                    ))
                }
            }
        }
        let claimed: BTreeSet<String> = g
            .events
            .iter()
            .filter(|e| e.claimed)
            .filter_map(|e| e.id.as_ref().map(|i| i.guid.clone()))
            .collect();
        if claimed != named {
            return Err(format!(
                "gather {id}: claimed events {claimed:?}, the waits name {named:?}"
            ));
        }
        for e in g.events.iter().filter(|e| e.claimed) {
            let thread = e.thread_run_number.unwrap_or(-1);
            if !g.waits.iter().any(|(n, _)| *n == thread) {
                return Err(format!("gather {id}: an event claimed by thread {thread}"));
            }
        }
        let last_wait = g
            .waits
            .iter()
            .map(|(_, w)| w.end_time.as_ref().map_or(i64::MIN, ms))
            .max();
        if g.until.status() != LhStatus::Completed
            || last_wait.is_some_and(|w| g.until.end_time.as_ref().map_or(i64::MIN, ms) < w)
        {
            return Err(format!(
                "gather {id}: the condition {:?} at {}, the last part's wait ended at {last_wait:?}",
                g.until.status(),
                g.until.end_time.as_ref().map_or(i64::MIN, ms)
            ));
        }
    }
    Ok(())
}
