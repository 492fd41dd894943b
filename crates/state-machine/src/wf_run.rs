//! RunWf, StopWfRun, ResumeWfRun, RescueThreadRun, DeleteWfRun (semantics §8).

use std::collections::{BTreeMap, BTreeSet};

use halter_api::limits::MAX_VALUE_BYTES;
use halter_api::littlehorse::{wf_run::ParentTriggerReference, WfRunVariableAccessLevel};
use halter_api::littlehorse::{
    DeleteWfRunRequest, LhStatus, RescueThreadRunRequest, ResumeWfRunRequest, RunWfRequest,
    StopWfRunRequest, ThreadType, Variable, VariableValue, WfRun, WfRunId, WfSpec,
};
use halter_api::names::check_name;
use halter_api::values;
use halter_api::wf_run_id::{checked_wf_run_key, CHILD_SEPARATOR};
use halter_storage::codec;
use prost::Message;
use redb::ReadableTable;

use crate::ctx::Ctx;
use crate::error::{invalid, HResult, Rejection};
use crate::external_event;
use crate::interpreter;
use crate::run_state::{create_variables, NewVariable, RunState};
use crate::time::{ms, ts};
use crate::timers;

pub fn is_terminal(s: LhStatus) -> bool {
    matches!(
        s,
        LhStatus::Completed | LhStatus::Error | LhStatus::Exception
    )
}

pub(crate) fn find_spec(ctx: &Ctx, req: &RunWfRequest) -> HResult<WfSpec> {
    check_name("WfSpec name", &req.wf_spec_name)?;
    let not_found = || Rejection::NotFound(format!("WfSpec '{}' not found", req.wf_spec_name));
    let spec = match (req.major_version, req.revision) {
        (None, Some(_)) => return Err(invalid("revision given without major_version").into()),
        (Some(m), _) if m < 0 => return Err(invalid("major_version must not be negative").into()),
        (_, Some(r)) if r < 0 => return Err(invalid("revision must not be negative").into()),
        (Some(m), Some(r)) => codec::get(
            ctx.tables.wf_specs.open()?,
            (req.wf_spec_name.as_str(), m as u32, r as u32),
        )?,
        (Some(m), None) => crate::wf_spec::latest(
            ctx.tables.wf_specs.open()?,
            &req.wf_spec_name,
            Some(m as u32),
        )?,
        (None, None) => {
            crate::wf_spec::latest(ctx.tables.wf_specs.open()?, &req.wf_spec_name, None)?
        }
    };
    Ok(spec.ok_or_else(not_found)?)
}

pub fn run(ctx: &mut Ctx, req: &RunWfRequest) -> HResult<WfRun> {
    let spec = find_spec(ctx, req)?;
    // The receiving node generates a missing id before proposing, so the log always has one.
    let id = req
        .id
        .as_deref()
        .ok_or_else(|| invalid("missing id (the server fills it in before proposing)"))?;
    let wf_run_id = WfRunId {
        id: id.to_string(),
        parent_wf_run_id: req.parent_wf_run_id.clone().map(Box::new),
    };
    let key = checked_wf_run_key(&wf_run_id)?;
    check_parent(ctx, &spec, req.parent_wf_run_id.as_ref())?;
    if codec::get::<_, WfRun, _>(ctx.tables.wf_runs.open()?, key.as_str())?.is_some() {
        return Err(Rejection::AlreadyExists(format!("WfRun '{key}' already exists")).into());
    }
    let initial = initial_variables(&spec, &req.variables)?;
    Ok(start(ctx, spec, wf_run_id, initial, None)?.wf_run)
}

