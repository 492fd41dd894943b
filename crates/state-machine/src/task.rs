//! TaskDefs, TaskRuns and their dispatch state (issue 4; LittleHorse's task semantics).
//!
//! Everything a new leader needs is replicated: a scheduled attempt waits in `TASK_QUEUE`; a
//! `ClaimTask` command (proposed by whichever node holds a worker's poll) takes the oldest one
//! of its TaskDef, marks the attempt running and arms its timeout; a report or the timeout ends
//! the attempt, schedules a retry if one is left, or ends the TaskRun and moves its NodeRun. Only
//! the held polls themselves live in memory, on the node that holds them.

use std::borrow::Cow;

use halter_api::wf_run_id::{checked_wf_run_key, key_of, wf_run_id_of, wf_run_key};
use std::collections::BTreeSet;

use halter_api::halter::{timer, ClaimTask, TaskAttemptTimer};
use halter_api::littlehorse::{
    node_run::NodeType, report_task_run, task_attempt, task_node::TaskToExecute, task_run_source,
    type_definition::DefinedType, variable_value::Value, DeleteTaskDefRequest, Failure,
    LhErrorType, LhStatus, LhTaskError, NodeRun, PutTaskDefRequest, ReportTaskRun, ScheduledTask,
    TaskAttempt, TaskDef, TaskDefId, TaskNode, TaskNodeReference, TaskNodeRun, TaskRun, TaskRunId,
    TaskRunSource, TaskStatus, TypeDefinition, VarNameAndVal, VariableDef, VariableValue,
};
use halter_api::names::{check_local_name, check_name};
use halter_api::values;
use halter_storage::codec;
use redb::ReadableTable;

use crate::ctx::{Ctx, Effect};
use crate::error::{invalid, HResult, Rejection};
use crate::expr;
use crate::interpreter::{self, ThreadScope};
use crate::run_state::{get_node, put_node, status, RunState};
use crate::time::{ms, ts};
use crate::timers;
use crate::wf_run::is_terminal;

/// LittleHorse's default when a TASK node gives no timeout.
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 60;
/// Most retries a TASK node may ask for (PutWfSpec refuses more).
pub const MAX_RETRIES: i32 = 1000;

/// The wait before retry `n` (1 for the first): `base * multiplier^(n-1)`, at most `max`. In
/// integer milliseconds with the multiplier rounded to thousandths, so every replica computes
/// the same timer (no platform-dependent float power).
pub fn backoff_ms(b: &halter_api::littlehorse::ExponentialBackoffRetryPolicy, n: u32) -> i64 {
    let max = b.max_delay_ms.max(0);
    let milli = (f64::from(b.multiplier) * 1000.0)
        .round()
        .clamp(1000.0, 1e9) as i64;
    let mut delay = i64::from(b.base_interval_ms.max(0)).min(max);
    for _ in 1..n {
        if delay >= max {
            break;
        }
        delay = (delay.saturating_mul(milli) / 1000).min(max);
    }
    delay
}

/// A TaskRun's guid is its NodeRun's place: one TaskRun per TASK NodeRun.
pub fn task_guid(thread: i32, position: i32) -> String {
    format!("{thread}-{position}")
}

pub fn timeout_timer_id(wf: &str, guid: &str, attempt: i32) -> String {
    format!("t/{wf}/{guid}/{attempt}")
}

pub fn retry_timer_id(wf: &str, guid: &str) -> String {
    format!("r/{wf}/{guid}")
}

fn run_key(id: &TaskRunId) -> (Cow<'_, str>, &str) {
    (
        id.wf_run_id.as_ref().map(key_of).unwrap_or_default(),
        id.task_guid.as_str(),
    )
}

/// A TaskRun id from a client as its storage key (WfRun key, guid), checked.
pub fn checked_run_key(id: &TaskRunId) -> Result<(String, &str), Rejection> {
    let wf = checked_wf_run_key(
        id.wf_run_id
            .as_ref()
            .ok_or_else(|| invalid("missing wf_run_id"))?,
    )?;
    if id.task_guid.is_empty() || id.task_guid.len() > halter_api::limits::MAX_GUID_LEN {
        return Err(invalid("task_guid must be 1 to 128 characters"));
    }
    Ok((wf, id.task_guid.as_str()))
}

