//! Schedules start one run per time, only while they exist. Clients create and delete the
//! schedules `sched-K` (`* * * * *`, spec `sim-tick`) on random nodes through the faults; the
//! leader fires them by proposing timers, and every firing's run is named `sched-K-<due ms>`.
//! After healing, the `sim-tick` runs must show:
//!
//! - **Only times the cron names**: each run's id is a known schedule and a whole minute, its
//!   `start_time` is not before that minute, and it completed (it ends as it starts).
//! - **Not before the schedule existed**: a run's time is after the first ScheduleWf of its
//!   schedule was sent (the first time is the first minute after the entry's time).
//! - **Not after it was deleted**: once a DeleteScheduledWfRun was acknowledged, no time after
//!   that acknowledgement starts a run, unless a ScheduleWf of that id might have been applied
//!   after the delete (one sent after it, or one whose answer never came). Entry times never go
//!   back in log order, so a firing for a later time is applied after the delete and finds the
//!   schedule gone.
//! - **Every time while it exists**: for a schedule created (acknowledged) and never deleted,
//!   every minute between the acknowledgement and 15 s before the check has its run. Outages
//!   in the simulation last seconds, far less than the minute after which missed times collapse.

use std::collections::BTreeMap;

use halter_api::littlehorse::*;

use super::retry;
use crate::cluster::ClusterView;
use crate::oracle::{wall_ms, Oracle};
use crate::scenario::TICK;
use crate::workload::{schedule_name, SCHEDULE_POOL};

const MINUTE_MS: i64 = 60_000;

/// The `sim-tick` runs read back (node 0), and when they were read.
pub struct Ticks {
    pub runs: Vec<WfRun>,
    pub read_at_ms: i64,
}

pub async fn observe(c: &ClusterView) -> Result<Ticks, String> {
    let read_at_ms = wall_ms();
    let ids = retry(|| {
        let mut lh = c.lh(0);
        async move {
            lh.search_wf_run(SearchWfRunRequest {
                wf_spec_name: TICK.into(),
                limit: Some(1000),
                ..Default::default()
            })
            .await
        }
    })
    .await
    .map_err(|e| format!("searching {TICK} runs: {e}"))?
    .into_inner()
    .results;
    let mut runs = Vec::new();
    for id in ids {
        let run = retry(|| {
            let mut lh = c.lh(0);
            let id = id.clone();
            async move { lh.get_wf_run(id).await }
        })
        .await
        .map_err(|e| format!("reading {}: {e}", id.id))?;
        runs.push(run.into_inner());
    }
    Ok(Ticks { runs, read_at_ms })
}

/// `sched-K-<due>` -> (`sched-K`, due).
fn parse(id: &str) -> Option<(String, i64)> {
    let (sched, due) = id.rsplit_once('-')?;
    Some((sched.to_string(), due.parse().ok()?))
}

pub fn check(o: &Oracle, ticks: &Ticks) -> Result<(), String> {
    let known: Vec<String> = (0..SCHEDULE_POOL).map(schedule_name).collect();
    let mut started: BTreeMap<(String, i64), &WfRun> = BTreeMap::new();
    let no_calls = Vec::new();
    for run in &ticks.runs {
        let id = run.id.as_ref().map(|i| i.id.as_str()).unwrap_or_default();
        let Some((sched, due)) = parse(id).filter(|(s, _)| known.contains(s)) else {
            return Err(format!(
                "{TICK} run {id} is not named for a schedule's time"
            ));
        };
        if due % MINUTE_MS != 0 {
            return Err(format!("{id}: {due} is not a whole minute"));
        }
        let start = run
            .start_time
            .as_ref()
            .map_or(0, halter_state_machine::time::ms);
        if start < due {
            return Err(format!("{id} started at {start}, before its time {due}"));
        }
        if run.status() != LhStatus::Completed {
            return Err(format!("{id} is {:?}, not COMPLETED", run.status()));
        }
        let creates = o.schedule_creates.get(&sched).unwrap_or(&no_calls);
        let first_sent = creates.iter().map(|c| c.sent_ms).min();
        if first_sent.is_none_or(|s| due <= s) {
            return Err(format!(
                "{id}: a run for {due}, but the first ScheduleWf of {sched} was sent at {first_sent:?}"
            ));
        }
        for d in o.schedule_deletes.get(&sched).unwrap_or(&no_calls) {
            let Some(acked) = d.answered_ms.filter(|_| d.acked) else {
                continue;
            };
            let recreated = creates
                .iter()
                .any(|c| c.answered_ms.is_none_or(|a| a >= d.sent_ms));
            if acked < due && !recreated {
                return Err(format!(
                    "{id}: a run for {due}, after the delete of {sched} was acknowledged at {acked}"
                ));
            }
        }
        started.insert((sched, due), run);
    }
    for sched in &known {
        if o.schedule_deletes.contains_key(sched) {
            continue;
        }
        let Some(created) = o
            .schedule_creates
            .get(sched)
            .into_iter()
            .flatten()
            .filter(|c| c.acked)
            .filter_map(|c| c.answered_ms)
            .min()
        else {
            continue;
        };
        let mut due = (created / MINUTE_MS + 1) * MINUTE_MS;
        while due <= ticks.read_at_ms - 15_000 {
            if !started.contains_key(&(sched.clone(), due)) {
                return Err(format!(
                    "{sched} was created at {created} and never deleted, but started no run for {due}"
                ));
            }
            due += MINUTE_MS;
        }
    }
    Ok(())
}
