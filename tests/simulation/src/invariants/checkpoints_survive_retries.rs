//! A checkpoint whose save was acknowledged is never lost and never renumbered: the TaskRun's
//! checkpoints are numbered 0, 1, ... with no gap, each acknowledged one reads back as the value
//! saved, and every later attempt of its TaskRun is told about it
//! (`total_observed_checkpoints` greater than its number). An attempt may save only while it is
//! its TaskRun's latest and running, and a later attempt exists only once that one ended, so
//! any later attempt's claim was applied after the save.
//! (Two acknowledgements of one number with different values, and a read-back by a later attempt
//! that differs from the acknowledged value, are flagged by the workers as they happen.)

use std::collections::BTreeMap;

use halter_api::littlehorse::*;

use super::{retry, Observed};
use crate::cluster::ClusterView;
use crate::oracle::Oracle;

/// (WfRun id, task guid, number) -> the int value stored, for every checkpoint of every TaskRun
/// in the final state (read from node 0).
pub type Stored = BTreeMap<(String, String, i32), Option<i64>>;

pub async fn observe(c: &ClusterView, obs: &Observed) -> Result<Stored, String> {
    let mut out = Stored::new();
    let lh = c.lh(0);
    for (wf, runs) in &obs.task_runs {
        for tr in runs {
            let Some(id) = tr.id.clone() else { continue };
            for k in 0..tr.total_checkpoints {
                let cid = CheckpointId {
                    task_run: Some(id.clone()),
                    checkpoint_number: k,
                };
                let got = retry(|| {
                    let mut lh = lh.clone();
                    let cid = cid.clone();
                    async move { lh.get_checkpoint(cid).await }
                })
                .await
                .map_err(|e| format!("reading checkpoint {k} of {wf}/{}: {e}", id.task_guid))?;
                let value = match got.into_inner().value.and_then(|v| v.value) {
                    Some(variable_value::Value::Int(n)) => Some(n),
                    _ => None,
                };
                out.insert((wf.clone(), id.task_guid.clone(), k), value);
            }
        }
    }
    Ok(out)
}

pub fn check(o: &Oracle, obs: &Observed, stored: &Stored) -> Result<(), String> {
    for ((wf, guid, k), (attempt, value)) in &o.checkpoints {
        let tr = obs.task_run(wf, guid).ok_or_else(|| {
            format!("checkpoint {k} of {wf}/{guid} was saved, its TaskRun is gone")
        })?;
        if *k < 0 || *k >= tr.total_checkpoints {
            return Err(format!(
                "checkpoint {k} of {wf}/{guid} was acknowledged, the TaskRun counts {}",
                tr.total_checkpoints
            ));
        }
        let got = stored
            .get(&(wf.clone(), guid.clone(), *k))
            .copied()
            .flatten();
        if got != Some(*value) {
            return Err(format!(
                "checkpoint {k} of {wf}/{guid} reads {got:?}, {value} was acknowledged"
            ));
        }
        let later_attempts = o.observed_checkpoints.range(
            (wf.clone(), guid.clone(), attempt.saturating_add(1))
                ..=(wf.clone(), guid.clone(), i32::MAX),
        );
        for ((_, _, later), observed) in later_attempts {
            if observed <= k {
                return Err(format!(
                    "attempt {later} of {wf}/{guid} was told of {observed} checkpoints, \
                     but attempt {attempt} saved number {k}"
                ));
            }
        }
    }
    Ok(())
}