pub fn get_run(ctx: &Ctx, id: &TaskRunId) -> HResult<Option<TaskRun>> {
    let (wf, guid) = run_key(id);
    let wf: &str = &wf;
    Ok(codec::get(ctx.tables.task_runs.open()?, (wf, guid))?)
}

/// Stores a TaskRun, and moves its rows in SearchTaskRun's indexes with it.
pub(crate) fn save_run(ctx: &mut Ctx, tr: &TaskRun) -> HResult<()> {
    let id = tr.id.clone().unwrap_or_default();
    let old = get_run(ctx, &id)?;
    crate::task_run_index::saved(ctx, old.as_ref(), tr)?;
    let (wf, guid) = run_key(&id);
    let wf: &str = &wf;
    codec::put(ctx.tables.task_runs.open_mut()?, (wf, guid), tr)?;
    Ok(())
}

// ---- TaskDefs ----

/// Input variables with their type in `type_def` (what task workers read), legacy `type` gone.
fn normalise_inputs(req: &PutTaskDefRequest) -> Result<Vec<VariableDef>, Rejection> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for v in &req.input_vars {
        check_local_name("input variable name", &v.name)
            .map_err(|e| invalid(format!("TaskDef '{}': {e}", req.name)))?;
        if !seen.insert(v.name.as_str()) {
            return Err(invalid(format!(
                "TaskDef '{}': input variable '{}' declared twice",
                req.name, v.name
            )));
        }
        let ty = values::declared_type(v).map_err(|w| {
            invalid(format!(
                "TaskDef '{}', input variable '{}': {w} is not supported",
                req.name, v.name
            ))
        })?;
        let masked =
            v.masked_value.unwrap_or(false) || v.type_def.as_ref().is_some_and(|t| t.masked);
        out.push(VariableDef {
            r#type: None,
            name: v.name.clone(),
            default_value: v.default_value.clone(),
            masked_value: None,
            type_def: Some(TypeDefinition {
                defined_type: Some(DefinedType::PrimitiveType(ty as i32)),
                masked,
            }),
        });
    }
    Ok(out)
}

/// PutTaskDef: a TaskDef is immutable. The same definition again returns the stored one; a
/// different one under an existing name is ALREADY_EXISTS.
pub fn put_def(ctx: &mut Ctx, req: &PutTaskDefRequest) -> HResult<TaskDef> {
    check_name("TaskDef name", &req.name)?;
    let input_vars = normalise_inputs(req)?;
    values::return_type_of(req.return_type.as_ref()).map_err(|w| {
        invalid(format!(
            "TaskDef '{}': return type uses {w}, which Halter does not support",
            req.name
        ))
    })?;
    let def = TaskDef {
        id: Some(TaskDefId {
            name: req.name.clone(),
        }),
        input_vars,
        created_at: Some(ts(ctx.now_ms)),
        return_type: req.return_type.clone(),
        description: req.description.clone(),
    };
    if let Some(existing) =
        codec::get::<_, TaskDef, _>(ctx.tables.task_defs.open()?, req.name.as_str())?
    {
        let same = TaskDef {
            created_at: existing.created_at,
            ..def.clone()
        } == existing;
        if same {
            return Ok(existing);
        }
        return Err(Rejection::AlreadyExists(format!(
            "TaskDef '{}' already exists and is immutable",
            req.name
        ))
        .into());
    }
    codec::put(ctx.tables.task_defs.open_mut()?, req.name.as_str(), &def)?;
    Ok(def)
}

/// DeleteTaskDef: NOT_FOUND for a missing one (as LittleHorse). WfSpecs that use it fail their
/// TASK nodes with TASK_ERROR from then on.
pub fn delete_def(ctx: &mut Ctx, req: &DeleteTaskDefRequest) -> HResult<()> {
    let name = crate::error::id_name("TaskDef name", req.id.as_ref().map(|i| i.name.as_str()))?;
    if ctx.tables.task_defs.open_mut()?.remove(name)?.is_none() {
        return Err(Rejection::NotFound(format!("TaskDef '{name}' not found")).into());
    }
    crate::task_worker_group::delete_of(ctx, name)
}

// ---- scheduling ----

