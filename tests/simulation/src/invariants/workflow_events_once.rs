//! WorkflowEvents are thrown once per THROW_EVENT NodeRun, and `AwaitWorkflowEvent` returns
//! only what stays thrown.
//!
//! Every WfRun that passed its THROW_EVENT node (the NodeRun is COMPLETED) holds exactly one
//! `seen` event, number 0, carrying the run's `order` (its id), thrown by that NodeRun; a run
//! that did not pass it holds none. Every event an `AwaitWorkflowEvent` call returned, on
//! whichever node held it, is in the final state unchanged: a held call answers only from
//! applied (so committed) state, and a throw re-applied after a crash or a snapshot must not
//! renumber, repeat or lose it.

use halter_api::littlehorse::*;
use halter_api::values;

use super::Observed;
use crate::oracle::Oracle;
use crate::scenario::{SEEN, THROW_NODE};

pub fn check(o: &Oracle, obs: &Observed) -> Result<(), String> {
    for (wf, run) in &obs.runs {
        let events = obs.workflow_events.get(wf).cloned().unwrap_or_default();
        if run.is_none() {
            if !events.is_empty() {
                return Err(format!("WfRun {wf} does not exist but has {events:?}"));
            }
            continue;
        }
        let thrower = obs.node_runs.get(wf).and_then(|nrs| {
            nrs.iter()
                .find(|n| n.node_name == THROW_NODE && n.status() == LhStatus::Completed)
        });
        match thrower {
            None if !events.is_empty() => {
                return Err(format!(
                    "WfRun {wf} did not pass {THROW_NODE} but holds {events:?}"
                ))
            }
            None => {}
            Some(nr) => {
                let [ev] = events.as_slice() else {
                    return Err(format!(
                        "WfRun {wf} passed {THROW_NODE} once and holds {} events: {events:?}",
                        events.len()
                    ));
                };
                let id = ev.id.clone().unwrap_or_default();
                let def = id.workflow_event_def_id.map(|d| d.name).unwrap_or_default();
                if def != SEEN || id.number != 0 {
                    return Err(format!("WfRun {wf} threw {def}#{}", id.number));
                }
                if ev.content != Some(values::str(wf.clone())) {
                    return Err(format!("WfRun {wf}'s event carries {:?}", ev.content));
                }
                if ev.node_run_id != nr.id {
                    return Err(format!(
                        "WfRun {wf}'s event names NodeRun {:?}, thrown by {:?}",
                        ev.node_run_id, nr.id
                    ));
                }
            }
        }
    }
    for (wf, got) in &o.awaited {
        let held = obs.workflow_events.get(wf).cloned().unwrap_or_default();
        for ev in got {
            if !held.contains(ev) {
                return Err(format!(
                    "AwaitWorkflowEvent returned {ev:?} for {wf}, which finally holds {held:?}"
                ));
            }
        }
    }
    Ok(())
}
