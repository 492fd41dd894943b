//! A rescue consumes a failure: RescueThreadRun applies only to a thread in ERROR whose current
//! NodeRun failed, and moves the thread to a new NodeRun. So a WfRun whose entrypoint was
//! rescued n times (acknowledged) has at least n failed NodeRuns in thread 0 that the thread has
//! left behind, and a rescue retried after a lost answer, or re-applied after a failover, cannot
//! rescue twice from one failure.

use halter_api::littlehorse::LhStatus;

use super::Observed;
use crate::oracle::Oracle;

pub fn check(o: &Oracle, obs: &Observed) -> Result<(), String> {
    for (wf, acked) in &o.rescues_acked {
        let Some(Some(run)) = obs.runs.get(wf) else {
            return Err(format!(
                "{wf}: a rescue was acknowledged but the WfRun is gone"
            ));
        };
        let current = run
            .thread_runs
            .iter()
            .find(|t| t.number == 0)
            .map_or(-1, |t| t.current_node_position);
        let left_failed = obs
            .node_runs
            .get(wf)
            .into_iter()
            .flatten()
            .filter(|n| n.id.as_ref().is_some_and(|i| i.thread_run_number == 0))
            .filter(|n| n.id.as_ref().is_some_and(|i| i.position < current))
            .filter(|n| matches!(n.status(), LhStatus::Error | LhStatus::Exception))
            .count();
        if left_failed < *acked {
            return Err(format!(
                "{wf}: {acked} rescues acknowledged but thread 0 left only {left_failed} failed NodeRuns behind"
            ));
        }
    }
    Ok(())
}