/// Enters a TASK node: finds the TaskDef, computes the inputs (by position), creates the
/// TaskRun with its first attempt scheduled. A missing TaskDef or bad inputs fail the NodeRun
/// before any TaskRun exists.
pub fn schedule(
    ctx: &mut Ctx,
    run: &RunState,
    thread: i32,
    node: &TaskNode,
    nr: &mut NodeRun,
) -> HResult<Result<(), (LhErrorType, String)>> {
    let node_run_id = nr.id.clone().unwrap_or_default();
    let guid = task_guid(thread, node_run_id.position);
    let source = task_run_source::TaskRunSource::TaskNode(TaskNodeReference {
        node_run_id: Some(node_run_id),
    });
    let id = match start_run(ctx, run, thread, node, guid, source)? {
        Ok(id) => id,
        Err(e) => return Ok(Err(e)),
    };
    nr.node_type = Some(NodeType::Task(TaskNodeRun {
        task_run_id: Some(id),
    }));
    Ok(Ok(()))
}

/// Evaluates `node`'s task and inputs in `thread`'s scope and queues the first attempt of a
/// TaskRun `guid` from `source`. `Ok(Err(..))` when the task or its inputs cannot be worked
/// out: nothing was written.
pub(crate) fn start_run(
    ctx: &mut Ctx,
    run: &RunState,
    thread: i32,
    node: &TaskNode,
    guid: String,
    source: task_run_source::TaskRunSource,
) -> HResult<Result<TaskRunId, (LhErrorType, String)>> {
    let mut scope = ThreadScope::new(ctx, run, thread)?;
    let def_name = match &node.task_to_execute {
        Some(TaskToExecute::TaskDefId(id)) => id.name.clone(),
        Some(TaskToExecute::DynamicTask(a)) => match expr::eval(a, &mut scope) {
            Ok(VariableValue {
                value: Some(Value::Str(s)),
            }) => s,
            Ok(other) => {
                return Ok(Err((
                    LhErrorType::VarSubError,
                    format!(
                        "Failed calculating dynamic task: got {}, not a STR",
                        values::type_name(values::type_of(&other))
                    ),
                )))
            }
            Err(e) => {
                return Ok(Err((
                    LhErrorType::VarSubError,
                    format!("Failed calculating dynamic task: {e}"),
                )))
            }
        },
        None => {
            return Ok(Err((
                LhErrorType::TaskError,
                "TASK node without a task".into(),
            )))
        }
    };
    let Some(def) = codec::get::<_, TaskDef, _>(ctx.tables.task_defs.open()?, def_name.as_str())?
    else {
        return Ok(Err((
            LhErrorType::TaskError,
            format!("TaskDef '{def_name}' does not exist (deleted?)"),
        )));
    };
    if node.variables.len() != def.input_vars.len() {
        return Ok(Err((
            LhErrorType::VarSubError,
            format!(
                "Failed calculating TaskRun Input Vars: TaskDef '{def_name}' takes {} inputs, the node gives {}",
                def.input_vars.len(),
                node.variables.len()
            ),
        )));
    }
    let mut inputs = Vec::new();
    for (a, var) in node.variables.iter().zip(&def.input_vars) {
        let value = match expr::eval(a, &mut scope) {
            Ok(v) => v,
            Err(e) => {
                return Ok(Err((
                    LhErrorType::VarSubError,
                    format!("Failed calculating TaskRun Input Vars: '{}': {e}", var.name),
                )))
            }
        };
        let ty =
            values::declared_type(var).unwrap_or(halter_api::littlehorse::VariableType::JsonObj);
        if !values::admits(ty, &value) {
            return Ok(Err((
                LhErrorType::VarSubError,
                format!(
                    "Failed calculating TaskRun Input Vars: '{}' must be {}, got {}",
                    var.name,
                    ty.as_str_name(),
                    values::type_name(values::type_of(&value))
                ),
            )));
        }
        inputs.push(VarNameAndVal {
            var_name: var.name.clone(),
            value: Some(value),
            masked: var.type_def.as_ref().is_some_and(|t| t.masked),
        });
    }
    let wf = run.id().to_string();
    let id = TaskRunId {
        wf_run_id: Some(wf_run_id_of(&wf)),
        task_guid: guid.clone(),
    };
    let timeout = if node.timeout_seconds > 0 {
        node.timeout_seconds
    } else {
        DEFAULT_TIMEOUT_SECONDS
    };
    let mut tr = TaskRun {
        id: Some(id.clone()),
        task_def_id: def.id.clone(),
        attempts: vec![],
        input_variables: inputs,
        source: Some(TaskRunSource {
            task_run_source: Some(source),
            wf_spec_id: run.wf_run.wf_spec_id.clone(),
        }),
        scheduled_at: Some(ts(ctx.now_ms)),
        status: TaskStatus::TaskScheduled as i32,
        timeout_seconds: timeout,
        total_attempts: node.retries.clamp(0, MAX_RETRIES) + 1,
        exponential_backoff: node.exponential_backoff,
        total_checkpoints: 0,
    };
    enqueue_attempt(ctx, &mut tr)?;
    save_run(ctx, &tr)?;
    Ok(Ok(id))
}

