//! ScheduleWf and DeleteScheduledWfRun: WfRuns started on a cron schedule.
//!
//! A ScheduledWfRun is a row and one timer, `s/{id}`, at its next time. When the leader fires
//! it, apply starts the WfRun `{id}-{due ms}` as RunWf would and arms the time after. The run's
//! id is derived from the schedule and the time it stands for, so one time can never start two
//! WfRuns, whoever proposes the firing and however often.
//!
//! **Missed times collapse.** If the cluster could not fire for a while (no leader, all nodes
//! down), the late firing starts one WfRun, for the time it was armed for, and the next time
//! armed is the first one after the entry's time: no burst of catch-up runs.
//!
//! **A time whose run cannot start is skipped, not the schedule.** The WfSpec may have been
//! deleted, or a new version may refuse the stored variables; that time starts nothing and the
//! next one is armed, so the schedule works again once the WfSpec does.

use halter_api::cron::Cron;
use halter_api::halter::{timer, StoredSchedule};
use halter_api::limits::MAX_NAME_LEN;
use halter_api::littlehorse::{
    DeleteScheduledWfRunRequest, RunWfRequest, ScheduleWfRequest, ScheduledWfRun, ScheduledWfRunId,
};
use halter_api::names::check_name;
use halter_storage::codec;

use crate::ctx::Ctx;
use crate::error::{invalid, HResult, Outcome, Rejection};
use crate::time::ts;
use crate::{timers, wf_run};

/// Digits of a due time in milliseconds (13 until the year 2286), and the `-` before them.
const RUN_ID_SUFFIX_LEN: usize = 14;

pub fn timer_id(id: &str) -> String {
    format!("s/{id}")
}

/// The id of the WfRun a schedule starts for its time `due_ms`.
pub fn run_id(id: &str, due_ms: i64) -> String {
    format!("{id}-{due_ms}")
}

fn run_request(req: &ScheduleWfRequest, id: Option<String>) -> RunWfRequest {
    RunWfRequest {
        wf_spec_name: req.wf_spec_name.clone(),
        major_version: req.major_version,
        revision: req.revision,
        variables: req.variables.clone(),
        id,
        parent_wf_run_id: req.parent_wf_run_id.clone(),
    }
}

pub fn schedule(ctx: &mut Ctx, req: &ScheduleWfRequest) -> HResult<ScheduledWfRun> {
    // The receiving node generates a missing id before proposing, so the log always has one.
    let id = req
        .id
        .as_deref()
        .ok_or_else(|| invalid("missing id (the server fills it in before proposing)"))?;
    check_name("ScheduledWfRun id", id)?;
    if id.len() + RUN_ID_SUFFIX_LEN > MAX_NAME_LEN {
        return Err(invalid(format!(
            "ScheduledWfRun id is longer than {} characters, too long for the WfRun ids \
             '{{id}}-{{time in ms}}' it gives its runs",
            MAX_NAME_LEN - RUN_ID_SUFFIX_LEN
        ))
        .into());
    }
    let cron = Cron::parse(&req.cron_expression)
        .map_err(|e| invalid(format!("cron_expression '{}': {e}", req.cron_expression)))?;
    let due = cron.next_after(ctx.now_ms).ok_or_else(|| {
        invalid(format!(
            "cron_expression '{}' names no time in the next eight years",
            req.cron_expression
        ))
    })?;
    // Checked now as RunWf would check them, so a schedule that could never start a run is
    // refused here rather than failing silently at every time.
    let spec = wf_run::find_spec(ctx, &run_request(req, None))?;
    wf_run::initial_variables(&spec, &req.variables)?;
    // A parent deleted later makes each firing a refused RunWf, skipped like any other.
    wf_run::check_parent(ctx, &spec, req.parent_wf_run_id.as_ref())?;
    if codec::get::<_, StoredSchedule, _>(ctx.tables.scheduled_wf_runs.open()?, id)?.is_some() {
        return Err(
            Rejection::AlreadyExists(format!("ScheduledWfRun '{id}' already exists")).into(),
        );
    }
    let scheduled = ScheduledWfRun {
        id: Some(ScheduledWfRunId { id: id.to_string() }),
        wf_spec_id: spec.id.clone(),
        variables: req.variables.clone(),
        parent_wf_run_id: req.parent_wf_run_id.clone(),
        cron_expression: req.cron_expression.clone(),
        created_at: Some(ts(ctx.now_ms)),
    };
    let stored = StoredSchedule {
        scheduled: Some(scheduled.clone()),
        request: Some(req.clone()),
    };
    codec::put(ctx.tables.scheduled_wf_runs.open_mut()?, id, &stored)?;
    timers::arm(
        ctx,
        &timer_id(id),
        due,
        timer::Kind::ScheduledWfRun(id.to_string()),
    )?;
    Ok(scheduled)
}

/// Deleting is idempotent. WfRuns the schedule started stay; none is started after this.
pub fn delete(ctx: &mut Ctx, req: &DeleteScheduledWfRunRequest) -> HResult<()> {
    let id = crate::error::id_name("ScheduledWfRun id", req.id.as_ref().map(|i| i.id.as_str()))?;
    ctx.tables.scheduled_wf_runs.open_mut()?.remove(id)?;
    timers::cancel(ctx, &timer_id(id))
}

/// The schedule's timer for `due_ms` fired: start that time's WfRun and arm the next time.
pub fn fire(ctx: &mut Ctx, id: &str, due_ms: i64) -> HResult<()> {
    let stored: Option<StoredSchedule> = codec::get(ctx.tables.scheduled_wf_runs.open()?, id)?;
    let Some(StoredSchedule {
        request: Some(req), ..
    }) = stored
    else {
        return Ok(());
    };
    // RunWf checks everything before its first write, so a refused run wrote nothing.
    match wf_run::run(ctx, &run_request(&req, Some(run_id(id, due_ms)))) {
        Ok(_) | Err(Outcome::Rejected(_)) => {}
        Err(fatal) => return Err(fatal),
    }
    let next = Cron::parse(&req.cron_expression)
        .ok()
        .and_then(|c| c.next_after(ctx.now_ms.max(due_ms)));
    if let Some(next) = next {
        timers::arm(
            ctx,
            &timer_id(id),
            next,
            timer::Kind::ScheduledWfRun(id.to_string()),
        )?;
    }
    Ok(())
}
