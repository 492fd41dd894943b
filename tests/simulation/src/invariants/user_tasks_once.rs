//! A user task is settled once, the way it was acknowledged, and its NodeRun agrees:
//!
//! - a WfRun has at most its one review, at the child's USER_TASK NodeRun;
//! - DONE and CANCELLED exclude each other: an acknowledged complete and an acknowledged cancel
//!   of the same review cannot both have happened (each refuses the other's outcome);
//! - a DONE review holds the user and result of a complete that was sent (the one that applied
//!   first; a later complete answers OK and changes nothing);
//! - an acknowledged cancel leaves it CANCELLED; an acknowledged complete leaves it DONE;
//! - the audit trail ends with exactly one `completed` or `cancelled` event when settled, and
//!   the epoch counts the `assigned` events;
//! - a DONE review's NodeRun COMPLETED with the results as its output, a CANCELLED one's failed
//!   with USER_TASK_CANCELLED; an open review belongs to a WfRun that has ended (its trigger
//!   acts only while the WfRun runs), never to one still running after the liveness window.
//!
//! Commands go through Raft and apply checks status first, so a lost leader, a retried forward
//! or a trigger firing while a person completes cannot settle a review twice.

use halter_api::littlehorse::{
    node_run::NodeType, user_task_event::Event, variable_value::Value, LhStatus, UserTaskRunStatus,
};

use super::Observed;
use crate::oracle::Oracle;
use crate::scenario::REVIEW_GUID;

pub fn check(o: &Oracle, obs: &Observed) -> Result<(), String> {
    for (wf, runs) in &obs.user_task_runs {
        let completes = o.reviews_completed.get(wf).map_or(&[][..], Vec::as_slice);
        let cancelled = o.reviews_cancelled.contains(wf);
        if runs.len() > 1 {
            return Err(format!("{wf} has {} UserTaskRuns, at most 1", runs.len()));
        }
        let Some(r) = runs.first() else {
            if !completes.is_empty() || cancelled {
                return Err(format!("{wf}: a review was acknowledged but none exists"));
            }
            continue;
        };
        let guid = r.id.as_ref().map_or("", |i| i.user_task_guid.as_str());
        if guid != REVIEW_GUID {
            return Err(format!("{wf}: UserTaskRun {guid}, expected {REVIEW_GUID}"));
        }
        if !completes.is_empty() && cancelled {
            return Err(format!(
                "{wf}: both a complete and a cancel were acknowledged"
            ));
        }
        let settled: Vec<&Event> = r
            .events
            .iter()
            .filter_map(|e| e.event.as_ref())
            .filter(|e| matches!(e, Event::Completed(_) | Event::Cancelled(_)))
            .collect();
        let assigned = r
            .events
            .iter()
            .filter(|e| matches!(e.event, Some(Event::Assigned(_))))
            .count();
        if r.epoch as usize != assigned {
            return Err(format!(
                "{wf}: epoch {} but {assigned} assignments",
                r.epoch
            ));
        }
        let nr = obs
            .node_runs
            .get(wf)
            .and_then(|nrs| {
                nrs.iter().find(|n| {
                    matches!(&n.node_type, Some(NodeType::UserTask(u))
                        if u.user_task_run_id.as_ref() == r.id.as_ref())
                })
            })
            .ok_or_else(|| format!("{wf}: no NodeRun for its UserTaskRun"))?;
        let wf_status = obs
            .runs
            .get(wf)
            .and_then(|r| r.as_ref())
            .map(|r| r.status());
        match r.status() {
            UserTaskRunStatus::Done => {
                if cancelled {
                    return Err(format!("{wf}: DONE but a cancel was acknowledged"));
                }
                if settled.len() != 1
                    || !matches!(
                        r.events.last().and_then(|e| e.event.as_ref()),
                        Some(Event::Completed(_))
                    )
                {
                    return Err(format!("{wf}: DONE with settling events {settled:?}"));
                }
                let ok = match r.results.get("ok").and_then(|v| v.value.as_ref()) {
                    Some(Value::Bool(b)) => *b,
                    other => return Err(format!("{wf}: DONE with result ok={other:?}")),
                };
                let user = r.user_id.clone().unwrap_or_default();
                // The complete that applied may be one whose answer was lost (every later one
                // then found it DONE and answered OK without a change), so the stored result
                // is checked against what was sent, not only what was acknowledged.
                if !o
                    .reviews_sent
                    .get(wf)
                    .is_some_and(|sent| sent.contains(&(user.clone(), ok)))
                {
                    return Err(format!(
                        "{wf}: DONE by {user} with ok={ok}, which nobody sent"
                    ));
                }
                if nr.status() != LhStatus::Completed {
                    return Err(format!(
                        "{wf}: review DONE but its NodeRun is {:?}",
                        nr.status()
                    ));
                }
            }
            UserTaskRunStatus::Cancelled => {
                if !completes.is_empty() {
                    return Err(format!("{wf}: CANCELLED but a complete was acknowledged"));
                }
                if settled.len() != 1
                    || !matches!(
                        r.events.last().and_then(|e| e.event.as_ref()),
                        Some(Event::Cancelled(_))
                    )
                {
                    return Err(format!("{wf}: CANCELLED with settling events {settled:?}"));
                }
                let cancelled_node = nr.status() == LhStatus::Error
                    && nr
                        .failures
                        .iter()
                        .any(|f| f.failure_name == "USER_TASK_CANCELLED");
                if !cancelled_node {
                    return Err(format!(
                        "{wf}: review CANCELLED but its NodeRun is {:?}",
                        nr.status()
                    ));
                }
            }
            open => {
                if !completes.is_empty() || cancelled {
                    return Err(format!(
                        "{wf}: review {open:?} although a complete or cancel was acknowledged"
                    ));
                }
                if !settled.is_empty() || nr.status() == LhStatus::Completed {
                    return Err(format!("{wf}: open review with a settled trail or NodeRun"));
                }
                if !matches!(wf_status, Some(LhStatus::Completed | LhStatus::Error)) {
                    return Err(format!(
                        "{wf}: review still {open:?} in a WfRun that is {wf_status:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}