/// Appends a scheduled attempt and puts it in the queue.
fn enqueue_attempt(ctx: &mut Ctx, tr: &mut TaskRun) -> HResult<()> {
    tr.attempts.push(TaskAttempt {
        schedule_time: Some(ts(ctx.now_ms)),
        status: TaskStatus::TaskScheduled as i32,
        ..Default::default()
    });
    tr.status = TaskStatus::TaskScheduled as i32;
    queue(ctx, tr, ctx.now_ms)
}

fn queue(ctx: &mut Ctx, tr: &TaskRun, at_ms: i64) -> HResult<()> {
    let id = tr.id.clone().unwrap_or_default();
    let def = tr.task_def_id.clone().unwrap_or_default().name;
    let (wf, guid) = run_key(&id);
    let wf: &str = &wf;
    ctx.tables
        .task_queue
        .open_mut()?
        .insert((def.as_str(), at_ms, wf, guid), ())?;
    ctx.effects.push(Effect::TaskQueued { task_def: def });
    Ok(())
}

/// ClaimTask: hands the oldest scheduled attempt of the TaskDef to the worker, or None.
pub fn claim(ctx: &mut Ctx, req: &ClaimTask) -> HResult<Option<ScheduledTask>> {
    check_name("TaskDef name", &req.task_def_name)?;
    let def = req.task_def_name.as_str();
    // The oldest queued attempt whose NodeRun still waits for it; the rows passed over on the
    // way leave the queue for good (see `still_wanted`).
    let (wf, id, mut tr) = loop {
        let first = ctx
            .tables
            .task_queue
            .open()?
            .range((def, i64::MIN, "", "")..=(def, i64::MAX, "\u{10FFFF}", "\u{10FFFF}"))?
            .next()
            .transpose()?
            .map(|(k, _)| {
                let (_, at, wf, guid) = k.value();
                (at, wf.to_string(), guid.to_string())
            });
        let Some((at, wf, guid)) = first else {
            return Ok(None);
        };
        ctx.tables
            .task_queue
            .open_mut()?
            .remove((def, at, wf.as_str(), guid.as_str()))?;
        let id = TaskRunId {
            wf_run_id: Some(wf_run_id_of(&wf)),
            task_guid: guid,
        };
        if let Some(tr) = get_run(ctx, &id)? {
            if still_wanted(ctx, &tr)? {
                break (wf, id, tr);
            }
        }
    };
    let n = tr.attempts.len() as i32 - 1;
    let Some(attempt) = tr.attempts.last_mut() else {
        return Ok(None);
    };
    attempt.status = TaskStatus::TaskRunning as i32;
    attempt.start_time = Some(ts(ctx.now_ms));
    attempt.task_worker_id = req.worker_id.clone();
    attempt.task_worker_version = req.worker_version.clone();
    let created_at = attempt.schedule_time;
    tr.status = TaskStatus::TaskRunning as i32;
    arm_timeout(ctx, &wf, &tr, n)?;
    save_run(ctx, &tr)?;
    Ok(Some(ScheduledTask {
        task_run_id: Some(id),
        task_def_id: tr.task_def_id.clone(),
        attempt_number: n,
        variables: tr.input_variables.clone(),
        created_at,
        source: tr.source.clone(),
        total_observed_checkpoints: tr.total_checkpoints,
    }))
}

