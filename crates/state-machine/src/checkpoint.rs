//! Checkpoints: values a running task attempt saves part-way, so that when the attempt fails or
//! times out, the next attempt of the same TaskRun starts from them instead of redoing the work
//! (LittleHorse's `PutCheckpoint`, used by its workers' `execute_and_checkpoint`).
//!
//! A Checkpoint is numbered from 0 within its TaskRun, in the order they commit; the TaskRun's
//! `total_checkpoints` is the next number, and every claimed attempt is told it as
//! `total_observed_checkpoints`, so the worker knows how many to read back. Only the TaskRun's
//! latest attempt, while it runs, may save one: a worker whose attempt timed out (a zombie) is
//! told to stop and nothing is written. Saving one restarts the attempt's timeout, so a long
//! task that makes progress is not timed out between checkpoints.

use halter_api::littlehorse::{
    put_checkpoint_response::FlowControlContinue, Checkpoint, CheckpointId, PutCheckpointRequest,
    PutCheckpointResponse, TaskStatus,
};
use halter_storage::codec;

use crate::ctx::Ctx;
use crate::error::{invalid, HResult, Rejection};
use crate::task::{arm_timeout, checked_run_key, get_run, save_run};
use crate::time::ts;

/// PutCheckpoint. An unknown TaskRun is INVALID_ARGUMENT (LittleHorse's documented answer); a
/// stale or finished attempt gets `STOP_TASK` and changes nothing.
pub fn put(ctx: &mut Ctx, req: &PutCheckpointRequest) -> HResult<PutCheckpointResponse> {
    let id = req
        .task_run_id
        .as_ref()
        .ok_or_else(|| invalid("missing task_run_id"))?;
    let (wf, guid) = checked_run_key(id)?;
    let mut tr =
        get_run(ctx, id)?.ok_or_else(|| invalid(format!("TaskRun {wf}/{guid} not found")))?;
    let latest = tr.attempts.len() as i64 - 1;
    let running = tr
        .attempts
        .last()
        .is_some_and(|a| a.status == TaskStatus::TaskRunning as i32);
    if i64::from(req.task_attempt) != latest || !running {
        return Ok(PutCheckpointResponse {
            flow_control_continue_type: FlowControlContinue::StopTask as i32,
            created_checkpoint: None,
        });
    }
    let number = tr.total_checkpoints.max(0);
    let checkpoint = Checkpoint {
        id: Some(CheckpointId {
            task_run: Some(id.clone()),
            checkpoint_number: number,
        }),
        value: req.value.clone(),
        logs: req.logs.clone(),
        created_at: Some(ts(ctx.now_ms)),
    };
    codec::put(
        ctx.tables.checkpoints.open_mut()?,
        (wf.as_str(), guid, number as u32),
        &checkpoint,
    )?;
    tr.total_checkpoints = number.saturating_add(1);
    arm_timeout(ctx, &wf, &tr, latest as i32)?;
    save_run(ctx, &tr)?;
    Ok(PutCheckpointResponse {
        flow_control_continue_type: FlowControlContinue::ContinueTask as i32,
        created_checkpoint: Some(checkpoint),
    })
}

/// Removes the checkpoints of one TaskRun (its WfRun is being deleted).
pub fn delete_of(ctx: &mut Ctx, wf: &str, guid: &str, total: i32) -> HResult<()> {
    let table = ctx.tables.checkpoints.open_mut()?;
    for n in 0..total.max(0) as u32 {
        table.remove((wf, guid, n))?;
    }
    Ok(())
}

/// The storage key of a checkpoint id, checked.
pub fn key(id: &CheckpointId) -> Result<(String, &str, u32), Rejection> {
    let run = id
        .task_run
        .as_ref()
        .ok_or_else(|| invalid("missing task_run"))?;
    let (wf, guid) = checked_run_key(run)?;
    let n = u32::try_from(id.checkpoint_number)
        .map_err(|_| invalid("checkpoint_number must not be negative"))?;
    Ok((wf, guid, n))
}