/// A child WfRun's spec names its parent's spec, and the parent exists (LittleHorse's rules,
/// with its codes: a missing parent is FAILED_PRECONDITION).
pub(crate) fn check_parent(ctx: &Ctx, spec: &WfSpec, parent: Option<&WfRunId>) -> HResult<()> {
    let name = spec
        .id
        .as_ref()
        .map(|s| s.name.as_str())
        .unwrap_or_default();
    match (&spec.parent_wf_spec, parent) {
        (None, None) => Ok(()),
        (Some(p), None) => Err(invalid(format!(
            "WfSpec '{name}' requires a parent WfRun id from WfSpec '{}'",
            p.wf_spec_name
        ))
        .into()),
        (None, Some(_)) => {
            Err(invalid(format!("WfSpec '{name}' does not refer to a parent WfSpec")).into())
        }
        (Some(p), Some(parent)) => {
            let key = checked_wf_run_key(parent)?;
            let Some(found) = codec::get::<_, WfRun, _>(ctx.tables.wf_runs.open()?, key.as_str())?
            else {
                return Err(Rejection::FailedPrecondition(format!(
                    "parent WfRun '{key}' (of WfSpec '{}') not found",
                    p.wf_spec_name
                ))
                .into());
            };
            let parent_spec = found.wf_spec_id.map(|s| s.name).unwrap_or_default();
            if parent_spec != p.wf_spec_name {
                return Err(invalid(format!(
                    "parent WfRun '{key}' is a run of '{parent_spec}', but WfSpec '{name}' needs a run of '{}'",
                    p.wf_spec_name
                ))
                .into());
            }
            Ok(())
        }
    }
}

/// Creates the WfRun `id` of `spec` with its entrypoint's `initial` variables and runs it until
/// it waits or ends. Every check is the caller's: this only writes.
pub(crate) fn start(
    ctx: &mut Ctx,
    spec: WfSpec,
    id: WfRunId,
    initial: Vec<NewVariable>,
    parent_trigger: Option<ParentTriggerReference>,
) -> HResult<RunState> {
    let wf_run = WfRun {
        id: Some(id.clone()),
        wf_spec_id: spec.id.clone(),
        status: LhStatus::Running as i32,
        greatest_threadrun_number: 0,
        start_time: Some(ts(ctx.now_ms)),
        parent_trigger,
        ..Default::default()
    };
    let mut run = RunState::new(wf_run, Default::default(), spec);
    let spec_name = run
        .spec
        .id
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    ctx.tables
        .wf_runs_by_spec
        .open_mut()?
        .insert((spec_name.as_str(), ctx.now_ms, run.id()), ())?;
    create_variables(ctx, &id, run.spec.id.clone(), 0, initial)?;
    let entry_name = run.spec.entrypoint_thread_name.clone();
    interpreter::start_thread(ctx, &mut run, 0, &entry_name, None, ThreadType::Entrypoint)?;
    interpreter::advance(ctx, &mut run)?;
    Ok(run)
}

/// The entrypoint thread's variables for a run of `spec` given `variables`: each declared one
/// with its given value (checked against its type and the size limit) or its default. A
/// missing required variable or an undeclared one is refused.
pub(crate) fn initial_variables(
    spec: &WfSpec,
    variables: &BTreeMap<String, VariableValue>,
) -> Result<Vec<NewVariable>, Rejection> {
    let entry = spec
        .thread_specs
        .get(&spec.entrypoint_thread_name)
        .cloned()
        .unwrap_or_default();
    let mut declared = BTreeSet::new();
    let mut initial = Vec::new();
    for tv in &entry.variable_defs {
        let Some(def) = &tv.var_def else { continue };
        if tv.access_level == WfRunVariableAccessLevel::InheritedVar as i32 {
            // It lives in the parent WfRun; this run reads and writes the parent's.
            if variables.contains_key(&def.name) {
                return Err(invalid(format!(
                    "variable '{}' is inherited from the parent WfRun and cannot be given",
                    def.name
                )));
            }
            continue;
        }
        declared.insert(def.name.as_str());
        let ty = values::declared_type(def)
            .map_err(|w| invalid(format!("variable '{}': {w}", def.name)))?;
        let value = match variables.get(&def.name) {
            Some(v) => {
                if v.encoded_len() > MAX_VALUE_BYTES {
                    return Err(Rejection::ResourceExhausted(format!(
                        "variable '{}' is larger than {MAX_VALUE_BYTES} bytes",
                        def.name
                    )));
                }
                if !values::admits(ty, v) {
                    return Err(invalid(format!(
                        "variable '{}' must be {}, got {}",
                        def.name,
                        ty.as_str_name(),
                        values::type_name(values::type_of(v))
                    )));
                }
                v.clone()
            }
            None if tv.required => {
                return Err(invalid(format!(
                    "required variable '{}' is missing",
                    def.name
                )))
            }
            None => def.default_value.clone().unwrap_or_default(),
        };
        initial.push(NewVariable::of(tv, value));
    }
    if let Some(unknown) = variables.keys().find(|k| !declared.contains(k.as_str())) {
        return Err(invalid(format!(
            "variable '{unknown}' is not declared by thread '{}'",
            spec.entrypoint_thread_name
        )));
    }
    Ok(initial)
}