/// (Re)arms attempt `n`'s timeout, `timeout_seconds` from now: when it is claimed, and again
/// at each checkpoint it saves.
pub(crate) fn arm_timeout(ctx: &mut Ctx, wf: &str, tr: &TaskRun, n: i32) -> HResult<()> {
    let id = tr.id.clone().unwrap_or_default();
    timers::arm(
        ctx,
        &timeout_timer_id(wf, &id.task_guid, n),
        ctx.now_ms
            .saturating_add(i64::from(tr.timeout_seconds).saturating_mul(1000)),
        timer::Kind::TaskTimeout(TaskAttemptTimer {
            task_run_id: Some(id),
            attempt_number: n,
        }),
    )
}

// ---- results ----

fn result_of(r: &ReportTaskRun) -> Option<task_attempt::Result> {
    r.result.as_ref().map(|x| match x {
        report_task_run::Result::Output(v) => task_attempt::Result::Output(v.clone()),
        report_task_run::Result::Error(e) => task_attempt::Result::Error(e.clone()),
        report_task_run::Result::Exception(e) => task_attempt::Result::Exception(e.clone()),
    })
}

/// ReportTask. A report for an unknown TaskRun is NOT_FOUND; for an attempt that is no longer
/// running it is FAILED_PRECONDITION, unless it repeats the outcome already recorded (a
/// worker's retry), which is answered OK and changes nothing.
pub fn report(ctx: &mut Ctx, r: &ReportTaskRun) -> HResult<()> {
    let id = r
        .task_run_id
        .as_ref()
        .ok_or_else(|| invalid("missing task_run_id"))?;
    let (wf, guid) = run_key(id);
    let wf: &str = &wf;
    checked_wf_run_key(
        id.wf_run_id
            .as_ref()
            .ok_or_else(|| invalid("missing wf_run_id"))?,
    )?;
    let mut tr = get_run(ctx, id)?
        .ok_or_else(|| Rejection::NotFound(format!("TaskRun {wf}/{guid} not found")))?;
    let n = r.attempt_number;
    let Some(attempt) = usize::try_from(n).ok().and_then(|i| tr.attempts.get(i)) else {
        return Err(invalid(format!(
            "TaskRun {wf}/{guid} has no attempt {n} ({} attempts)",
            tr.attempts.len()
        ))
        .into());
    };
    let reported = TaskStatus::try_from(r.status)
        .map_err(|_| invalid(format!("unknown task status {}", r.status)))?;
    if !matches!(
        reported,
        TaskStatus::TaskSuccess
            | TaskStatus::TaskFailed
            | TaskStatus::TaskException
            | TaskStatus::TaskOutputSerdeError
    ) {
        return Err(invalid(format!(
            "a worker reports TASK_SUCCESS, TASK_FAILED, TASK_EXCEPTION or TASK_OUTPUT_SERDE_ERROR, not {}",
            reported.as_str_name()
        ))
        .into());
    }
    if attempt.status != TaskStatus::TaskRunning as i32 {
        // The same report again (a worker's retry) is answered OK. A success whose output did
        // not fit the return type was recorded as TASK_OUTPUT_SERDE_ERROR: its repeat too.
        let repeat = (attempt.status == r.status && attempt.result == result_of(r))
            || (attempt.status == TaskStatus::TaskOutputSerdeError as i32
                && reported == TaskStatus::TaskSuccess);
        if repeat {
            return Ok(());
        }
        return Err(Rejection::FailedPrecondition(format!(
            "attempt {n} of TaskRun {wf}/{guid} is {}, no longer running",
            TaskStatus::try_from(attempt.status)
                .map(|s| s.as_str_name())
                .unwrap_or("finished")
        ))
        .into());
    }
    finish_attempt(
        ctx,
        &mut tr,
        n as usize,
        reported,
        result_of(r),
        r.log_output.clone(),
    )
}

