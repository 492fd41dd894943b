//! Timers as rows: arming, cancelling, and which timer ids belong to what.
//!
//! A timer is a row in `TIMERS` keyed (due ms, id) plus `TIMER_DUE` id -> due. Only the leader
//! fires timers, by proposing `FireTimers`; apply fires a listed timer only if its row still
//! exists and it is due at the entry's time, so stale or duplicate proposals are harmless.

use halter_api::halter::{timer, Timer};
use halter_storage::codec;
use redb::ReadableTable;

use crate::ctx::{Ctx, Effect};
use crate::error::HResult;

pub fn node_run_timer_id(wf_run_id: &str, thread: i32, position: i32) -> String {
    format!("n/{wf_run_id}/{thread}/{position}")
}

pub fn event_retention_timer_id(wf_run_id: &str, def: &str, guid: &str) -> String {
    format!("e/{wf_run_id}/{def}/{guid}")
}

pub fn wf_run_retention_timer_id(wf_run_id: &str) -> String {
    format!("w/{wf_run_id}")
}

/// Arms (or re-arms) the timer `id` to fire at `due_ms`.
pub fn arm(ctx: &mut Ctx, id: &str, due_ms: i64, kind: timer::Kind) -> HResult<()> {
    cancel(ctx, id)?;
    let t = Timer { kind: Some(kind) };
    codec::put(ctx.tables.timers.open_mut()?, (due_ms, id), &t)?;
    ctx.tables.timer_due.open_mut()?.insert(id, due_ms)?;
    ctx.effects.push(Effect::TimerArmed { due_ms });
    Ok(())
}

/// Removes the timer `id` if it exists.
pub fn cancel(ctx: &mut Ctx, id: &str) -> HResult<()> {
    let due = ctx
        .tables
        .timer_due
        .open_mut()?
        .remove(id)?
        .map(|g| g.value());
    if let Some(due) = due {
        ctx.tables.timers.open_mut()?.remove((due, id))?;
    }
    Ok(())
}

/// The timer `(due_ms, id)` if it still exists.
pub fn get(ctx: &Ctx, due_ms: i64, id: &str) -> HResult<Option<Timer>> {
    Ok(codec::get(ctx.tables.timers.open()?, (due_ms, id))?)
}

/// Every timer due at or before `now_ms`, oldest first, at most `limit`: what a leader proposes.
pub fn due<T>(timers: &T, now_ms: i64, limit: usize) -> HResult<Vec<(i64, String)>>
where
    T: ReadableTable<(i64, &'static str), &'static [u8]>,
{
    let mut out = Vec::new();
    for row in timers.range((i64::MIN, "")..)? {
        let (k, _) = row?;
        let (due, id) = k.value();
        if due > now_ms || out.len() >= limit {
            break;
        }
        out.push((due, id.to_string()));
    }
    Ok(out)
}
