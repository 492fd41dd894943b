//! UserTaskDefs and UserTaskRuns: work a person does inside a WfRun (approve a payment, sign a
//! document, fill in a form), LittleHorse's user tasks.
//!
//! A thread arriving at a USER_TASK node creates one UserTaskRun (its guid is the NodeRun's
//! place, as a TaskRun's is) and waits RUNNING until someone completes it (the NodeRun
//! completes with the results as a JSON_OBJ) or cancels it (the NodeRun fails with
//! `USER_TASK_CANCELLED`, or with the node's `on_cancellation_exception_name` as an EXCEPTION).
//! Assigning, saving progress and comments change only the UserTaskRun and its audit trail.
//!
//! A node's action triggers (cancel or reassign after a delay) are timers in the replicated
//! timer table, armed at arrival (`ON_ARRIVAL`) or at each assignment to a user
//! (`ON_TASK_ASSIGNED`). A trigger armed at an assignment carries the UserTaskRun's epoch then;
//! an assignment since makes it stale, and a finished UserTaskRun ignores every trigger.

use std::borrow::Cow;

use halter_api::wf_run_id::{checked_wf_run_key, key_of, wf_run_id_of, wf_run_key};
use std::collections::{BTreeMap, BTreeSet};

use halter_api::halter::{timer, UserTaskActionTimer};
use halter_api::littlehorse::{
    node, node_run::NodeType, save_user_task_run_progress_request::SaveUserTaskRunAssignmentPolicy,
    task_run_source, user_task_event, ut_action_trigger, variable_value::Value,
    AssignUserTaskRunRequest, CancelUserTaskRunRequest, CompleteUserTaskRunRequest,
    DeleteUserTaskDefRequest, DeleteUserTaskRunCommentRequest, EditUserTaskRunCommentRequest,
    LhErrorType, LhStatus, NodeRun, NodeRunId, PutUserTaskDefRequest, PutUserTaskRunCommentRequest,
    SaveUserTaskRunProgressRequest, UserTaskDef, UserTaskDefId, UserTaskEvent, UserTaskField,
    UserTaskNode, UserTaskNodeRun, UserTaskRun, UserTaskRunId, UserTaskRunStatus,
    UserTaskTriggerReference, UtActionTrigger, VariableAssignment, VariableType, VariableValue,
};
use halter_api::names::{check_local_name, check_name};
use halter_api::values;
use halter_storage::codec;
use redb::ReadableTable;

use crate::ctx::Ctx;
use crate::error::{invalid, HResult, Rejection};
use crate::expr;
use crate::interpreter::{self, ThreadScope};
use crate::run_state::{get_node, put_node, status, RunState};
use crate::time::{ms, ts};
use crate::timers;
use crate::wf_run::is_terminal;

/// Most fields a UserTaskDef may have.
pub const MAX_FIELDS: usize = 256;
/// Most comments one UserTaskRun keeps (its audit trail is one row).
pub const MAX_COMMENTS: usize = 1_000;
/// Longest comment, in bytes.
pub const MAX_COMMENT_LEN: usize = 16 * 1024;

// ---- UserTaskDefs ----

