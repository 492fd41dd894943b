//! Child WfRuns: RUN_CHILD_WF and WAIT_FOR_CHILD_WF nodes, and waking a parent.
//!
//! A RUN_CHILD_WF node starts a WfRun whose id nests this one's (stored under
//! `{parent}_{child}`, see `halter_api::wf_run_id`) in the same command, and completes at
//! once with the child's WfRunId as its output. A WAIT_FOR_CHILD_WF node waits until that
//! child ends: COMPLETED gives the child's entrypoint output; ERROR fails the node with
//! CHILD_FAILURE; EXCEPTION fails it with the child's own failure, so a parent's handler can
//! catch a business exception by name. A child's end (or deletion) queues its parent in
//! [`Ctx::wakes`], and [`wake_parents`] advances it once the command's own work is done.

use halter_api::limits::{MAX_CHILD_WF_RUNS_PER_COMMAND, MAX_CHILD_WF_RUN_DEPTH};
use halter_api::littlehorse::{
    node_run::NodeType, run_child_wf_node::WfSpec as SpecToRun, variable_value::Value,
    wf_run::ParentTriggerReference, Failure, LhErrorType, LhStatus, NodeRun, RunChildWfNode,
    RunChildWfNodeRun, ThreadRun, VariableValue, WaitForChildWfNode, WaitForChildWfNodeRun, WfRun,
    WfRunId,
};
use halter_api::names::check_name;
use halter_api::wf_run_id::{key_of, parent_key, wf_run_key, CHILD_SEPARATOR};
use halter_storage::codec;

use super::{complete_node, fail_node, fail_node_with, ThreadScope};
use crate::ctx::Ctx;
use crate::error::HResult;
use crate::expr;
use crate::run_state::{get_node, put_node, status, RunState};
use crate::wf_run::is_terminal;

/// Why a node failed: its failure name and message.
type NodeFailure = (String, String);

fn child_failure(msg: String) -> NodeFailure {
    (LhErrorType::ChildFailure.as_str_name().to_string(), msg)
}

fn var_sub(msg: String) -> NodeFailure {
    (LhErrorType::VarSubError.as_str_name().to_string(), msg)
}

/// Enters a RUN_CHILD_WF node: starts the child and completes `nr`, or fails it.
pub(crate) fn run_child(
    ctx: &mut Ctx,
    run: &RunState,
    thread: i32,
    node: &RunChildWfNode,
    nr: &mut NodeRun,
) -> HResult<()> {
    match start_child(ctx, run, thread, node, nr)? {
        Ok(()) => {
            complete_node(ctx, nr);
            put_node(ctx, nr)
        }
        Err((name, msg)) => fail_node(ctx, nr, &name, msg),
    }
}