fn load_for(ctx: &Ctx, id: Option<&WfRunId>, thread: i32) -> HResult<RunState> {
    let id = id.ok_or_else(|| invalid("missing wf_run_id"))?;
    let key = checked_wf_run_key(id)?;
    let run = RunState::load(ctx, &key)?
        .ok_or_else(|| Rejection::NotFound(format!("WfRun '{key}' not found")))?;
    if !run.threads.contains_key(&thread) {
        return Err(Rejection::NotFound(format!("WfRun '{key}' has no thread {thread}")).into());
    }
    Ok(run)
}

/// Stopping a terminated WfRun is refused; stopping a halted one again is a no-op.
pub fn stop(ctx: &mut Ctx, req: &StopWfRunRequest) -> HResult<()> {
    let mut run = load_for(ctx, req.wf_run_id.as_ref(), req.thread_run_number)?;
    if is_terminal(run.wf_run.status()) {
        return Err(Rejection::FailedPrecondition(format!(
            "WfRun '{}' is already {}",
            run.id(),
            run.wf_run.status().as_str_name()
        ))
        .into());
    }
    interpreter::halt(ctx, &mut run, req.thread_run_number)
}

/// Resuming a thread that is not halted is a no-op.
pub fn resume(ctx: &mut Ctx, req: &ResumeWfRunRequest) -> HResult<()> {
    let mut run = load_for(ctx, req.wf_run_id.as_ref(), req.thread_run_number)?;
    interpreter::resume(ctx, &mut run, req.thread_run_number)
}

/// RescueThreadRun: a thread in ERROR runs its failed node again, or moves past it (see
/// [`interpreter::rescue`]). Answers the WfRun as the rescue left it.
pub fn rescue(ctx: &mut Ctx, req: &RescueThreadRunRequest) -> HResult<WfRun> {
    let id = req
        .wf_run_id
        .as_ref()
        .ok_or_else(|| invalid("missing wf_run_id"))?;
    let key = checked_wf_run_key(id)?;
    let mut run = RunState::load(ctx, &key)?
        .ok_or_else(|| Rejection::NotFound(format!("Couldn't find WfRun '{key}'")))?;
    let t = req.thread_run_number;
    interpreter::rescue::check(ctx, &run, t, req.skip_current_node)?;
    interpreter::rescue::rescue(ctx, &mut run, t, req.skip_current_node)?;
    interpreter::advance(ctx, &mut run)?;
    // Once per command, after `advance` saved the rescued state: the WfRun's end (or a claim
    // that found a stopped thread's attempt) took queued attempts out of the queue, and its
    // open user tasks' triggers may have been ignored meanwhile.
    crate::task::requeue_all_of(ctx, &key)?;
    crate::user_task::rearm_all_of(ctx, &key)?;
    Ok(run.wf_run.clone())
}

/// Deleting is idempotent. It removes the WfRun, its threads, NodeRuns, Variables, TaskRuns,
/// UserTaskRuns,
/// every ExternalEvent put for its id, and their timers; and the same for its child WfRuns,
/// which cannot outlive it (their inherited variables are its).
pub fn delete(ctx: &mut Ctx, req: &DeleteWfRunRequest) -> HResult<()> {
    let id = req.id.as_ref().ok_or_else(|| invalid("missing id"))?;
    let key = checked_wf_run_key(id)?;
    delete_by_id(ctx, &key)
}

