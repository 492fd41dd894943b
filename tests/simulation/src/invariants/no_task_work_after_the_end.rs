//! No task is handed out, and no attempt is retried, after its WfRun ended: a worker must not
//! execute work (charge a card, send a mail) for a workflow that can no longer use it. A claim
//! and a retry are decided by commands that check the WfRun first (`task::still_wanted`), so
//! in the final state every attempt of an ended WfRun's TaskRun started no later than the
//! WfRun's end, and every retry follows an attempt that ended no later than it. An attempt
//! already running at the end still finishes (its report or timeout is recorded).
//!
//! The check compares log timestamps in milliseconds: a claim or retry after the end within the
//! same millisecond (all commands of one log entry share one) would pass unseen.

use halter_api::littlehorse::LhStatus;
use halter_state_machine::time::ms;

use super::Observed;

pub fn check(obs: &Observed) -> Result<(), String> {
    for (wf, run) in &obs.runs {
        let Some(run) = run else { continue };
        if !matches!(
            run.status(),
            LhStatus::Completed | LhStatus::Error | LhStatus::Exception
        ) {
            continue;
        }
        let Some(end) = run.end_time.as_ref().map(ms) else {
            return Err(format!("{wf} is {:?} with no end time", run.status()));
        };
        for tr in obs.task_runs.get(wf).into_iter().flatten() {
            let guid = tr
                .id
                .as_ref()
                .map(|i| i.task_guid.as_str())
                .unwrap_or_default();
            for (n, a) in tr.attempts.iter().enumerate() {
                if let Some(start) = a.start_time.as_ref().map(ms) {
                    if start > end {
                        return Err(format!(
                            "{wf}/{guid} attempt {n} was handed out at {start} ms, after its \
                             WfRun ended at {end} ms"
                        ));
                    }
                }
                if n > 0 {
                    if let Some(queued) = a.schedule_time.as_ref().map(ms) {
                        if queued > end {
                            return Err(format!(
                                "{wf}/{guid} attempt {n} was queued at {queued} ms, after its \
                                 WfRun ended at {end} ms"
                            ));
                        }
                    }
                    let before = tr.attempts[n - 1]
                        .end_time
                        .as_ref()
                        .map(ms)
                        .unwrap_or(i64::MIN);
                    if before > end {
                        return Err(format!(
                            "{wf}/{guid} attempt {n} retries one that ended at {before} ms, after \
                             its WfRun ended at {end} ms"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}
