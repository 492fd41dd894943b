//! Interrupts (semantics §6): an event whose def is an interrupt trigger halts every live thread
//! whose ThreadSpec declares it and starts the handler as an INTERRUPT child thread.

use halter_api::littlehorse::{
    thread_halt_reason::Reason, ExternalEventId, Interrupted, LhErrorType, ThreadType,
    VariableValue,
};

use crate::ctx::Ctx;
use crate::error::HResult;
use crate::run_state::{status, RunState};
use crate::wf_run::is_terminal;

use super::failures::handler_input;
use super::threads::{self, Origin};

/// The threads an event of `def` interrupts (all live threads declaring it, or only
/// `target` if the event names a thread), each with its handler's ThreadSpec.
pub(crate) fn targets(run: &RunState, def: &str, target: Option<i32>) -> Vec<(i32, String)> {
    run.threads
        .values()
        .filter(|t| !is_terminal(status(t.status)) && !threads::halted_for_good(run, t.number))
        .filter(|t| target.is_none_or(|n| n == t.number))
        .filter_map(|t| {
            let spec = run.spec.thread_specs.get(&t.thread_spec_name)?;
            let idef = spec.interrupt_defs.iter().find(|i| {
                i.external_event_def_id
                    .as_ref()
                    .is_some_and(|d| d.name == def)
            })?;
            Some((t.number, idef.handler_spec_name.clone()))
        })
        .collect()
}

/// Interrupts what event `id` (of `def`, carrying `content`) triggers. Returns whether it
/// triggered anything: then the event is consumed by the interrupt, not by a waiting node.
pub fn trigger(
    ctx: &mut Ctx,
    run: &mut RunState,
    def: &str,
    id: &ExternalEventId,
    content: &VariableValue,
    target: Option<i32>,
) -> HResult<bool> {
    let found = targets(run, def, target);
    for (t, handler) in &found {
        // An earlier interrupt of this event may have ended this thread (a handler that could
        // not start fails its parent), or the whole WfRun.
        if is_terminal(run.wf_run.status()) {
            break;
        }
        if is_terminal(status(run.threads[t].status)) {
            continue;
        }
        let input = handler_input(run, handler, content.clone());
        let origin = Origin {
            failure_being_handled: None,
            interrupt_trigger_id: Some(id.clone()),
        };
        match threads::spawn(ctx, run, handler, *t, ThreadType::Interrupt, &input, origin)? {
            Ok(h) => {
                threads::halt_thread(
                    ctx,
                    run,
                    *t,
                    Reason::Interrupted(Interrupted {
                        interrupt_thread_id: h,
                    }),
                    true,
                )?;
            }
            Err(e) => threads::fail_thread(
                ctx,
                run,
                *t,
                LhErrorType::VarError.as_str_name(),
                format!("starting interrupt handler '{handler}': {e}"),
            )?,
        }
    }
    Ok(!found.is_empty())
}