fn start_child(
    ctx: &mut Ctx,
    run: &RunState,
    thread: i32,
    node: &RunChildWfNode,
    nr: &mut NodeRun,
) -> HResult<Result<(), NodeFailure>> {
    let evaluated = {
        let mut scope = ThreadScope::new(ctx, run, thread)?;
        let inputs = node
            .inputs
            .iter()
            .map(|(k, a)| expr::eval(a, &mut scope).map(|v| (k.clone(), v)))
            .collect::<Result<std::collections::BTreeMap<_, _>, _>>()
            .map_err(|e| format!("Failed constructing input variables for child workflow: {e}"));
        let spec_name = match &node.wf_spec {
            Some(SpecToRun::WfSpecName(n)) => Ok(n.clone()),
            Some(SpecToRun::WfSpecVar(a)) => match expr::eval(a, &mut scope) {
                Ok(VariableValue {
                    value: Some(Value::Str(s)),
                }) => Ok(s),
                Ok(_) => Err("wf_spec_var must be a STR naming a WfSpec".to_string()),
                Err(e) => Err(format!("wf_spec_var: {e}")),
            },
            None => Err("no WfSpec to run".to_string()),
        };
        let child_id = match &node.child_id {
            None => Ok(None),
            Some(a) => match expr::eval(a, &mut scope) {
                Ok(VariableValue {
                    value: Some(Value::Str(s)),
                }) => Ok(Some(s)),
                Ok(_) => Err("child_id must be a STR".to_string()),
                Err(e) => Err(format!("child_id: {e}")),
            },
        };
        (inputs, spec_name, child_id)
    };
    let (inputs, spec_name, child_id) = match evaluated {
        (Ok(i), Ok(s), Ok(c)) => (i, s, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Ok(Err(var_sub(e))),
    };
    if run.id().matches(CHILD_SEPARATOR).count() >= MAX_CHILD_WF_RUN_DEPTH {
        return Ok(Err(child_failure(format!(
            "child WfRuns nest at most {MAX_CHILD_WF_RUN_DEPTH} deep"
        ))));
    }
    if ctx.children_started >= MAX_CHILD_WF_RUNS_PER_COMMAND {
        return Ok(Err(child_failure(format!(
            "one command starts at most {MAX_CHILD_WF_RUNS_PER_COMMAND} child WfRuns"
        ))));
    }
    let major = (node.major_version >= 0).then_some(node.major_version as u32);
    let Some(spec) = crate::wf_spec::latest(ctx.tables.wf_specs.open()?, &spec_name, major)? else {
        let version = major.map(|m| format!(" with major version {m}"));
        return Ok(Err(child_failure(format!(
            "Couldn't find WfSpec '{spec_name}'{}",
            version.unwrap_or_default()
        ))));
    };
    // Without a child_id, the child's id is the node's own place: unique in this WfRun, and
    // the same on every replica.
    let own = child_id.unwrap_or_else(|| {
        let id = nr.id.clone().unwrap_or_default();
        crate::task::task_guid(id.thread_run_number, id.position)
    });
    if let Err(e) = check_name("child WfRun id", &own) {
        return Ok(Err(var_sub(e.to_string())));
    }
    let id = WfRunId {
        id: own,
        parent_wf_run_id: Some(Box::new(run.wf_run_id())),
    };
    let key = wf_run_key(&id);
    if codec::get::<_, WfRun, _>(ctx.tables.wf_runs.open()?, key.as_str())?.is_some() {
        return Ok(Err(child_failure(format!("WfRun '{key}' already exists"))));
    }
    let initial = match crate::wf_run::initial_variables(&spec, &inputs) {
        Ok(v) => v,
        Err(e) => return Ok(Err(var_sub(format!("child WfRun inputs: {e}")))),
    };
    nr.node_type = Some(NodeType::RunChildWf(RunChildWfNodeRun {
        child_wf_run_id: Some(id.clone()),
        inputs: inputs.into_iter().collect(),
        wf_spec_id: spec.id.clone(),
    }));
    ctx.children_started += 1;
    let trigger = ParentTriggerReference {
        triggering_node_run: nr.id.clone(),
        waiting_node_run: None,
    };
    crate::wf_run::start(ctx, spec, id, initial, Some(trigger))?;
    Ok(Ok(()))
}

/// Enters a WAIT_FOR_CHILD_WF node: records which child it waits for, and whether it is
/// done already.
pub(crate) fn wait(
    ctx: &mut Ctx,
    run: &RunState,
    thread: i32,
    node: &WaitForChildWfNode,
    mut nr: NodeRun,
) -> HResult<()> {
    let evaluated = {
        let mut scope = ThreadScope::new(ctx, run, thread)?;
        node.child_wf_run_id
            .as_ref()
            .ok_or_else(|| "no child_wf_run_id".to_string())
            .and_then(|a| expr::eval(a, &mut scope))
    };
    let child = match evaluated {
        Ok(VariableValue {
            value: Some(Value::WfRunId(id)),
        }) => id,
        Ok(v) => {
            let got = halter_api::values::type_name(halter_api::values::type_of(&v));
            let msg = format!("Received non-WF_RUN_ID value of type {got}");
            return fail_node(ctx, &mut nr, LhErrorType::VarSubError.as_str_name(), msg);
        }
        Err(e) => {
            let msg = format!("Failed to assign WfRunId to wait for: {e}");
            return fail_node(ctx, &mut nr, LhErrorType::VarSubError.as_str_name(), msg);
        }
    };
    let key = key_of(&child).into_owned();
    if parent_key(&key) != Some(run.id()) {
        let msg = format!("WfRun '{key}' is not a child of this WfRun");
        return fail_node(ctx, &mut nr, LhErrorType::VarSubError.as_str_name(), msg);
    }
    if let Some(mut c) = codec::get::<_, WfRun, _>(ctx.tables.wf_runs.open()?, key.as_str())? {
        if let Some(t) = &mut c.parent_trigger {
            t.waiting_node_run = nr.id.clone();
            codec::put(ctx.tables.wf_runs.open_mut()?, key.as_str(), &c)?;
        }
    }
    nr.node_type = Some(NodeType::WaitForChildWf(WaitForChildWfNodeRun {
        child_wf_run_id: Some(child),
    }));
    put_node(ctx, &nr)?;
    check(ctx, nr)?;
    Ok(())
}

/// A waiting WAIT_FOR_CHILD_WF node whose child has ended completes or fails; `true` if it
/// did either.
pub(crate) fn check(ctx: &mut Ctx, mut nr: NodeRun) -> HResult<bool> {
    let Some(NodeType::WaitForChildWf(w)) = &nr.node_type else {
        return Ok(false);
    };
    let key = w
        .child_wf_run_id
        .as_ref()
        .map(wf_run_key)
        .unwrap_or_default();
    let Some(child) = codec::get::<_, WfRun, _>(ctx.tables.wf_runs.open()?, key.as_str())? else {
        let msg = format!("child WfRun '{key}' no longer exists");
        fail_node(ctx, &mut nr, LhErrorType::ChildFailure.as_str_name(), msg)?;
        return Ok(true);
    };
    match child.status() {
        LhStatus::Completed => {
            complete_node(ctx, &mut nr);
            put_node(ctx, &nr)?;
        }
        LhStatus::Error => {
            let msg = format!("Child WfRun {key} failed");
            fail_node(ctx, &mut nr, LhErrorType::ChildFailure.as_str_name(), msg)?;
        }
        LhStatus::Exception => {
            let failure = child_failure_of(ctx, &key)?.unwrap_or_else(|| Failure {
                failure_name: LhErrorType::ChildFailure.as_str_name().into(),
                ..Default::default()
            });
            let message = format!("Child WfRun failed: {}", failure.message);
            fail_node_with(ctx, &mut nr, Failure { message, ..failure })?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The entrypoint thread (thread 0) of the WfRun `key`: what a child's end is read from.
fn entry_thread(ctx: &Ctx, key: &str) -> HResult<Option<ThreadRun>> {
    Ok(codec::get(ctx.tables.thread_runs.open()?, (key, 0u32))?)
}

/// The failure that ended the child's entrypoint thread: the latest on its current NodeRun.
fn child_failure_of(ctx: &Ctx, key: &str) -> HResult<Option<Failure>> {
    let Some(t0) = entry_thread(ctx, key)? else {
        return Ok(None);
    };
    let nr = get_node(ctx, key, 0, t0.current_node_position)?;
    Ok(nr.and_then(|n| n.failures.last().cloned()))
}

/// What a WAIT_FOR_CHILD_WF node produced: the child's entrypoint thread's output.
pub(crate) fn output(ctx: &Ctx, w: &WaitForChildWfNodeRun) -> HResult<VariableValue> {
    let key = w
        .child_wf_run_id
        .as_ref()
        .map(wf_run_key)
        .unwrap_or_default();
    Ok(entry_thread(ctx, &key)?
        .and_then(|t| t.output)
        .unwrap_or_default())
}

/// Queues the parent of the WfRun `key`, if it has one, to be advanced after this command.
pub(crate) fn wake_parent_of(ctx: &mut Ctx, key: &str) {
    if let Some(p) = parent_key(key) {
        ctx.wakes.insert(p.to_string());
    }
}

/// Advances every queued WfRun that still runs; advancing one may queue its own parent.
pub fn wake_parents(ctx: &mut Ctx) -> HResult<()> {
    while let Some(key) = ctx.wakes.pop_last() {
        let Some(mut run) = RunState::load(ctx, &key)? else {
            continue;
        };
        if is_terminal(status(run.wf_run.status)) {
            continue;
        }
        super::advance(ctx, &mut run)?;
    }
    Ok(())
}
