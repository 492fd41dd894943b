//! Failure handlers (semantics §5): a failed NodeRun either starts the matching handler as a
//! FAILURE_HANDLER child thread, or fails its thread.

use std::collections::BTreeMap;

use halter_api::littlehorse::{
    failure_handler_def::{FailureToCatch, LhFailureType},
    thread_halt_reason::Reason,
    FailureBeingHandled, FailureHandlerDef, HandlingFailureHaltReason, LhErrorType, NodeRun,
    ThreadType, VariableValue,
};

use crate::ctx::Ctx;
use crate::error::HResult;
use crate::run_state::{put_node, RunState};

use super::threads::{self, Origin};
use super::{is_error, take_edge};

/// Whether `h` catches a failure named `name`: by name (where `VAR_ERROR` also names the
/// variable errors VAR_SUB_ERROR and VAR_MUTATION_ERROR, and `TASK_ERROR` also TASK_FAILURE and
/// TIMEOUT, as in LittleHorse), by kind (ERROR or EXCEPTION), or, with neither set, any failure.
pub fn catches(h: &FailureHandlerDef, name: &str) -> bool {
    match &h.failure_to_catch {
        Some(FailureToCatch::SpecificFailure(s)) => {
            s == name
                || (s == "VAR_ERROR" && matches!(name, "VAR_SUB_ERROR" | "VAR_MUTATION_ERROR"))
                || (s == "TASK_ERROR" && matches!(name, "TASK_FAILURE" | "TIMEOUT"))
        }
        Some(FailureToCatch::AnyFailureOfType(k)) => match LhFailureType::try_from(*k) {
            Ok(LhFailureType::FailureTypeError) => is_error(name),
            Ok(LhFailureType::FailureTypeException) => !is_error(name),
            Err(_) => false,
        },
        None => true,
    }
}

/// The handler for `name`: the first listed that catches it.
pub fn find<'a>(handlers: &'a [FailureHandlerDef], name: &str) -> Option<&'a FailureHandlerDef> {
    handlers.iter().find(|h| catches(h, name))
}

/// The current NodeRun `nr` of RUNNING thread `t` has failed. A handled failure moves on along
/// the node's edges (without their mutations); an unhandled one starts the node's matching
/// handler, or fails the thread. Returns false when there is nothing to do (its handler runs).
pub fn on_failed_node(ctx: &mut Ctx, run: &mut RunState, t: i32, mut nr: NodeRun) -> HResult<bool> {
    let Some(index) = nr.failures.len().checked_sub(1) else {
        threads::fail_thread(
            ctx,
            run,
            t,
            LhErrorType::InternalError.as_str_name(),
            format!("node '{}' failed without a failure", nr.node_name),
        )?;
        return Ok(true);
    };
    let failure = nr.failures[index].clone();
    if failure.was_properly_handled {
        take_edge(ctx, run, t, &nr, false)?;
        return Ok(true);
    }
    if failure.failure_handler_threadrun_id.is_some() {
        // Its handler runs; the thread moves when it ends.
        return Ok(false);
    }
    let handlers = run
        .spec_node(&nr)
        .map(|n| n.failure_handlers.clone())
        .unwrap_or_default();
    let Some(handler) = find(&handlers, &failure.failure_name) else {
        threads::fail_thread(ctx, run, t, &failure.failure_name, failure.message)?;
        return Ok(true);
    };
    let position = nr.id.as_ref().map(|i| i.position).unwrap_or_default();
    let input = handler_input(
        run,
        &handler.handler_spec_name,
        failure.content.clone().unwrap_or_default(),
    );
    let origin = Origin {
        failure_being_handled: Some(FailureBeingHandled {
            thread_run_number: t,
            node_run_position: position,
            failure_number: index as i32,
        }),
        interrupt_trigger_id: None,
    };
    let spawned = threads::spawn(
        ctx,
        run,
        &handler.handler_spec_name,
        t,
        ThreadType::FailureHandler,
        &input,
        origin,
    )?;
    match spawned {
        Ok(h) => {
            nr.failures[index].failure_handler_threadrun_id = Some(h);
            put_node(ctx, &nr)?;
            threads::halt_thread(
                ctx,
                run,
                t,
                Reason::HandlingFailure(HandlingFailureHaltReason {
                    handler_thread_id: h,
                }),
                true,
            )
        }
        Err(e) => threads::fail_thread(
            ctx,
            run,
            t,
            LhErrorType::VarError.as_str_name(),
            format!(
                "starting failure handler '{}': {e}",
                handler.handler_spec_name
            ),
        ),
    }?;
    Ok(true)
}

/// The variables a handler thread starts with: `INPUT` = its trigger (the failure's content, the
/// interrupt event's content) if it declares INPUT, else none.
pub fn handler_input(
    run: &RunState,
    thread_spec_name: &str,
    trigger: VariableValue,
) -> BTreeMap<String, VariableValue> {
    let declares = run
        .spec
        .thread_specs
        .get(thread_spec_name)
        .is_some_and(|t| {
            t.variable_defs
                .iter()
                .filter_map(|v| v.var_def.as_ref())
                .any(|d| d.name == "INPUT")
        });
    let mut input = BTreeMap::new();
    if declares {
        input.insert("INPUT".to_string(), trigger);
    }
    input
}