/// A running attempt's timeout fired.
pub fn fire_timeout(ctx: &mut Ctx, t: &TaskAttemptTimer) -> HResult<()> {
    let Some(id) = &t.task_run_id else {
        return Ok(());
    };
    let Some(mut tr) = get_run(ctx, id)? else {
        return Ok(());
    };
    let n = t.attempt_number as usize;
    if tr
        .attempts
        .get(n)
        .is_none_or(|a| a.status != TaskStatus::TaskRunning as i32)
    {
        return Ok(());
    }
    finish_attempt(ctx, &mut tr, n, TaskStatus::TaskTimeout, None, None)
}

/// A retry's backoff is over: its pending attempt is scheduled.
pub fn fire_retry(ctx: &mut Ctx, id: &TaskRunId) -> HResult<()> {
    let Some(mut tr) = get_run(ctx, id)? else {
        return Ok(());
    };
    if tr
        .attempts
        .last()
        .is_none_or(|a| a.status != TaskStatus::TaskPending as i32)
    {
        return Ok(());
    }
    if !still_wanted(ctx, &tr)? {
        return Ok(());
    }
    let Some(a) = tr.attempts.last_mut() else {
        return Ok(());
    };
    a.status = TaskStatus::TaskScheduled as i32;
    a.schedule_time = Some(ts(ctx.now_ms));
    tr.status = TaskStatus::TaskScheduled as i32;
    queue(ctx, &tr, ctx.now_ms)?;
    save_run(ctx, &tr)
}

/// Whether a value fits the TaskDef's return type (unset return type: anything, i.e. void).
fn fits_return_type(ctx: &Ctx, tr: &TaskRun, v: &VariableValue) -> HResult<bool> {
    let def_name = tr.task_def_id.clone().unwrap_or_default().name;
    let def: Option<TaskDef> = codec::get(ctx.tables.task_defs.open()?, def_name.as_str())?;
    let Some(def) = def else { return Ok(true) };
    Ok(match values::return_type_of(def.return_type.as_ref()) {
        Ok(None) => true,
        Ok(Some(ty)) => values::admits(ty, v),
        Err(_) => false,
    })
}

fn finish_attempt(
    ctx: &mut Ctx,
    tr: &mut TaskRun,
    n: usize,
    mut st: TaskStatus,
    mut result: Option<task_attempt::Result>,
    log_output: Option<VariableValue>,
) -> HResult<()> {
    let id = tr.id.clone().unwrap_or_default();
    let (wf, guid) = run_key(&id);
    let wf: &str = &wf;
    let (wf, guid) = (wf.to_string(), guid.to_string());
    timers::cancel(ctx, &timeout_timer_id(&wf, &guid, n as i32))?;
    if st == TaskStatus::TaskSuccess {
        let out = match &result {
            Some(task_attempt::Result::Output(v)) => v.clone(),
            _ => VariableValue::default(),
        };
        if !fits_return_type(ctx, tr, &out)? {
            st = TaskStatus::TaskOutputSerdeError;
            result = Some(task_attempt::Result::Error(LhTaskError {
                r#type: LhErrorType::VarSubError as i32,
                message: "Task output incompatible with the TaskDef's return type".into(),
            }));
        }
    }
    if let Some(a) = tr.attempts.get_mut(n) {
        a.status = st as i32;
        a.end_time = Some(ts(ctx.now_ms));
        a.result = result.clone();
        a.log_output = log_output;
    }
    let retry = matches!(st, TaskStatus::TaskFailed | TaskStatus::TaskTimeout)
        && (tr.attempts.len() as i32) < tr.total_attempts
        && still_wanted(ctx, tr)?;
    if retry {
        match tr.exponential_backoff {
            Some(b) => {
                let delay = backoff_ms(&b, tr.attempts.len() as u32);
                tr.attempts.push(TaskAttempt {
                    status: TaskStatus::TaskPending as i32,
                    ..Default::default()
                });
                tr.status = TaskStatus::TaskPending as i32;
                timers::arm(
                    ctx,
                    &retry_timer_id(&wf, &guid),
                    ctx.now_ms.saturating_add(delay),
                    timer::Kind::TaskRetry(id.clone()),
                )?;
            }
            None => enqueue_attempt(ctx, tr)?,
        }
        return save_run(ctx, tr);
    }
    tr.status = st as i32;
    save_run(ctx, tr)?;
    node_outcome(ctx, tr, st, result)
}