pub fn delete_by_id(ctx: &mut Ctx, wf: &str) -> HResult<()> {
    for child in descendants(ctx, wf)? {
        delete_one(ctx, &child)?;
    }
    delete_one(ctx, wf)
}

/// The keys of every WfRun below `wf` (children, grandchildren...): they all start with
/// `{wf}_`, and `` ` `` is the character after `_`.
fn descendants(ctx: &Ctx, wf: &str) -> HResult<Vec<String>> {
    let (lo, hi) = (
        format!("{wf}{CHILD_SEPARATOR}"),
        format!("{wf}{}", (CHILD_SEPARATOR as u8 + 1) as char),
    );
    let mut out = Vec::new();
    for row in ctx.tables.wf_runs.open()?.range(lo.as_str()..hi.as_str())? {
        out.push(row?.0.value().to_string());
    }
    Ok(out)
}

fn delete_one(ctx: &mut Ctx, wf: &str) -> HResult<()> {
    // A parent waiting for this run fails its node instead of waiting forever.
    interpreter::child_wf_runs::wake_parent_of(ctx, wf);
    // The scan below must see every NodeRun, and none written earlier may be written back
    // after the rows are removed; nothing below writes a NodeRun.
    ctx.flush_nodes()?;
    if let Some(run) = codec::get::<_, WfRun, _>(ctx.tables.wf_runs.open()?, wf)? {
        let spec = run.wf_spec_id.map(|s| s.name).unwrap_or_default();
        let start = run.start_time.as_ref().map(ms).unwrap_or_default();
        ctx.tables
            .wf_runs_by_spec
            .open_mut()?
            .remove((spec.as_str(), start, wf))?;
    }
    ctx.tables.wf_runs.open_mut()?.remove(wf)?;
    ctx.tables
        .thread_runs
        .open_mut()?
        .retain_in((wf, 0u32)..=(wf, u32::MAX), |_, _| false)?;
    let mut node_keys = Vec::new();
    for row in ctx
        .tables
        .node_runs
        .open()?
        .range((wf, 0u32, 0u32)..=(wf, u32::MAX, u32::MAX))?
    {
        let (k, _) = row?;
        let (_, t, p) = k.value();
        node_keys.push((t, p));
    }
    for (t, p) in node_keys {
        if let Some(nr) = crate::run_state::get_node(ctx, wf, t as i32, p as i32)? {
            if let Some(halter_api::littlehorse::node_run::NodeType::ExternalEvent(ee)) =
                &nr.node_type
            {
                if let (Some(key), Some(def)) = (&ee.correlation_key, &ee.external_event_def_id) {
                    crate::correlated_event::forget_waiter(
                        ctx, wf, &def.name, key, t as i32, p as i32,
                    )?;
                }
            }
        }
        ctx.tables.node_runs.open_mut()?.remove((wf, t, p))?;
        timers::cancel(ctx, &timers::node_run_timer_id(wf, t as i32, p as i32))?;
    }
    let mut vars = Vec::new();
    for row in ctx
        .tables
        .variables
        .open()?
        .range((wf, 0u32, "")..(wf, u32::MAX, ""))?
    {
        let (_, v) = row?;
        vars.push(codec::decode::<Variable>(v.value())?);
    }
    for v in &vars {
        crate::variable_index::remove(ctx, v)?;
    }
    ctx.tables
        .variables
        .open_mut()?
        .retain_in((wf, 0u32, "")..(wf, u32::MAX, ""), |_, _| false)?;
    external_event::delete_all_of(ctx, wf)?;
    crate::workflow_event::delete_all_of(ctx, wf)?;
    crate::task::delete_all_of(ctx, wf)?;
    crate::user_task::delete_all_of(ctx, wf)?;
    timers::cancel(ctx, &timers::wf_run_retention_timer_id(wf))?;
    Ok(())
}
