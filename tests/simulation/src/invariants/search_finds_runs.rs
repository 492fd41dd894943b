//! The search indexes agree with what they index. SearchVariable: every WfRun that exists is
//! found by its `order` variable (its own id, unique) on every node, and nothing else is; a
//! WfRun that does not exist is found by nobody; every WfRun a `child-number` search finds
//! exists. SearchTaskRun: the TaskRuns of the simulation's TaskDef are exactly those read from
//! the WfRuns, and by status exactly those in that status. SearchWorkflowEvent: the `seen`
//! events are exactly those the WfRuns hold. The indexes are written in the same
//! commands as what they index, so a replica whose index lagged, doubled or kept a row that
//! should have moved would answer differently.

use std::collections::{BTreeMap, BTreeSet};

use halter_api::littlehorse::*;
use halter_api::values;

use super::{retry, Observed};
use crate::cluster::ClusterView;

async fn search(
    c: &ClusterView,
    node: usize,
    var: &str,
    value: VariableValue,
) -> Result<Vec<VariableId>, String> {
    let mut out = Vec::new();
    let mut bookmark = None;
    loop {
        let req = SearchVariableRequest {
            wf_spec_name: "sim".into(),
            var_name: var.into(),
            value: Some(value.clone()),
            bookmark: bookmark.clone(),
            limit: Some(100),
            ..Default::default()
        };
        let page = retry(|| {
            let mut lh = c.lh(node);
            let req = req.clone();
            async move { lh.search_variable(req).await }
        })
        .await
        .map_err(|e| format!("searching {var} on node {node}: {e}"))?
        .into_inner();
        out.extend(page.results);
        match page.bookmark {
            Some(b) => bookmark = Some(b),
            None => return Ok(out),
        }
    }
}

pub async fn check(c: &ClusterView, obs: &Observed) -> Result<(), String> {
    for (id, run) in &obs.runs {
        for node in 0..c.len() {
            let found = search(c, node, "order", values::str(id.clone())).await?;
            let ids: Vec<(&str, i32)> = found
                .iter()
                .map(|v| {
                    (
                        v.wf_run_id.as_ref().map_or("", |w| w.id.as_str()),
                        v.thread_run_number,
                    )
                })
                .collect();
            let want: Vec<(&str, i32)> = match run {
                Some(_) => vec![(id.as_str(), 0)],
                None => vec![],
            };
            if ids != want {
                return Err(format!(
                    "SearchVariable order={id} on node {node} found {ids:?}, expected {want:?}"
                ));
            }
        }
    }
    check_task_runs(c, obs).await?;
    check_workflow_events(c, obs).await?;
    for v in search(c, 0, "child-number", values::int(1)).await? {
        let wf = v.wf_run_id.map(|w| w.id).unwrap_or_default();
        if !matches!(obs.runs.get(&wf), Some(Some(_))) {
            return Err(format!(
                "SearchVariable child-number=1 found {wf}, which does not exist"
            ));
        }
    }
    Ok(())
}

async fn search_tasks(
    c: &ClusterView,
    status: Option<TaskStatus>,
) -> Result<BTreeSet<(String, String)>, String> {
    let mut out = BTreeSet::new();
    let mut bookmark = None;
    loop {
        let req = SearchTaskRunRequest {
            task_def_name: crate::scenario::TASK.into(),
            status: status.map(|s| s as i32),
            bookmark: bookmark.clone(),
            limit: Some(100),
            ..Default::default()
        };
        let page = retry(|| {
            let mut lh = c.lh(0);
            let req = req.clone();
            async move { lh.search_task_run(req).await }
        })
        .await
        .map_err(|e| format!("searching TaskRuns: {e}"))?
        .into_inner();
        for id in page.results {
            let wf = id.wf_run_id.map(|w| w.id).unwrap_or_default();
            if !out.insert((wf.clone(), id.task_guid.clone())) {
                return Err(format!("SearchTaskRun gave {wf}/{} twice", id.task_guid));
            }
        }
        match page.bookmark {
            Some(b) => bookmark = Some(b),
            None => return Ok(out),
        }
    }
}

async fn check_task_runs(c: &ClusterView, obs: &Observed) -> Result<(), String> {
    let mut all = BTreeSet::new();
    let mut by_status: BTreeMap<i32, BTreeSet<(String, String)>> = BTreeMap::new();
    for (wf, runs) in &obs.task_runs {
        for tr in runs {
            let id = (wf.clone(), tr.id.clone().unwrap_or_default().task_guid);
            all.insert(id.clone());
            by_status.entry(tr.status).or_default().insert(id);
        }
    }
    let found = search_tasks(c, None).await?;
    if found != all {
        return Err(format!(
            "SearchTaskRun found {found:?}, the WfRuns hold {all:?}"
        ));
    }
    // Every status, those no TaskRun is in too: a row left behind by a move shows there.
    for st in (0..32).filter_map(|n| TaskStatus::try_from(n).ok()) {
        let want = by_status.remove(&(st as i32)).unwrap_or_default();
        let found = search_tasks(c, Some(st)).await?;
        if found != want {
            return Err(format!(
                "SearchTaskRun {st:?} found {found:?}, the WfRuns hold {want:?}"
            ));
        }
    }
    Ok(())
}

async fn check_workflow_events(c: &ClusterView, obs: &Observed) -> Result<(), String> {
    let want: BTreeSet<(String, i32)> = obs
        .workflow_events
        .iter()
        .flat_map(|(wf, evs)| evs.iter().map(move |e| (wf.clone(), e)))
        .filter_map(|(wf, e)| e.id.as_ref().map(|i| (wf, i.number)))
        .collect();
    let mut found = BTreeSet::new();
    let mut bookmark = None;
    loop {
        let req = SearchWorkflowEventRequest {
            workflow_event_def_id: Some(WorkflowEventDefId {
                name: crate::scenario::SEEN.into(),
            }),
            bookmark: bookmark.clone(),
            limit: Some(7),
            ..Default::default()
        };
        let page = retry(|| {
            let mut lh = c.lh(0);
            let req = req.clone();
            async move { lh.search_workflow_event(req).await }
        })
        .await
        .map_err(|e| format!("searching WorkflowEvents: {e}"))?
        .into_inner();
        for id in page.results {
            let key = (id.wf_run_id.map(|w| w.id).unwrap_or_default(), id.number);
            if !found.insert(key.clone()) {
                return Err(format!("SearchWorkflowEvent gave {key:?} twice"));
            }
        }
        match page.bookmark {
            Some(b) => bookmark = Some(b),
            None => break,
        }
    }
    if found != want {
        return Err(format!(
            "SearchWorkflowEvent found {found:?}, the WfRuns hold {want:?}"
        ));
    }
    Ok(())
}
