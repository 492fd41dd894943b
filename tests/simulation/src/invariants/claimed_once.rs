//! No event is claimed twice: every claim is one committed command that takes the event out of
//! the unclaimed index, so two NodeRuns can never name the same event, and an event named by a
//! NodeRun is marked claimed on every replica. An interrupt consumes its event the same way:
//! a claimed event is named by exactly one NodeRun or one interrupt thread, never both.

use std::collections::BTreeMap;

use halter_api::littlehorse::node_run::NodeType;

use super::Observed;

pub fn check(obs: &Observed) -> Result<(), String> {
    let mut claims: BTreeMap<(String, String), String> = BTreeMap::new();
    for (wf, nrs) in &obs.node_runs {
        for nr in nrs {
            let Some(NodeType::ExternalEvent(ee)) = &nr.node_type else {
                continue;
            };
            let Some(id) = &ee.external_event_id else {
                continue;
            };
            let key = (wf.clone(), id.guid.clone());
            let at = format!(
                "{}@{}",
                nr.node_name,
                nr.id.as_ref().map(|i| i.position).unwrap_or_default()
            );
            if let Some(prev) = claims.insert(key.clone(), at.clone()) {
                return Err(format!("event {wf}/{} claimed by {prev} and {at}", key.1));
            }
        }
    }
    for (wf, run) in &obs.runs {
        let Some(run) = run else { continue };
        for t in &run.thread_runs {
            let Some(id) = &t.interrupt_trigger_id else {
                continue;
            };
            let key = (wf.clone(), id.guid.clone());
            let at = format!("interrupt thread {}", t.number);
            if let Some(prev) = claims.insert(key.clone(), at.clone()) {
                return Err(format!("event {wf}/{} claimed by {prev} and {at}", key.1));
            }
        }
    }
    for ((node, wf), events) in &obs.events {
        for e in events {
            let guid = e.id.as_ref().map(|i| i.guid.clone()).unwrap_or_default();
            let by_node_run = claims.contains_key(&(wf.clone(), guid.clone()));
            if e.claimed != by_node_run {
                return Err(format!(
                    "event {wf}/{guid} on node {node}: claimed={} but NodeRuns and interrupts say {by_node_run}",
                    e.claimed
                ));
            }
        }
    }
    Ok(())
}
