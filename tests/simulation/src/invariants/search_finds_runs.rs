//! SearchVariable's index agrees with the WfRuns: every WfRun that exists is found by its
//! `order` variable (its own id, unique) on every node, and nothing else is; a WfRun that does
//! not exist is found by nobody. Every WfRun that a `child-number` search finds exists. The
//! index is written in the same commands as the variables, so a replica whose index lagged,
//! doubled or kept a deleted run's row would answer differently.

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