/// The NodeRun behind a TaskRun: (WfRun id, thread, position), and whether the TaskRun is that
/// TASK node's own (`true`) or a reminder its USER_TASK trigger made (`false`).
fn source_node(tr: &TaskRun) -> Option<(String, i32, i32, bool)> {
    let (id, own) = match tr.source.as_ref()?.task_run_source.as_ref()? {
        task_run_source::TaskRunSource::TaskNode(r) => (r.node_run_id.as_ref()?, true),
        task_run_source::TaskRunSource::UserTaskTrigger(r) => (r.node_run_id.as_ref()?, false),
    };
    let wf = wf_run_key(id.wf_run_id.as_ref()?);
    Some((wf, id.thread_run_number, id.position, own))
}

/// The TASK NodeRun a TaskRun was made for; None for a reminder.
fn task_node_of(tr: &TaskRun) -> Option<(String, i32, i32)> {
    source_node(tr).and_then(|(wf, t, p, own)| own.then_some((wf, t, p)))
}

/// Whether the TaskRun's outcome can still matter: its NodeRun is RUNNING or HALTED, its WfRun
/// has not ended, and its thread can run again (`threads::never_runs_again`). A TaskRun no
/// longer wanted is not handed out again and not retried: a worker must not execute a task
/// (charge a card, send a mail) for a workflow that can no longer use it. An attempt already
/// running still finishes and is recorded, as in LittleHorse; an attempt not yet handed out
/// keeps its status (SCHEDULED or PENDING: LittleHorse has no cancelled status) and leaves the
/// queue.
///
/// A reminder (a user task trigger's TaskRun) is wanted while its USER_TASK NodeRun still
/// waits: nobody should be reminded of work already done or cancelled.
fn still_wanted(ctx: &Ctx, tr: &TaskRun) -> HResult<bool> {
    let Some((wf, thread, position, _)) = source_node(tr) else {
        return Ok(true);
    };
    let Some(run) = RunState::load(ctx, &wf)? else {
        return Ok(false);
    };
    if is_terminal(run.wf_run.status()) || interpreter::threads::never_runs_again(&run, thread) {
        return Ok(false);
    }
    Ok(get_node(ctx, &wf, thread, position)?
        .is_some_and(|nr| matches!(status(nr.status), LhStatus::Running | LhStatus::Halted)))
}

/// The TaskRun ended: its NodeRun completes with the output, or fails.
fn node_outcome(
    ctx: &mut Ctx,
    tr: &TaskRun,
    st: TaskStatus,
    result: Option<task_attempt::Result>,
) -> HResult<()> {
    let Some((wf, thread_run_number, position)) = task_node_of(tr) else {
        return Ok(());
    };
    let Some(mut run) = RunState::load(ctx, &wf)? else {
        return Ok(());
    };
    let Some(mut nr) = get_node(ctx, &wf, thread_run_number, position)? else {
        return Ok(());
    };
    if !matches!(status(nr.status), LhStatus::Running | LhStatus::Halted) {
        return Ok(());
    }
    let failure = match (st, result) {
        (TaskStatus::TaskSuccess, _) => None,
        (TaskStatus::TaskException, Some(task_attempt::Result::Exception(e))) => Some(Failure {
            failure_name: e.name,
            message: e.message,
            content: e.content,
            ..Default::default()
        }),
        (TaskStatus::TaskTimeout, _) => Some(failure(LhErrorType::Timeout, "Task timed out")),
        (TaskStatus::TaskOutputSerdeError, _) => Some(failure(
            LhErrorType::VarMutationError,
            "Failed serializing or deserializing Task Output",
        )),
        _ => Some(failure(LhErrorType::TaskFailure, "Task execution failed")),
    };
    nr.end_time = Some(ts(ctx.now_ms));
    match failure {
        None => nr.status = LhStatus::Completed as i32,
        Some(f) => {
            nr.status = interpreter::failure_status(&f.failure_name) as i32;
            nr.error_message = Some(f.message.clone());
            nr.failures.push(f);
        }
    }
    put_node(ctx, &nr)?;
    if !is_terminal(run.wf_run.status()) {
        interpreter::advance(ctx, &mut run)?;
    }
    Ok(())
}

fn failure(t: LhErrorType, message: &str) -> Failure {
    Failure {
        failure_name: t.as_str_name().to_string(),
        message: message.to_string(),
        ..Default::default()
    }
}

