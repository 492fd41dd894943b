//! RunWf, StopWfRun, ResumeWfRun, RescueThreadRun, DeleteWfRun (semantics §8).

use std::collections::{BTreeMap, BTreeSet};

use halter_api::limits::MAX_VALUE_BYTES;
use halter_api::littlehorse::{
    DeleteWfRunRequest, LhStatus, RescueThreadRunRequest, ResumeWfRunRequest, RunWfRequest,
    StopWfRunRequest, ThreadType, Variable, VariableValue, WfRun, WfRunId, WfSpec,
};
use halter_api::names::check_name;
use halter_api::values;
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
    check_name("WfRun id", id)?;
    if req.parent_wf_run_id.is_some() {
        return Err(invalid("parent_wf_run_id (child WfRuns) is not supported yet").into());
    }
    if codec::get::<_, WfRun, _>(ctx.tables.wf_runs.open()?, id)?.is_some() {
        return Err(Rejection::AlreadyExists(format!("WfRun '{id}' already exists")).into());
    }
    let initial = initial_variables(&spec, &req.variables)?;

    let wf_run_id = WfRunId {
        id: id.to_string(),
        parent_wf_run_id: None,
    };
    let wf_run = WfRun {
        id: Some(wf_run_id.clone()),
        wf_spec_id: spec.id.clone(),
        status: LhStatus::Running as i32,
        greatest_threadrun_number: 0,
        start_time: Some(ts(ctx.now_ms)),
        ..Default::default()
    };
    let spec_name = spec.id.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    ctx.tables
        .wf_runs_by_spec
        .open_mut()?
        .insert((spec_name.as_str(), ctx.now_ms, id), ())?;
    create_variables(ctx, &wf_run_id, spec.id.clone(), 0, initial)?;
    let entry_name = spec.entrypoint_thread_name.clone();
    let mut run = RunState {
        wf_run,
        threads: Default::default(),
        spec,
    };
    interpreter::start_thread(ctx, &mut run, 0, &entry_name, None, ThreadType::Entrypoint)?;
    interpreter::advance(ctx, &mut run)?;
    Ok(run.wf_run.clone())
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
    check_name("WfRun id", &id.id)?;
    let run = RunState::load(ctx, &id.id)?
        .ok_or_else(|| Rejection::NotFound(format!("WfRun '{}' not found", id.id)))?;
    if !run.threads.contains_key(&thread) {
        return Err(
            Rejection::NotFound(format!("WfRun '{}' has no thread {thread}", id.id)).into(),
        );
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
    check_name("WfRun id", &id.id)?;
    let mut run = RunState::load(ctx, &id.id)?
        .ok_or_else(|| Rejection::NotFound(format!("Couldn't find WfRun '{}'", id.id)))?;
    let t = req.thread_run_number;
    interpreter::rescue::check(ctx, &run, t, req.skip_current_node)?;
    interpreter::rescue::rescue(ctx, &mut run, t, req.skip_current_node)?;
    interpreter::advance(ctx, &mut run)?;
    // Once per command, after `advance` saved the rescued state: the WfRun's end (or a claim
    // that found a stopped thread's attempt) took queued attempts out of the queue, and its
    // open user tasks' triggers may have been ignored meanwhile.
    crate::task::requeue_all_of(ctx, &id.id)?;
    crate::user_task::rearm_all_of(ctx, &id.id)?;
    Ok(run.wf_run.clone())
}

/// Deleting is idempotent. It removes the WfRun, its threads, NodeRuns, Variables, TaskRuns,
/// UserTaskRuns,
/// every ExternalEvent put for its id, and their timers.
pub fn delete(ctx: &mut Ctx, req: &DeleteWfRunRequest) -> HResult<()> {
    let id = req.id.as_ref().ok_or_else(|| invalid("missing id"))?;
    check_name("WfRun id", &id.id)?;
    delete_by_id(ctx, &id.id)
}

pub fn delete_by_id(ctx: &mut Ctx, wf: &str) -> HResult<()> {
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
