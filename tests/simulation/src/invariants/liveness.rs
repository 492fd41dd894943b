//! After the faults heal, everything that can progress has: every started WfRun waits on
//! timeouts of a few seconds, and the liveness window is longer than both together, so each
//! must have completed or timed out. A timer lost in a failover would leave a run RUNNING.

use halter_api::littlehorse::LhStatus;

use super::Observed;
use crate::oracle::Oracle;

pub fn check(o: &Oracle, obs: &Observed) -> Result<(), String> {
    for wf in &o.runs {
        match obs.runs.get(wf) {
            Some(Some(run)) => match run.status() {
                LhStatus::Completed | LhStatus::Error => {}
                other => {
                    let waiting: Vec<String> = obs
                        .node_runs
                        .get(wf)
                        .into_iter()
                        .flatten()
                        .filter(|n| n.status() == LhStatus::Running)
                        .map(|n| n.node_name.clone())
                        .collect();
                    return Err(format!(
                        "WfRun {wf} is still {other:?} after the liveness window (NodeRuns \
                         running: {waiting:?})"
                    ));
                }
            },
            _ => return Err(format!("WfRun {wf} was acknowledged but is missing")),
        }
    }
    Ok(())
}
