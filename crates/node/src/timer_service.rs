//! The leader's timer service. Timers are rows in the replicated timer table; only the leader
//! fires them, by proposing `FireTimers` for the due ones, and apply ignores a timer already
//! gone. There is no separate schedule to lose: a new leader reads the table it already has.
//!
//! The loop sleeps until the earliest timer's due time, or until apply reports a newly armed
//! timer, or until leadership changes; it proposes all due timers in one batch and waits for
//! that proposal before planning again, so it never floods the log with duplicates.

use std::sync::Arc;
use std::time::Duration;

use halter_api::halter::{command::Kind, FireTimers, TimerKey};
use halter_state_machine::timers;
use halter_storage::ReadTables;
use redb::ReadableTable;
use tokio::sync::watch;

use crate::proposer::{wall_clock_ms, NodeCtx};

/// Most timers fired by one command.
const BATCH: usize = 1024;
/// Longest sleep without re-checking (covers a clock jump).
const MAX_IDLE: Duration = Duration::from_secs(1);

fn plan(ctx: &NodeCtx, now: i64) -> anyhow::Result<(Vec<TimerKey>, Option<i64>)> {
    let txn = ctx.sm.store.begin_read()?;
    let t = ReadTables::open(&txn)?;
    let due = timers::due(&t.timers, now, BATCH).map_err(|e| anyhow::anyhow!("{e}"))?;
    let next = t.timers.first()?.map(|(k, _)| k.value().0);
    Ok((
        due.into_iter()
            .map(|(due_ms, id)| TimerKey { due_ms, id })
            .collect(),
        next,
    ))
}

pub async fn run(ctx: Arc<NodeCtx>, mut shutdown: watch::Receiver<bool>) {
    let mut metrics = ctx.raft.metrics();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let leading = metrics.borrow().current_leader == Some(ctx.id)
            && metrics.borrow().state == openraft::ServerState::Leader;
        if !leading {
            tokio::select! {
                _ = metrics.changed() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let now = wall_clock_ms();
        let (due, next) = match plan(&ctx, now) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "timer service cannot read timers");
                tokio::time::sleep(MAX_IDLE).await;
                continue;
            }
        };
        if !due.is_empty() {
            let n = due.len();
            let started = std::time::Instant::now();
            match ctx
                .propose(Kind::FireTimers(FireTimers { timers: due }))
                .await
            {
                Ok(_) => tracing::debug!(timers = n, elapsed = ?started.elapsed(), "fired timers"),
                Err(s) => {
                    tracing::warn!(status = %s, "firing timers failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            continue;
        }
        let wait = next
            .map(|due| Duration::from_millis((due - now).max(0) as u64))
            .unwrap_or(MAX_IDLE)
            .min(MAX_IDLE);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.sm.timers_changed.notified() => {}
            _ = metrics.changed() => {}
            _ = shutdown.changed() => {}
        }
    }
}