/// The latest version of the def `name`.
pub(crate) fn latest_def<T>(table: &T, name: &str) -> HResult<Option<UserTaskDef>>
where
    T: ReadableTable<(&'static str, u32), &'static [u8]>,
{
    match table.range((name, 0u32)..=(name, u32::MAX))?.next_back() {
        Some(row) => Ok(Some(codec::decode(row?.1.value())?)),
        None => Ok(None),
    }
}

/// The def `name` at `version`, or its latest version.
pub(crate) fn find_def(
    ctx: &Ctx,
    name: &str,
    version: Option<i32>,
) -> HResult<Option<UserTaskDef>> {
    let table = ctx.tables.user_task_defs.open()?;
    match version {
        Some(v) => match u32::try_from(v) {
            Ok(v) => Ok(codec::get(table, (name, v))?),
            Err(_) => Ok(None),
        },
        None => latest_def(table, name),
    }
}

fn check_fields(name: &str, fields: &[UserTaskField]) -> Result<(), Rejection> {
    if fields.len() > MAX_FIELDS {
        return Err(invalid(format!(
            "UserTaskDef '{name}' has {} fields, at most {MAX_FIELDS} are allowed",
            fields.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for f in fields {
        check_local_name("UserTaskField name", &f.name)?;
        if !seen.insert(f.name.as_str()) {
            return Err(invalid(format!(
                "UserTaskDef '{name}' has two fields named '{}'",
                f.name
            )));
        }
        match VariableType::try_from(f.r#type) {
            Ok(
                VariableType::Str | VariableType::Bool | VariableType::Int | VariableType::Double,
            ) => {}
            _ => {
                return Err(invalid(format!(
                    "UserTaskField '{}' of UserTaskDef '{name}': type must be STR, BOOL, INT or \
                     DOUBLE",
                    f.name
                )))
            }
        }
    }
    Ok(())
}

/// Creates version 0 of a def, or the next version if the def changed. Putting the latest
/// version again answers it unchanged (SDKs register their defs at every start).
pub fn put_def(ctx: &mut Ctx, req: &PutUserTaskDefRequest) -> HResult<UserTaskDef> {
    check_name("UserTaskDef name", &req.name)?;
    check_fields(&req.name, &req.fields)?;
    let latest = latest_def(ctx.tables.user_task_defs.open()?, &req.name)?;
    let version = match &latest {
        Some(l) if l.fields == req.fields && l.description == req.description => {
            return Ok(l.clone())
        }
        Some(l) => l
            .version
            .checked_add(1)
            .ok_or_else(|| invalid(format!("UserTaskDef '{}' has no versions left", req.name)))?,
        None => 0,
    };
    let def = UserTaskDef {
        name: req.name.clone(),
        version,
        description: req.description.clone(),
        fields: req.fields.clone(),
        created_at: Some(ts(ctx.now_ms)),
    };
    codec::put(
        ctx.tables.user_task_defs.open_mut()?,
        (req.name.as_str(), version as u32),
        &def,
    )?;
    Ok(def)
}

/// Deletes one version. Idempotent, like every delete (`docs/ARCHITECTURE.md`, Decisions): a
/// client retrying after a timeout is not told `NOT_FOUND` for its own success. UserTaskRuns of
/// the version keep their def id; WfSpecs pinned to it fail their USER_TASK nodes from then on.
pub fn delete_def(ctx: &mut Ctx, req: &DeleteUserTaskDefRequest) -> HResult<()> {
    let id = req.id.as_ref().ok_or_else(|| invalid("missing id"))?;
    check_name("UserTaskDef name", &id.name)?;
    let version = u32::try_from(id.version)
        .map_err(|_| invalid("UserTaskDef version must not be negative"))?;
    ctx.tables
        .user_task_defs
        .open_mut()?
        .remove((id.name.as_str(), version))?;
    Ok(())
}

// ---- UserTaskRuns: storage and index ----

fn run_key(id: &UserTaskRunId) -> (Cow<'_, str>, &str) {
    (
        id.wf_run_id.as_ref().map(key_of).unwrap_or_default(),
        id.user_task_guid.as_str(),
    )
}

pub fn get_run(ctx: &Ctx, id: &UserTaskRunId) -> HResult<Option<UserTaskRun>> {
    let (wf, guid) = run_key(id);
    let wf: &str = &wf;
    Ok(codec::get(ctx.tables.user_task_runs.open()?, (wf, guid))?)
}

/// SearchUserTaskRun's index rows of a run: (attribute, value) pairs, all at its scheduled time.
pub fn index_attributes(r: &UserTaskRun) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (
            "def",
            r.user_task_def_id
                .as_ref()
                .map(|d| d.name.clone())
                .unwrap_or_default(),
        ),
        ("status", r.status().as_str_name().to_string()),
    ];
    if let Some(u) = &r.user_id {
        out.push(("user", u.clone()));
    }
    if let Some(g) = &r.user_group {
        out.push(("group", g.clone()));
    }
    out
}

fn index_rows(ctx: &mut Ctx, r: &UserTaskRun, add: bool) -> HResult<()> {
    let id = r.id.clone().unwrap_or_default();
    let (wf, guid) = run_key(&id);
    let wf: &str = &wf;
    let at = r.scheduled_time.as_ref().map(ms).unwrap_or_default();
    let table = ctx.tables.user_task_runs_by.open_mut()?;
    for (attr, value) in index_attributes(r) {
        let key = (attr, value.as_str(), at, wf, guid);
        if add {
            table.insert(key, ())?;
        } else {
            table.remove(key)?;
        }
    }
    Ok(())
}

/// Stores a UserTaskRun (`old` is what was stored before, if anything) and moves its index rows.
fn save_run(ctx: &mut Ctx, old: Option<&UserTaskRun>, r: &UserTaskRun) -> HResult<()> {
    if let Some(old) = old {
        index_rows(ctx, old, false)?;
    }
    index_rows(ctx, r, true)?;
    let id = r.id.clone().unwrap_or_default();
    let (wf, guid) = run_key(&id);
    let wf: &str = &wf;
    codec::put(ctx.tables.user_task_runs.open_mut()?, (wf, guid), r)?;
    Ok(())
}

fn event(ctx: &Ctx, e: user_task_event::Event) -> UserTaskEvent {
    UserTaskEvent {
        time: Some(ts(ctx.now_ms)),
        event: Some(e),
    }
}

/// Stores `old` with one more event `e` on its audit trail, and answers the new UserTaskRun.
fn record_event(
    ctx: &mut Ctx,
    old: &UserTaskRun,
    e: user_task_event::Event,
) -> HResult<UserTaskRun> {
    let mut r = old.clone();
    r.events.push(event(ctx, e));
    save_run(ctx, Some(old), &r)?;
    Ok(r)
}

fn action_timer_prefix(wf: &str, guid: &str) -> String {
    format!("u/{wf}/{guid}/")
}

fn action_timer_id(wf: &str, guid: &str, index: usize) -> String {
    format!("{}{index}", action_timer_prefix(wf, guid))
}

/// Cancels every action timer of a UserTaskRun.
fn cancel_action_timers(ctx: &mut Ctx, wf: &str, guid: &str) -> HResult<()> {
    let prefix = action_timer_prefix(wf, guid);
    let mut ids = Vec::new();
    for row in ctx.tables.timer_due.open()?.range(prefix.as_str()..)? {
        let (k, _) = row?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        ids.push(k.value().to_string());
    }
    for id in ids {
        timers::cancel(ctx, &id)?;
    }
    Ok(())
}

// ---- Evaluating the node's assignments ----

/// An optional assignment as text (a user id, a group, notes): `None` when absent or null; a
/// value of another type is rendered as LittleHorse renders it (INT 5 is "5").
fn eval_text(
    a: Option<&VariableAssignment>,
    scope: &mut ThreadScope,
) -> Result<Option<String>, String> {
    let Some(a) = a else { return Ok(None) };
    let v = expr::eval(a, scope)?;
    Ok(match v.value {
        None => None,
        Some(Value::Str(s)) => Some(s),
        Some(_) => Some(expr::to_json(&v)?.to_string()),
    })
}

/// Where a UserTaskRun goes: a user, a group or both, neither of them blank. `Err` is a
/// `VAR_ERROR` for the node (or a trigger's reassignment that does nothing).
fn check_assignment(user_id: &Option<String>, user_group: &Option<String>) -> Result<(), String> {
    if user_id.as_deref().is_some_and(|u| u.trim().is_empty()) {
        return Err("Invalid user task assignment. UserId can't be empty".into());
    }
    if user_group.as_deref().is_some_and(|g| g.trim().is_empty()) {
        return Err("Invalid group task assignment. UserGroup can't be empty".into());
    }
    if user_id.is_none() && user_group.is_none() {
        return Err("Invalid user task assignment: neither a user_id nor a user_group".into());
    }
    Ok(())
}

/// `delay_seconds` of a trigger: a non-negative INT.
fn eval_delay(t: &UtActionTrigger, scope: &mut ThreadScope) -> Result<i64, String> {
    let Some(a) = &t.delay_seconds else {
        return Ok(0);
    };
    match expr::eval(a, scope)?.value {
        Some(Value::Int(s)) if s >= 0 => Ok(s),
        Some(Value::Int(s)) => Err(format!("delay_seconds must not be negative, got {s}")),
        other => Err(format!(
            "delay_seconds must be an INT, got {}",
            values::type_name(values::type_of(&VariableValue { value: other }))
        )),
    }
}

/// Arms the node's triggers of `hook`. A delay that cannot be evaluated is `Ok(Err(..))` and
/// nothing was armed: at arrival it fails the node (`VAR_SUB_ERROR`); at an assignment the
/// trigger is skipped, as in LittleHorse (the assignment itself stands).
fn arm_triggers(
    ctx: &mut Ctx,
    run: &RunState,
    thread: i32,
    node: &UserTaskNode,
    utr: &UserTaskRun,
    hook: ut_action_trigger::UtHook,
) -> HResult<Result<(), String>> {
    let id = utr.id.clone().unwrap_or_default();
    let (wf, guid) = run_key(&id);
    let wf: &str = &wf;
    let mut due = Vec::new();
    {
        let mut scope = ThreadScope::new(ctx, run, thread)?;
        for (i, t) in node.actions.iter().enumerate() {
            if t.hook() != hook || t.action.is_none() {
                continue;
            }
            match eval_delay(t, &mut scope) {
                Ok(delay) => due.push((i, crate::time::after_seconds(ctx.now_ms, delay))),
                Err(e) => return Ok(Err(format!("Failed calculating a trigger's delay: {e}"))),
            }
        }
    }
    for (i, at) in due {
        timers::arm(
            ctx,
            &action_timer_id(wf, guid, i),
            at,
            timer::Kind::UserTaskAction(UserTaskActionTimer {
                user_task_run_id: Some(id.clone()),
                action_index: i as i32,
                epoch: utr.epoch,
            }),
        )?;
    }
    Ok(Ok(()))
}

/// A thread arrives at a USER_TASK node: creates its UserTaskRun and arms its triggers.
/// `Ok(Err(..))` fails the NodeRun with that error; nothing was written then.
pub(crate) fn start(
    ctx: &mut Ctx,
    run: &RunState,
    thread: i32,
    node: &UserTaskNode,
    nr: &mut NodeRun,
) -> HResult<Result<(), (LhErrorType, String)>> {
    let Some(def) = find_def(ctx, &node.user_task_def_name, node.user_task_def_version)? else {
        return Ok(Err((
            LhErrorType::TaskError,
            format!(
                "UserTaskDef '{}' version {} was deleted",
                node.user_task_def_name,
                node.user_task_def_version.unwrap_or_default()
            ),
        )));
    };
    let evaluated = {
        let mut scope = ThreadScope::new(ctx, run, thread)?;
        eval_text(node.user_id.as_ref(), &mut scope).and_then(|u| {
            let g = eval_text(node.user_group.as_ref(), &mut scope)?;
            let notes = eval_text(node.notes.as_ref(), &mut scope)?;
            Ok((u, g, notes))
        })
    };
    let (user_id, user_group, notes) = match evaluated {
        Ok(v) => v,
        Err(e) => {
            return Ok(Err((
                LhErrorType::VarSubError,
                format!("Invalid variables when creating UserTaskRun: {e}"),
            )))
        }
    };
    if let Err(e) = check_assignment(&user_id, &user_group) {
        return Ok(Err((LhErrorType::VarError, e)));
    }
    let node_run_id = nr.id.clone().unwrap_or_default();
    let wf = node_run_id
        .wf_run_id
        .as_ref()
        .map(wf_run_key)
        .unwrap_or_default();
    let guid = crate::task::task_guid(node_run_id.thread_run_number, node_run_id.position);
    let id = UserTaskRunId {
        wf_run_id: Some(wf_run_id_of(&wf)),
        user_task_guid: guid,
    };
    let mut utr = UserTaskRun {
        id: Some(id.clone()),
        user_task_def_id: Some(UserTaskDefId {
            name: def.name.clone(),
            version: def.version,
        }),
        status: if user_id.is_some() {
            UserTaskRunStatus::Assigned
        } else {
            UserTaskRunStatus::Unassigned
        } as i32,
        notes,
        scheduled_time: Some(ts(ctx.now_ms)),
        node_run_id: Some(node_run_id),
        // The first assignment, below, is epoch 1, as in LittleHorse.
        epoch: 1,
        ..Default::default()
    };
    utr.events.push(event(
        ctx,
        user_task_event::Event::Assigned(user_task_event::UteAssigned {
            old_user_id: None,
            old_user_group: None,
            new_user_id: user_id.clone(),
            new_user_group: user_group.clone(),
        }),
    ));
    utr.user_id = user_id;
    utr.user_group = user_group;
    // Triggers first: a delay that cannot be evaluated fails the node before anything is
    // written (timers are armed only when every delay evaluated).
    if let Err(e) = arm_triggers(
        ctx,
        run,
        thread,
        node,
        &utr,
        ut_action_trigger::UtHook::OnArrival,
    )? {
        return Ok(Err((LhErrorType::VarSubError, e)));
    }
    if utr.user_id.is_some() {
        // A bad delay here skips the trigger (see `arm_triggers`).
        let _ = arm_triggers(
            ctx,
            run,
            thread,
            node,
            &utr,
            ut_action_trigger::UtHook::OnTaskAssigned,
        )?;
    }
    save_run(ctx, None, &utr)?;
    nr.node_type = Some(NodeType::UserTask(UserTaskNodeRun {
        user_task_run_id: Some(id),
    }));
    Ok(Ok(()))
}

// ---- Commands on a UserTaskRun ----

fn load(ctx: &Ctx, id: &Option<UserTaskRunId>) -> HResult<UserTaskRun> {
    let id = id
        .as_ref()
        .ok_or_else(|| invalid("missing user_task_run_id"))?;
    let wf = id
        .wf_run_id
        .as_ref()
        .ok_or_else(|| invalid("missing user_task_run_id.wf_run_id"))?;
    let wf = checked_wf_run_key(wf)?;
    if id.user_task_guid.is_empty() {
        return Err(invalid("missing user_task_run_id.user_task_guid").into());
    }
    get_run(ctx, id)?.ok_or_else(|| {
        Rejection::NotFound(format!("UserTaskRun {wf}/{} not found", id.user_task_guid)).into()
    })
}

fn is_finished(r: &UserTaskRun) -> bool {
    matches!(
        r.status(),
        UserTaskRunStatus::Done | UserTaskRunStatus::Cancelled
    )
}

fn refuse_finished(r: &UserTaskRun) -> Result<(), Rejection> {
    if is_finished(r) {
        return Err(Rejection::FailedPrecondition(format!(
            "UserTaskRun is {}",
            r.status().as_str_name()
        )));
    }
    Ok(())
}

/// The WfRun, NodeRun and spec node of a UserTaskRun, if they are all still there.
fn node_of(ctx: &Ctx, r: &UserTaskRun) -> HResult<Option<(RunState, NodeRun, UserTaskNode)>> {
    let Some(NodeRunId {
        wf_run_id: Some(wf),
        thread_run_number,
        position,
    }) = &r.node_run_id
    else {
        return Ok(None);
    };
    let wf = wf_run_key(wf);
    let Some(run) = RunState::load(ctx, &wf)? else {
        return Ok(None);
    };
    let Some(nr) = get_node(ctx, &wf, *thread_run_number, *position)? else {
        return Ok(None);
    };
    let Some(node::Node::UserTask(n)) = run.spec_node(&nr).and_then(|n| n.node.clone()) else {
        return Ok(None);
    };
    Ok(Some((run, nr, n)))
}

/// Assigns (or reassigns) a UserTaskRun, recording who held it before; assigning to a user arms
/// the node's `ON_TASK_ASSIGNED` triggers for the new epoch.
fn reassign(
    ctx: &mut Ctx,
    old: &UserTaskRun,
    user_id: Option<String>,
    user_group: Option<String>,
) -> HResult<()> {
    let mut r = old.clone();
    let new_user = user_id.is_some() && user_id != old.user_id;
    r.events.push(event(
        ctx,
        user_task_event::Event::Assigned(user_task_event::UteAssigned {
            old_user_id: r.user_id.clone(),
            old_user_group: r.user_group.clone(),
            new_user_id: user_id.clone(),
            new_user_group: user_group.clone(),
        }),
    ));
    r.status = if user_id.is_some() {
        UserTaskRunStatus::Assigned
    } else {
        UserTaskRunStatus::Unassigned
    } as i32;
    r.user_id = user_id;
    r.user_group = user_group;
    r.epoch = r.epoch.saturating_add(1);
    save_run(ctx, Some(old), &r)?;
    if new_user {
        if let Some((run, nr, node)) = node_of(ctx, &r)? {
            let thread = nr
                .id
                .as_ref()
                .map(|i| i.thread_run_number)
                .unwrap_or_default();
            // A bad delay skips the trigger (see `arm_triggers`).
            let _ = arm_triggers(
                ctx,
                &run,
                thread,
                &node,
                &r,
                ut_action_trigger::UtHook::OnTaskAssigned,
            )?;
        }
    }
    Ok(())
}

/// Checks in LittleHorse's order: the request, the run, its claim, its status.
pub fn assign(ctx: &mut Ctx, req: &AssignUserTaskRunRequest) -> HResult<()> {
    if req.user_id.is_none() && req.user_group.is_none() {
        return Err(invalid("must provide either user_group or user_id").into());
    }
    if let Some(u) = &req.user_id {
        check_local_name("user_id", u)?;
    }
    if let Some(g) = &req.user_group {
        check_local_name("user_group", g)?;
    }
    let r = load(ctx, &req.user_task_run_id)?;
    if let (Some(holder), false) = (&r.user_id, req.override_claim) {
        return Err(Rejection::FailedPrecondition(format!(
            "UserTaskRun already assigned to {holder}"
        ))
        .into());
    }
    refuse_finished(&r)?;
    reassign(ctx, &r, req.user_id.clone(), req.user_group.clone())
}

/// Checks `results` against the def's fields: every key a field, every value of exactly the
/// field's type (no conversion, as in LittleHorse), and, to complete, every required field given.
fn check_results(
    def: &UserTaskDef,
    results: &BTreeMap<String, VariableValue>,
    complete: bool,
) -> Result<(), Rejection> {
    for (name, v) in results {
        let Some(f) = def.fields.iter().find(|f| &f.name == name) else {
            return Err(invalid(format!(
                "UserTaskDef '{}' has no field '{name}'",
                def.name
            )));
        };
        let ty = VariableType::try_from(f.r#type).unwrap_or(VariableType::Str);
        if !values::admits(ty, v) {
            return Err(invalid(format!(
                "Field [name = {name}, type = {}] is not defined in UserTask schema or has \
                 different type (got {})",
                ty.as_str_name(),
                values::type_name(values::type_of(v))
            )));
        }
    }
    if complete {
        let missing: Vec<&str> = def
            .fields
            .iter()
            .filter(|f| f.required && results.get(&f.name).is_none_or(|v| v.value.is_none()))
            .map(|f| f.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(invalid(format!(
                "[{}] are mandatory fields",
                missing.join(", ")
            )));
        }
    }
    Ok(())
}

fn def_of(ctx: &Ctx, r: &UserTaskRun) -> HResult<Result<UserTaskDef, Rejection>> {
    let id = r.user_task_def_id.clone().unwrap_or_default();
    Ok(find_def(ctx, &id.name, Some(id.version))?.ok_or_else(|| {
        Rejection::FailedPrecondition(format!(
            "UserTaskDef '{}' version {} was deleted",
            id.name, id.version
        ))
    }))
}

/// Completing a DONE UserTaskRun again answers OK and changes nothing (a client's retry), as in
/// LittleHorse; completing a CANCELLED one is `FAILED_PRECONDITION` (LittleHorse answers OK
/// there too, which tells the caller its work counted when it did not).
pub fn complete(ctx: &mut Ctx, req: &CompleteUserTaskRunRequest) -> HResult<()> {
    check_local_name("user_id", &req.user_id)?;
    let old = load(ctx, &req.user_task_run_id)?;
    if old.status() == UserTaskRunStatus::Done {
        return Ok(());
    }
    refuse_finished(&old)?;
    let def = def_of(ctx, &old)??;
    check_results(&def, &req.results, true)?;
    let mut r = old.clone();
    if r.user_id.as_deref() != Some(req.user_id.as_str()) {
        r.events.push(event(
            ctx,
            user_task_event::Event::Assigned(user_task_event::UteAssigned {
                old_user_id: r.user_id.clone(),
                old_user_group: r.user_group.clone(),
                new_user_id: Some(req.user_id.clone()),
                new_user_group: r.user_group.clone(),
            }),
        ));
        r.user_id = Some(req.user_id.clone());
        r.epoch = r.epoch.saturating_add(1);
    }
    r.results = req.results.clone();
    r.status = UserTaskRunStatus::Done as i32;
    r.events.push(event(
        ctx,
        user_task_event::Event::Completed(user_task_event::UteCompleted {}),
    ));
    save_run(ctx, Some(&old), &r)?;
    finish_node(ctx, &r, None)
}

/// Cancelling a CANCELLED UserTaskRun again answers OK (a retry); a DONE one cannot be
/// cancelled (`FAILED_PRECONDITION`: its NodeRun already completed with the results).
pub fn cancel(ctx: &mut Ctx, req: &CancelUserTaskRunRequest) -> HResult<()> {
    let old = load(ctx, &req.user_task_run_id)?;
    if old.status() == UserTaskRunStatus::Cancelled {
        return Ok(());
    }
    refuse_finished(&old)?;
    cancel_run(ctx, &old)
}

fn cancel_run(ctx: &mut Ctx, old: &UserTaskRun) -> HResult<()> {
    let mut r = old.clone();
    r.status = UserTaskRunStatus::Cancelled as i32;
    r.events.push(event(
        ctx,
        user_task_event::Event::Cancelled(user_task_event::UteCancelled {
            message: "UserTaskRun was cancelled".to_string(),
        }),
    ));
    save_run(ctx, Some(old), &r)?;
    finish_node(ctx, &r, Some("User task cancelled".to_string()))
}

/// The UserTaskRun is done (`cancelled` is `None`) or cancelled: its NodeRun, if it still
/// waits, completes or fails, and the WfRun moves on.
fn finish_node(ctx: &mut Ctx, r: &UserTaskRun, cancelled: Option<String>) -> HResult<()> {
    let id = r.id.clone().unwrap_or_default();
    let (wf, guid) = run_key(&id);
    let wf: &str = &wf;
    let (wf, guid) = (wf.to_string(), guid.to_string());
    cancel_action_timers(ctx, &wf, &guid)?;
    let Some((mut run, mut nr, node)) = node_of(ctx, r)? else {
        return Ok(());
    };
    if !matches!(status(nr.status), LhStatus::Running | LhStatus::Halted) {
        return Ok(());
    }
    match cancelled {
        None => {
            interpreter::complete_node(ctx, &mut nr);
            put_node(ctx, &nr)?;
        }
        Some(message) => {
            let thread = nr
                .id
                .as_ref()
                .map(|i| i.thread_run_number)
                .unwrap_or_default();
            let exception = match &node.on_cancellation_exception_name {
                Some(a) => {
                    let mut scope = ThreadScope::new(ctx, &run, thread)?;
                    match expr::eval(a, &mut scope) {
                        Ok(VariableValue {
                            value: Some(Value::Str(s)),
                        }) if !s.is_empty() => Some(s),
                        _ => None,
                    }
                }
                None => None,
            };
            let name = exception
                .unwrap_or_else(|| LhErrorType::UserTaskCancelled.as_str_name().to_string());
            interpreter::fail_node(ctx, &mut nr, &name, message)?;
        }
    }
    if !is_terminal(run.wf_run.status()) {
        interpreter::advance(ctx, &mut run)?;
    }
    Ok(())
}

pub fn save_progress(ctx: &mut Ctx, req: &SaveUserTaskRunProgressRequest) -> HResult<UserTaskRun> {
    check_local_name("user_id", &req.user_id)?;
    let policy = SaveUserTaskRunAssignmentPolicy::try_from(req.policy)
        .map_err(|_| invalid(format!("unknown policy {}", req.policy)))?;
    let old = load(ctx, &req.user_task_run_id)?;
    if policy == SaveUserTaskRunAssignmentPolicy::FailIfClaimedByOther
        && old.user_id.as_deref().is_some_and(|u| u != req.user_id)
    {
        return Err(Rejection::FailedPrecondition(
            "UserTaskRun is assigned to another user".into(),
        )
        .into());
    }
    refuse_finished(&old)?;
    let def = def_of(ctx, &old)??;
    check_results(&def, &req.results, false)?;
    let mut r = old.clone();
    r.results = req.results.clone();
    r.events.push(event(
        ctx,
        user_task_event::Event::Saved(user_task_event::UteSaved {
            user_id: req.user_id.clone(),
            results: r.results.clone(),
        }),
    ));
    save_run(ctx, Some(&old), &r)?;
    Ok(r)
}

// ---- Comments ----

/// The comment ids ever added (numbered from 1 in order), and those deleted since.
fn comment_ids(r: &UserTaskRun) -> (BTreeSet<i32>, BTreeSet<i32>) {
    let (mut added, mut deleted) = (BTreeSet::new(), BTreeSet::new());
    for e in &r.events {
        match &e.event {
            Some(user_task_event::Event::CommentAdded(c)) => {
                added.insert(c.user_comment_id);
            }
            Some(user_task_event::Event::CommentDeleted(c)) => {
                deleted.insert(c.user_comment_id);
            }
            _ => {}
        }
    }
    (added, deleted)
}

fn check_comment(user_id: &str, comment: &str) -> Result<(), Rejection> {
    if user_id.trim().is_empty() {
        return Err(invalid("The userId must be provided."));
    }
    check_local_name("user_id", user_id)?;
    if comment.trim().is_empty() {
        return Err(invalid("The comment must be provided."));
    }
    if comment.len() > MAX_COMMENT_LEN {
        return Err(invalid(format!(
            "comment is {} bytes, at most {MAX_COMMENT_LEN} are allowed",
            comment.len()
        )));
    }
    Ok(())
}

pub fn put_comment(ctx: &mut Ctx, req: &PutUserTaskRunCommentRequest) -> HResult<UserTaskRun> {
    let old = load(ctx, &req.user_task_run_id)?;
    check_comment(&req.user_id, &req.comment)?;
    let added = comment_ids(&old).0.len();
    if added >= MAX_COMMENTS {
        return Err(Rejection::ResourceExhausted(format!(
            "UserTaskRun has {added} comments, at most {MAX_COMMENTS} are allowed"
        ))
        .into());
    }
    record_event(
        ctx,
        &old,
        user_task_event::Event::CommentAdded(user_task_event::UteCommented {
            user_comment_id: added as i32 + 1,
            user_id: req.user_id.clone(),
            comment: req.comment.clone(),
        }),
    )
}

/// Comment `id` exists and is not deleted; `doing` says what the caller wanted, for the message.
fn existing_comment(r: &UserTaskRun, id: i32, doing: &str) -> Result<(), Rejection> {
    if id == 0 {
        return Err(Rejection::FailedPrecondition(
            "The User Comment Id must be provided".into(),
        ));
    }
    let (added, deleted) = comment_ids(r);
    if !added.contains(&id) {
        return Err(Rejection::NotFound(format!(
            "No comment exists for the provided comment ID: {id}"
        )));
    }
    if deleted.contains(&id) {
        return Err(Rejection::FailedPrecondition(format!(
            "The specified comment cannot be {doing} because it has already been deleted."
        )));
    }
    Ok(())
}

pub fn edit_comment(ctx: &mut Ctx, req: &EditUserTaskRunCommentRequest) -> HResult<UserTaskRun> {
    let old = load(ctx, &req.user_task_run_id)?;
    check_comment(&req.user_id, &req.comment)?;
    existing_comment(&old, req.user_comment_id, "edited")?;
    record_event(
        ctx,
        &old,
        user_task_event::Event::CommentEdited(user_task_event::UteCommented {
            user_comment_id: req.user_comment_id,
            user_id: req.user_id.clone(),
            comment: req.comment.clone(),
        }),
    )
}

pub fn delete_comment(
    ctx: &mut Ctx,
    req: &DeleteUserTaskRunCommentRequest,
) -> HResult<UserTaskRun> {
    let old = load(ctx, &req.user_task_run_id)?;
    check_local_name("user_id", &req.user_id)?;
    existing_comment(&old, req.user_comment_id, "deleted")?;
    record_event(
        ctx,
        &old,
        user_task_event::Event::CommentDeleted(user_task_event::UteCommentDeleted {
            user_comment_id: req.user_comment_id,
            user_id: req.user_id.clone(),
        }),
    )
}

// ---- Triggers, output, deletion ----

/// An action trigger fell due. Ignored when the UserTaskRun is finished or gone, its NodeRun no
/// longer waits, or its WfRun has ended. A trigger acts on the task of a halted thread (an
/// interrupt, `StopWfRun`) as an event's timeout does: the deadline is the task's, not the
/// thread's, and skipping it would leave the task open after the thread resumes.
pub fn fire_action(ctx: &mut Ctx, t: &UserTaskActionTimer) -> HResult<()> {
    let Some(id) = &t.user_task_run_id else {
        return Ok(());
    };
    let Some(r) = get_run(ctx, id)? else {
        return Ok(());
    };
    if is_finished(&r) {
        return Ok(());
    }
    let Some((run, nr, node)) = node_of(ctx, &r)? else {
        return Ok(());
    };
    if !matches!(status(nr.status), LhStatus::Running | LhStatus::Halted)
        || is_terminal(run.wf_run.status())
    {
        return Ok(());
    }
    let Some(trigger) = usize::try_from(t.action_index)
        .ok()
        .and_then(|i| node.actions.get(i))
    else {
        return Ok(());
    };
    let thread = nr
        .id
        .as_ref()
        .map(|i| i.thread_run_number)
        .unwrap_or_default();
    match &trigger.action {
        Some(ut_action_trigger::Action::Cancel(_)) => cancel_run(ctx, &r),
        // A reassignment is for a task someone holds and has not touched since: it does nothing
        // once the task was assigned again (its epoch moved) or released to a group.
        Some(ut_action_trigger::Action::Reassign(a)) => {
            if r.status() != UserTaskRunStatus::Assigned || t.epoch != r.epoch {
                return Ok(());
            }
            let evaluated = {
                let mut scope = ThreadScope::new(ctx, &run, thread)?;
                eval_text(a.user_id.as_ref(), &mut scope).and_then(|u| {
                    let g = eval_text(a.user_group.as_ref(), &mut scope)?;
                    check_assignment(&u, &g)?;
                    Ok((u, g))
                })
            };
            match evaluated {
                Ok((u, g)) => reassign(ctx, &r, u, g),
                Err(e) => {
                    let mut nr = nr;
                    interpreter::fail_node(
                        ctx,
                        &mut nr,
                        LhErrorType::VarSubError.as_str_name(),
                        format!("Failed calculating new assignment for UserTaskRun: {e}"),
                    )?;
                    let mut run = run;
                    interpreter::advance(ctx, &mut run)
                }
            }
        }
        // A reminder: a TaskRun for task workers, in the thread's scope, whose outcome changes
        // nothing in the WfRun. Its guid is the UserTaskRun's guid and the number of the event
        // that records it, so each firing has its own.
        Some(ut_action_trigger::Action::Task(a)) => {
            let Some(task) = &a.task else { return Ok(()) };
            // A reminder armed by an assignment is for that assignment. A new assignment re-arms
            // the same timer, so this only guards a timer armed before the epoch moved.
            if trigger.hook() == ut_action_trigger::UtHook::OnTaskAssigned && t.epoch != r.epoch {
                return Ok(());
            }
            let number = r.events.len() as i32;
            let ut_guid = id.user_task_guid.clone();
            let source =
                task_run_source::TaskRunSource::UserTaskTrigger(UserTaskTriggerReference {
                    node_run_id: nr.id.clone(),
                    user_task_event_number: number,
                    user_id: r.user_id.clone(),
                    user_group: r.user_group.clone(),
                });
            let guid = format!("{ut_guid}-{number}");
            match crate::task::start_run(ctx, &run, thread, task, guid, source)? {
                Ok(task_run) => record_event(
                    ctx,
                    &r,
                    user_task_event::Event::TaskExecuted(user_task_event::UteTaskExecuted {
                        task_run: Some(task_run),
                    }),
                )
                .map(|_| ()),
                Err((kind, e)) => {
                    let mut nr = nr;
                    interpreter::fail_node(
                        ctx,
                        &mut nr,
                        kind.as_str_name(),
                        format!("Failed scheduling the reminder task: {e}"),
                    )?;
                    let mut run = run;
                    interpreter::advance(ctx, &mut run)
                }
            }
        }
        None => Ok(()),
    }
}

/// What a completed USER_TASK NodeRun produced: the results, as a JSON_OBJ by field name.
pub fn output(ctx: &Ctx, id: &UserTaskRunId) -> HResult<Option<VariableValue>> {
    let Some(r) = get_run(ctx, id)? else {
        return Ok(None);
    };
    let mut obj = serde_json::Map::new();
    for (k, v) in &r.results {
        obj.insert(
            k.clone(),
            expr::to_json(v).unwrap_or(serde_json::Value::Null),
        );
    }
    Ok(Some(values::json_obj(
        serde_json::Value::Object(obj).to_string(),
    )))
}

/// The UserTaskRuns of WfRun `wf`, by guid.
fn runs_of(ctx: &Ctx, wf: &str) -> HResult<Vec<UserTaskRun>> {
    let mut runs = Vec::new();
    for row in ctx
        .tables
        .user_task_runs
        .open()?
        .range((wf, "")..=(wf, "\u{10FFFF}"))?
    {
        let (_, v) = row?;
        runs.push(codec::decode::<UserTaskRun>(v.value())?);
    }
    Ok(runs)
}

/// A rescued WfRun's open UserTaskRuns get their triggers back: a trigger that fell due while
/// the WfRun had ended was ignored and its timer is gone. Each is armed again at its original
/// due time, or now if that has passed: an ON_ARRIVAL one for the arrival's epoch (1), an
/// ON_TASK_ASSIGNED one, if the task is assigned, for the current epoch from the last
/// assignment. Arming replaces a timer still pending under the same id, and one whose action
/// already happened does nothing when it fires (the task is settled, or its epoch moved).
pub fn rearm_all_of(ctx: &mut Ctx, wf: &str) -> HResult<()> {
    for r in runs_of(ctx, wf)?.into_iter().filter(|r| !is_finished(r)) {
        let Some((run, nr, node)) = node_of(ctx, &r)? else {
            continue;
        };
        let thread = nr
            .id
            .as_ref()
            .map(|i| i.thread_run_number)
            .unwrap_or_default();
        let arrived = r
            .scheduled_time
            .as_ref()
            .map_or(ctx.now_ms, crate::time::ms);
        let assigned = r
            .events
            .iter()
            .rev()
            .find(|e| matches!(e.event, Some(user_task_event::Event::Assigned(_))))
            .and_then(|e| e.time.as_ref())
            .map_or(arrived, crate::time::ms);
        let id = r.id.clone().unwrap_or_default();
        let mut due = Vec::new();
        {
            let mut scope = ThreadScope::new(ctx, &run, thread)?;
            for (i, t) in node.actions.iter().enumerate() {
                let (from, epoch) = match t.hook() {
                    ut_action_trigger::UtHook::OnArrival => (arrived, 1),
                    ut_action_trigger::UtHook::OnTaskAssigned
                        if r.status() == UserTaskRunStatus::Assigned =>
                    {
                        (assigned, r.epoch)
                    }
                    _ => continue,
                };
                if t.action.is_none() {
                    continue;
                }
                if let Ok(delay) = eval_delay(t, &mut scope) {
                    let at = crate::time::after_seconds(from, delay).max(ctx.now_ms);
                    due.push((i, at, epoch));
                }
            }
        }
        let (wf, guid) = run_key(&id);
        let wf: &str = &wf;
        let (wf, guid) = (wf.to_string(), guid.to_string());
        for (i, at, epoch) in due {
            timers::arm(
                ctx,
                &action_timer_id(&wf, &guid, i),
                at,
                timer::Kind::UserTaskAction(UserTaskActionTimer {
                    user_task_run_id: Some(id.clone()),
                    action_index: i as i32,
                    epoch,
                }),
            )?;
        }
    }
    Ok(())
}

/// Removes a WfRun's UserTaskRuns, their index rows and triggers.
pub fn delete_all_of(ctx: &mut Ctx, wf: &str) -> HResult<()> {
    for r in runs_of(ctx, wf)? {
        let guid = r.id.clone().unwrap_or_default().user_task_guid;
        cancel_action_timers(ctx, wf, &guid)?;
        index_rows(ctx, &r, false)?;
        ctx.tables
            .user_task_runs
            .open_mut()?
            .remove((wf, guid.as_str()))?;
    }
    Ok(())
}