/// What a TASK NodeRun produced: its last attempt's output.
pub fn output(ctx: &Ctx, id: &TaskRunId) -> HResult<Option<VariableValue>> {
    Ok(get_run(ctx, id)?.and_then(|tr| {
        tr.attempts.last().and_then(|a| match &a.result {
            Some(task_attempt::Result::Output(v)) => Some(v.clone()),
            _ => None,
        })
    }))
}

/// The TaskRuns of WfRun `wf`.
fn runs_of(ctx: &Ctx, wf: &str) -> HResult<Vec<TaskRun>> {
    let mut runs = Vec::new();
    for row in ctx
        .tables
        .task_runs
        .open()?
        .range((wf, "")..=(wf, "\u{10FFFF}"))?
    {
        let (_, v) = row?;
        runs.push(codec::decode::<TaskRun>(v.value())?);
    }
    Ok(runs)
}

/// Takes the TaskRun's last attempt off the queue if it is queued (SCHEDULED).
fn unqueue(ctx: &mut Ctx, wf: &str, tr: &TaskRun) -> HResult<()> {
    let Some(at) = tr
        .attempts
        .last()
        .filter(|a| a.status == TaskStatus::TaskScheduled as i32)
        .and_then(|a| a.schedule_time.as_ref())
    else {
        return Ok(());
    };
    let guid = tr.id.clone().unwrap_or_default().task_guid;
    let def = tr.task_def_id.clone().unwrap_or_default().name;
    ctx.tables
        .task_queue
        .open_mut()?
        .remove((def.as_str(), ms(at), wf, guid.as_str()))?;
    Ok(())
}

/// The WfRun `wf` ended: its TaskRuns' attempts still queued leave the queue and their retry
/// timers are cancelled (`still_wanted` would pass over them anyway, but one at a time, in the
/// claim of whichever worker polls next). Running attempts keep their timeouts and finish.
pub fn dequeue_all_of(ctx: &mut Ctx, wf: &str) -> HResult<()> {
    for tr in runs_of(ctx, wf)? {
        unqueue(ctx, wf, &tr)?;
        let guid = tr.id.unwrap_or_default().task_guid;
        timers::cancel(ctx, &retry_timer_id(wf, &guid))?;
    }
    Ok(())
}

/// The reverse of [`dequeue_all_of`], for a rescued WfRun: every attempt still scheduled is
/// queued again (at its schedule time, so one already queued keeps its row) and every pending
/// retry is scheduled now. A claim passes over those whose NodeRun no longer waits.
pub fn requeue_all_of(ctx: &mut Ctx, wf: &str) -> HResult<()> {
    for tr in runs_of(ctx, wf)? {
        let Some(last) = tr.attempts.last() else {
            continue;
        };
        if last.status == TaskStatus::TaskScheduled as i32 {
            let at = last.schedule_time.as_ref().map_or(ctx.now_ms, ms);
            queue(ctx, &tr, at)?;
        } else if last.status == TaskStatus::TaskPending as i32 {
            let id = tr.id.clone().unwrap_or_default();
            timers::arm(
                ctx,
                &retry_timer_id(wf, &id.task_guid),
                ctx.now_ms,
                timer::Kind::TaskRetry(id.clone()),
            )?;
        }
    }
    Ok(())
}

/// Removes a WfRun's TaskRuns, their queue rows, timers and checkpoints.
pub fn delete_all_of(ctx: &mut Ctx, wf: &str) -> HResult<()> {
    for tr in runs_of(ctx, wf)? {
        unqueue(ctx, wf, &tr)?;
        let guid = tr.id.clone().unwrap_or_default().task_guid;
        for n in 0..tr.attempts.len() {
            timers::cancel(ctx, &timeout_timer_id(wf, &guid, n as i32))?;
        }
        timers::cancel(ctx, &retry_timer_id(wf, &guid))?;
        crate::checkpoint::delete_of(ctx, wf, &guid, tr.total_checkpoints)?;
        crate::task_run_index::removed(ctx, &tr)?;
        ctx.tables
            .task_runs
            .open_mut()?
            .remove((wf, guid.as_str()))?;
    }
    Ok(())
}
