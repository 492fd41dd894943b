//! Every task attempt is handed to at most one worker (checked as workers receive them), and
//! the replicated TaskRuns agree with what workers saw: a claim is one committed command that
//! takes the attempt out of the queue, so no failover or lost answer can hand it out twice.
//! In the final state no TaskRun has more attempts than allowed, only its last attempt may still
//! be open, every attempt a worker was handed exists and names that worker, and a successful
//! TaskRun's output is what the worker computed from its input (n -> 10 n), and its NodeRun
//! completed, unless that NodeRun had already failed because an interrupt handler of its
//! thread failed (the TaskRun still finishes, as in LittleHorse).

use halter_api::littlehorse::{node_run::NodeType, task_attempt, variable_value::Value, *};

use super::Observed;
use crate::oracle::Oracle;

pub fn check(o: &Oracle, obs: &Observed) -> Result<(), String> {
    for (wf, runs) in &obs.task_runs {
        for tr in runs {
            let guid = tr
                .id
                .as_ref()
                .map(|i| i.task_guid.clone())
                .unwrap_or_default();
            let at = format!("TaskRun {wf}/{guid}");
            if tr.attempts.len() as i32 > tr.total_attempts {
                return Err(format!(
                    "{at}: {} attempts of {} allowed",
                    tr.attempts.len(),
                    tr.total_attempts
                ));
            }
            let open = |a: &TaskAttempt| {
                matches!(
                    a.status(),
                    TaskStatus::TaskScheduled | TaskStatus::TaskRunning | TaskStatus::TaskPending
                )
            };
            if let Some(n) = tr.attempts.iter().rev().skip(1).position(open) {
                return Err(format!(
                    "{at}: an earlier attempt ({n} from the end) is still open"
                ));
            }
            if tr.status() == TaskStatus::TaskSuccess {
                let input = match tr.input_variables.first().and_then(|v| v.value.clone()) {
                    Some(VariableValue {
                        value: Some(Value::Int(n)),
                    }) => n,
                    other => return Err(format!("{at}: input {other:?}")),
                };
                let out = tr.attempts.last().and_then(|a| match &a.result {
                    Some(task_attempt::Result::Output(v)) => Some(v.clone()),
                    _ => None,
                });
                let want = Some(VariableValue {
                    value: Some(Value::Int(input * 10)),
                });
                if out != want {
                    return Err(format!(
                        "{at}: output {out:?}, the worker computed {want:?}"
                    ));
                }
                let node = obs.node_runs.get(wf).and_then(|nrs| {
                    nrs.iter().find(|nr| {
                        matches!(&nr.node_type, Some(NodeType::Task(t)) if t.task_run_id == tr.id)
                    })
                });
                match node {
                    Some(nr) if nr.status() == LhStatus::Completed => {}
                    Some(nr)
                        if !nr.failures.is_empty()
                            && nr
                                .failures
                                .iter()
                                .all(|f| f.message.starts_with("Interrupt thread with id")) => {}
                    other => {
                        return Err(format!(
                            "{at} succeeded but its NodeRun is {:?} with {:?}",
                            other.map(|n| n.status()),
                            other.map(|n| &n.failures)
                        ))
                    }
                }
            }
        }
    }
    for ((wf, guid, attempt), worker) in &o.handed {
        let tr = obs.task_run(wf, guid).ok_or_else(|| {
            format!("worker {worker} was handed {wf}/{guid}, which does not exist")
        })?;
        let a = tr.attempts.get(*attempt as usize).ok_or_else(|| {
            format!(
                "worker {worker} was handed {wf}/{guid} attempt {attempt}, which does not exist"
            )
        })?;
        if a.task_worker_id != format!("w{worker}") {
            return Err(format!(
                "{wf}/{guid} attempt {attempt} was handed to w{worker} but records '{}'",
                a.task_worker_id
            ));
        }
    }
    Ok(())
}
