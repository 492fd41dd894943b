//! No NodeRun both timed out and completed, and every timer fires at most once: a timeout is a
//! replicated command that only acts on a NodeRun still waiting, and the firing removes the
//! timer, so a NodeRun carries at most one failure of its own (a failing interrupt handler adds
//! its failure to the interrupted thread's NodeRun, as in LittleHorse; those are not counted).

use halter_api::littlehorse::{node_run::NodeType, LhStatus};

use super::Observed;

pub fn check(obs: &Observed) -> Result<(), String> {
    for (wf, nrs) in &obs.node_runs {
        for nr in nrs {
            let Some(NodeType::ExternalEvent(ee)) = &nr.node_type else {
                continue;
            };
            let completed = nr.status() == LhStatus::Completed;
            if ee.timed_out && (completed || ee.external_event_id.is_some()) {
                return Err(format!("{wf}/{}: timed out and completed", nr.node_name));
            }
            if completed && ee.external_event_id.is_none() {
                return Err(format!("{wf}/{}: completed without an event", nr.node_name));
            }
            let own = nr
                .failures
                .iter()
                .filter(|f| !f.message.starts_with("Interrupt thread with id"))
                .count();
            if own > 1 {
                return Err(format!(
                    "{wf}/{}: {own} failures (a timer fired twice?)",
                    nr.node_name
                ));
            }
        }
    }
    Ok(())
}
