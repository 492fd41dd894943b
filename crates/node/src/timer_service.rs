//! The leader's timer service. Timers are rows in the replicated timer table; only the leader
//! fires them, by proposing `FireTimers` for the due ones, and apply ignores a timer already
//! gone. There is no separate schedule to lose: a new leader reads the table it already has.
//!
//! The loop sleeps until the earliest timer's due time, or until apply reports a newly armed
//! timer, or until leadership changes. It proposes the due timers in batches and does not wait
//! for one batch to be applied before proposing the next (under load a commit takes tens of
//! milliseconds, and a timer that came due meanwhile would be late by that much): up to
//! [`IN_FLIGHT`] batches are in flight, and a timer already in one is not proposed again until
//! its batch has an outcome, so the log is not flooded with duplicates.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use halter_api::halter::{command::Kind, FireTimers, TimerKey};
use halter_state_machine::timers;
use halter_storage::tables::TIMERS;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::proposer::{wall_clock_ms, NodeCtx};

/// Most timers fired by one command.
const BATCH: usize = 1024;
/// Most `FireTimers` proposals awaiting their outcome at once.
const IN_FLIGHT: usize = 4;
/// Longest sleep without re-checking (covers a clock jump).
const MAX_IDLE: Duration = Duration::from_secs(1);

type Key = (i64, String);

/// The due timers not already proposed (at most [`BATCH`]), and the due time of the first
/// timer after them.
fn plan(
    ctx: &NodeCtx,
    now: i64,
    proposed: &BTreeSet<Key>,
) -> anyhow::Result<(Vec<TimerKey>, Option<i64>)> {
    let txn = ctx.sm.store.begin_read()?;
    // Only the timer table: opening every state table costs more than this read.
    let timers_table = txn.open_table(TIMERS)?;
    // The proposed timers are among the first ones, so this reads at most `proposed.len()`
    // rows more than it returns.
    let limit = BATCH + proposed.len();
    let mut due = Vec::new();
    let mut next = None;
    for (due_ms, id) in
        timers::due(&timers_table, now, limit).map_err(|e| anyhow::anyhow!("{e}"))?
    {
        if due.len() >= BATCH {
            next = Some(due_ms);
            break;
        }
        let key = (due_ms, id);
        if !proposed.contains(&key) {
            due.push(TimerKey {
                due_ms: key.0,
                id: key.1,
            });
        }
    }
    if next.is_none() && due.len() < BATCH {
        // The first timer not yet due (or due but beyond `limit`: re-planned at once).
        next = timers_table
            .range((now.saturating_add(1), "")..)?
            .next()
            .transpose()?
            .map(|(k, _)| k.value().0);
    }
    Ok((due, next))
}

pub async fn run(ctx: Arc<NodeCtx>, mut shutdown: watch::Receiver<bool>) {
    // Server metrics change with leadership, not with every appended or applied entry (the
    // full metrics would wake this loop, and re-plan, once per entry).
    let mut metrics = ctx.raft.server_metrics();
    // Proposals awaiting their outcome; each sends back the timers it carried when done.
    let mut in_flight: Vec<JoinHandle<()>> = Vec::new();
    let mut pending = 0usize;
    let mut proposed: BTreeSet<Key> = BTreeSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Vec<Key>>();
    loop {
        if *shutdown.borrow() {
            in_flight.iter().for_each(JoinHandle::abort);
            return;
        }
        while let Ok(keys) = done_rx.try_recv() {
            pending = pending.saturating_sub(1);
            keys.iter().for_each(|k| {
                proposed.remove(k);
            });
        }
        in_flight.retain(|h| !h.is_finished());
        let leading = metrics.borrow().current_leader == Some(ctx.id)
            && metrics.borrow().state == openraft::ServerState::Leader;
        if !leading {
            // Outcomes of proposals made while leading no longer matter: a new leader plans
            // from the replicated table.
            in_flight.drain(..).for_each(|h| h.abort());
            pending = 0;
            proposed.clear();
            while done_rx.try_recv().is_ok() {}
            tokio::select! {
                _ = metrics.changed() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let now = wall_clock_ms();
        let (due, next) = match plan(&ctx, now, &proposed) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "timer service cannot read timers");
                tokio::time::sleep(MAX_IDLE).await;
                continue;
            }
        };
        if !due.is_empty() && pending < IN_FLIGHT {
            pending += 1;
            let keys: Vec<Key> = due.iter().map(|t| (t.due_ms, t.id.clone())).collect();
            proposed.extend(keys.iter().cloned());
            let ctx = ctx.clone();
            let done = done_tx.clone();
            in_flight.push(tokio::spawn(async move {
                let n = keys.len();
                let started = std::time::Instant::now();
                match ctx
                    .propose(Kind::FireTimers(FireTimers { timers: due }))
                    .await
                {
                    Ok(_) => {
                        tracing::debug!(timers = n, elapsed = ?started.elapsed(), "fired timers")
                    }
                    Err(s) => {
                        // They stay in the table; the next plan proposes them again.
                        tracing::warn!(status = %s, "firing timers failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                let _ = done.send(keys);
            }));
            continue;
        }
        let wait = if due.is_empty() {
            next.map(|due| Duration::from_millis((due - now).max(0) as u64))
                .unwrap_or(MAX_IDLE)
                .min(MAX_IDLE)
        } else {
            // Due timers, but every slot is taken: the next outcome frees one.
            MAX_IDLE
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Some(keys) = done_rx.recv() => {
                pending = pending.saturating_sub(1);
                keys.iter().for_each(|k| {
                    proposed.remove(k);
                });
            }
            _ = ctx.sm.timers_changed.notified() => {}
            _ = metrics.changed() => {}
            _ = shutdown.changed() => {}
        }
    }
}
