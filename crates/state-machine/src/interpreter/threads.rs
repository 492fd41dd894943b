//! ThreadRuns: creating them, halting and resuming them for a reason, and what a thread's end
//! means for its parent (semantics §§5, 6, 8).
//!
//! A thread is HALTED exactly while it has at least one halt reason; every reason is removed by
//! the event that ends it (a handler completing, a ResumeWfRun, the parent resuming), so a
//! thread halted for two reasons runs again only when both are gone. Halting a thread halts its
//! descendants with `ParentHalted`, except the handler thread the halt waits for.

use std::collections::BTreeMap;

use halter_api::littlehorse::{
    thread_halt_reason::Reason, FailureBeingHandled, LhStatus, ParentHalted, ThreadHaltReason,
    ThreadType, VariableValue,
};
use halter_api::values;

use crate::ctx::Ctx;
use crate::error::HResult;
use crate::run_state::{create_variables, get_node, put_node, status, NewVariable, RunState};
use crate::time::ts;
use crate::wf_run::is_terminal;

use super::{complete_node, failure_status, finish_wf_run, start_thread, try_claim};
use halter_api::littlehorse::node_run::NodeType;

/// Why a new thread exists beyond its type: what it handles, what triggered it.
#[derive(Default)]
pub struct Origin {
    pub failure_being_handled: Option<FailureBeingHandled>,
    pub interrupt_trigger_id: Option<halter_api::littlehorse::ExternalEventId>,
}

/// Creates a thread of `thread_spec_name` under `parent` with its variables, enters its
/// ENTRYPOINT and returns its number. Variables come from `given` (each must be declared and of
/// the declared type), then from defaults; a missing required one is an error and creates
/// nothing.
pub fn spawn(
    ctx: &mut Ctx,
    run: &mut RunState,
    thread_spec_name: &str,
    parent: i32,
    ty: ThreadType,
    given: &BTreeMap<String, VariableValue>,
    origin: Origin,
) -> HResult<Result<i32, String>> {
    match variables_for(run, thread_spec_name, given) {
        Ok(vars) => spawn_with(ctx, run, thread_spec_name, parent, ty, vars, origin).map(Ok),
        Err(e) => Ok(Err(e)),
    }
}

/// The variables a new thread of `thread_spec_name` would start with given `given`, or why it
/// cannot start. Checking before creating lets a node that starts several threads start all or
/// none.
pub fn variables_for(
    run: &RunState,
    thread_spec_name: &str,
    given: &BTreeMap<String, VariableValue>,
) -> Result<Vec<NewVariable>, String> {
    let Some(spec) = run.spec.thread_specs.get(thread_spec_name) else {
        return Err(format!("no thread spec '{thread_spec_name}'"));
    };
    let mut vars = Vec::new();
    for tv in &spec.variable_defs {
        let Some(def) = &tv.var_def else { continue };
        let ty = values::declared_type(def).map_err(|w| format!("variable '{}': {w}", def.name))?;
        let value = match given.get(&def.name) {
            Some(v) if values::admits(ty, v) => v.clone(),
            Some(v) => {
                return Err(format!(
                    "variable '{}' of thread '{thread_spec_name}' must be {}, got {}",
                    def.name,
                    ty.as_str_name(),
                    values::type_name(values::type_of(v))
                ))
            }
            None if tv.required => {
                return Err(format!(
                    "required variable '{}' of thread '{thread_spec_name}' is missing",
                    def.name
                ))
            }
            None => def.default_value.clone().unwrap_or_default(),
        };
        vars.push(NewVariable::of(tv, value));
    }
    if let Some(unknown) = given.keys().find(|k| !vars.iter().any(|v| v.name == **k)) {
        return Err(format!(
            "variable '{unknown}' is not declared by thread '{thread_spec_name}'"
        ));
    }
    Ok(vars)
}

/// Creates a thread whose variables [`variables_for`] accepted, enters its ENTRYPOINT and
/// returns its number.
pub fn spawn_with(
    ctx: &mut Ctx,
    run: &mut RunState,
    thread_spec_name: &str,
    parent: i32,
    ty: ThreadType,
    vars: Vec<NewVariable>,
    origin: Origin,
) -> HResult<i32> {
    let number = run.wf_run.greatest_threadrun_number + 1;
    run.wf_run.greatest_threadrun_number = number;
    let wf = run.wf_run_id();
    create_variables(ctx, &wf, run.spec.id.clone(), number, vars)?;
    if let Some(p) = run.threads.get_mut(&parent) {
        p.child_thread_ids.push(number);
    }
    start_thread(ctx, run, number, thread_spec_name, Some(parent), ty)?;
    if let Some(t) = run.threads.get_mut(&number) {
        t.failure_being_handled = origin.failure_being_handled;
        t.interrupt_trigger_id = origin.interrupt_trigger_id;
    }
    Ok(number)
}

/// The live threads under `t` that halting or resuming `t` reaches: its live children, and,
/// through a child that has ended, that child's live descendants (a handler started under a
/// failed child by WAIT_FOR_THREADS).
pub(super) fn children(run: &RunState, t: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut ended = vec![t];
    while let Some(p) = ended.pop() {
        for c in run
            .threads
            .values()
            .filter(|c| c.parent_thread_id == Some(p))
        {
            if is_terminal(status(c.status)) {
                ended.push(c.number);
            } else {
                out.push(c.number);
            }
        }
    }
    out.sort_unstable();
    out
}

/// Whether thread `n` is halted and will never run again: stopped by a WAIT_FOR_ANY/FIRST that
/// decided without it, or under a parent that has ended.
pub fn halted_for_good(run: &RunState, n: i32) -> bool {
    let Some(th) = run.threads.get(&n) else {
        return false;
    };
    status(th.status) == LhStatus::Halted
        && th.halt_reasons.iter().any(|r| match &r.reason {
            Some(Reason::HaltedByParent(_)) => true,
            Some(Reason::ParentHalted(p)) => run
                .threads
                .get(&p.parent_thread_id)
                .is_some_and(|pt| is_terminal(status(pt.status))),
            _ => false,
        })
}

/// Whether thread `n` will never run again: it has ended, is halted for good, or is halted
/// under a parent that will never run again. A `ParentHalted` reason is lifted when that parent
/// runs again, and, for a handler the parent waits for (`awaited_handlers`), also while the
/// parent stays halted (`unhalt_thread` releases it): such a handler is not counted dead. A
/// running thread is not dead, whatever its ancestors do.
pub fn never_runs_again(run: &RunState, n: i32) -> bool {
    let mut n = n;
    // Each step goes to a parent; the bound only guards against a malformed tree.
    for _ in 0..=run.threads.len() {
        let Some(th) = run.threads.get(&n) else {
            return false;
        };
        if is_terminal(status(th.status)) || halted_for_good(run, n) {
            return true;
        }
        if status(th.status) != LhStatus::Halted {
            return false;
        }
        let halted_parent = th.halt_reasons.iter().find_map(|r| match &r.reason {
            Some(Reason::ParentHalted(p)) => Some(p.parent_thread_id),
            _ => None,
        });
        match halted_parent {
            Some(p) if !awaited_handlers(run, p).contains(&n) => n = p,
            _ => return false,
        }
    }
    false
}

/// The children thread `t` waits for while halted: the handlers its halt reasons name. When a
/// reason ends but `t` stays halted, they run again.
fn awaited_handlers(run: &RunState, t: i32) -> Vec<i32> {
    run.threads
        .get(&t)
        .map(|th| {
            th.halt_reasons
                .iter()
                .filter_map(|r| match &r.reason {
                    Some(Reason::HandlingFailure(h)) => Some(h.handler_thread_id),
                    Some(Reason::Interrupted(i)) => Some(i.interrupt_thread_id),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn parent_halted(t: i32) -> Reason {
    Reason::ParentHalted(ParentHalted {
        parent_thread_id: t,
    })
}

/// Adds `reason` to thread `t`; a RUNNING thread goes HALTED with its current NodeRun. Unless
/// `propagate` is false its descendants halt too (reason `ParentHalted`), except the handler
/// the new reason waits for.
pub fn halt_thread(
    ctx: &mut Ctx,
    run: &mut RunState,
    t: i32,
    reason: Reason,
    propagate: bool,
) -> HResult<()> {
    let wf = run.id().to_string();
    let Some(th) = run.threads.get_mut(&t) else {
        return Ok(());
    };
    if is_terminal(status(th.status)) {
        return Ok(());
    }
    let reason_kept = reason.clone();
    th.halt_reasons.push(ThreadHaltReason {
        reason: Some(reason),
    });
    if status(th.status) == LhStatus::Running {
        th.status = LhStatus::Halted as i32;
        let pos = th.current_node_position;
        if let Some(mut nr) = get_node(ctx, &wf, t, pos)? {
            if status(nr.status) == LhStatus::Running {
                nr.status = LhStatus::Halted as i32;
                put_node(ctx, &nr)?;
            }
        }
    }
    if !propagate {
        return Ok(());
    }
    // The handler this halt waits for keeps running; an interrupt also spares the thread's other
    // interrupt handlers (they run side by side), but halts a failure handler until it is over.
    let spared: Vec<i32> = match &reason_kept {
        Reason::HandlingFailure(h) => vec![h.handler_thread_id],
        Reason::Interrupted(_) => run
            .threads
            .values()
            .filter(|c| c.parent_thread_id == Some(t) && c.r#type() == ThreadType::Interrupt)
            .map(|c| c.number)
            .collect(),
        _ => vec![],
    };
    for c in children(run, t) {
        if spared.contains(&c) {
            continue;
        }
        let already = run.threads[&c]
            .halt_reasons
            .iter()
            .any(|r| r.reason.as_ref() == Some(&parent_halted(t)));
        if !already {
            halt_thread(ctx, run, c, parent_halted(t), true)?;
        }
    }
    Ok(())
}

/// Removes the halt reasons of `t` that `ends` selects. When none is left the thread runs again:
/// its halted NodeRun waits (and claims) again or, if it matured meanwhile, moves on; and its
/// descendants lose their `ParentHalted` reason. While `t` stays halted, the handlers it still
/// waits for are released (a handler halted by an interrupt of `t` runs on once it is over).
pub fn unhalt_thread(
    ctx: &mut Ctx,
    run: &mut RunState,
    t: i32,
    ends: &dyn Fn(&Reason) -> bool,
) -> HResult<()> {
    let wf = run.id().to_string();
    let Some(th) = run.threads.get_mut(&t) else {
        return Ok(());
    };
    th.halt_reasons
        .retain(|r| !r.reason.as_ref().is_some_and(ends));
    if status(th.status) != LhStatus::Halted {
        return Ok(());
    }
    let release: Vec<i32> = if th.halt_reasons.is_empty() {
        th.status = LhStatus::Running as i32;
        let pos = th.current_node_position;
        if let Some(mut nr) = get_node(ctx, &wf, t, pos)? {
            if status(nr.status) == LhStatus::Halted {
                nr.status = LhStatus::Running as i32;
                if let Some(NodeType::Sleep(s)) = &nr.node_type {
                    if s.matured {
                        complete_node(ctx, &mut nr);
                    }
                }
                try_claim(ctx, &wf, t, &mut nr)?;
                put_node(ctx, &nr)?;
            }
        }
        children(run, t)
    } else {
        let awaited = awaited_handlers(run, t);
        children(run, t)
            .into_iter()
            .filter(|c| awaited.contains(c))
            .collect()
    };
    for c in release {
        unhalt_thread(ctx, run, c, &|r| *r == parent_halted(t))?;
    }
    Ok(())
}

/// Thread `t` completed. A failure handler's parent continues past the handled node; an
/// interrupt's parent resumes; the entrypoint thread ends the WfRun.
pub fn complete_thread(
    ctx: &mut Ctx,
    run: &mut RunState,
    t: i32,
    output: Option<VariableValue>,
) -> HResult<()> {
    let Some(th) = run.threads.get_mut(&t) else {
        return Ok(());
    };
    th.status = LhStatus::Completed as i32;
    th.end_time = Some(ts(ctx.now_ms));
    th.output = output;
    let th = th.clone();
    if t == 0 {
        finish_wf_run(ctx, run, LhStatus::Completed)?;
        return stop_descendants(ctx, run, 0);
    }
    let parent = th.parent_thread_id.unwrap_or_default();
    match th.r#type() {
        ThreadType::FailureHandler => {
            let Some(f) = th.failure_being_handled else {
                return Ok(());
            };
            // A handler of a waited-for child's failure is seen by WAIT_FOR_THREADS instead.
            if f.thread_run_number != parent {
                return Ok(());
            }
            let wf = run.id().to_string();
            if let Some(mut nr) = get_node(ctx, &wf, parent, f.node_run_position)? {
                if let Some(failure) = nr.failures.get_mut(f.failure_number as usize) {
                    failure.was_properly_handled = true;
                }
                put_node(ctx, &nr)?;
                // A handled WAIT_FOR_THREADS failure covers the children it waited for: the
                // parent's EXIT does not fail for them again.
                if let Some(NodeType::WaitForThreads(w)) = &nr.node_type {
                    let failed: Vec<i32> = w
                        .threads
                        .iter()
                        .map(|x| x.thread_run_number)
                        .filter(|n| {
                            run.threads.get(n).is_some_and(|c| {
                                matches!(status(c.status), LhStatus::Error | LhStatus::Exception)
                            })
                        })
                        .collect();
                    if let Some(p) = run.threads.get_mut(&parent) {
                        for n in failed {
                            if !p.handled_failed_children.contains(&n) {
                                p.handled_failed_children.push(n);
                            }
                        }
                    }
                }
            }
            unhalt_thread(
                ctx,
                run,
                parent,
                &|r| matches!(r, Reason::HandlingFailure(h) if h.handler_thread_id == t),
            )
        }
        ThreadType::Interrupt => unhalt_thread(
            ctx,
            run,
            parent,
            &|r| matches!(r, Reason::Interrupted(i) if i.interrupt_thread_id == t),
        ),
        _ => Ok(()),
    }
}

/// Thread `t` failed with `name`. A failing failure handler or interrupt handler fails its
/// parent with the same failure; the entrypoint thread ends the WfRun; a CHILD thread's failure
/// is seen by the WAIT_FOR_THREADS node that waits for it.
pub fn fail_thread(
    ctx: &mut Ctx,
    run: &mut RunState,
    t: i32,
    name: &str,
    message: String,
) -> HResult<()> {
    let st = failure_status(name);
    let Some(th) = run.threads.get_mut(&t) else {
        return Ok(());
    };
    if is_terminal(status(th.status)) {
        return Ok(());
    }
    th.status = st as i32;
    th.end_time = Some(ts(ctx.now_ms));
    th.error_message = Some(format!("{name}: {message}"));
    let th = th.clone();
    if t == 0 {
        finish_wf_run(ctx, run, st)?;
        return stop_descendants(ctx, run, 0);
    }
    stop_descendants(ctx, run, t)?;
    let parent = th.parent_thread_id.unwrap_or_default();
    let fails_parent = match th.r#type() {
        ThreadType::Interrupt => true,
        ThreadType::FailureHandler => th
            .failure_being_handled
            .is_some_and(|f| f.thread_run_number == parent),
        _ => false,
    };
    if fails_parent {
        let mut message = message;
        if th.r#type() == ThreadType::Interrupt {
            // The interrupted thread's current NodeRun carries the failure, as in LittleHorse.
            message = format!("Interrupt thread with id {t} failed!");
            let wf = run.id().to_string();
            let pos = run.threads[&parent].current_node_position;
            if let Some(mut nr) = get_node(ctx, &wf, parent, pos)? {
                super::fail_node(ctx, &mut nr, name, message.clone())?;
            }
        }
        fail_thread(ctx, run, parent, name, message)?;
    }
    Ok(())
}

/// A thread ended: whatever still runs under it halts for good (its parent will never resume).
fn stop_descendants(ctx: &mut Ctx, run: &mut RunState, t: i32) -> HResult<()> {
    for c in children(run, t) {
        halt_thread(ctx, run, c, parent_halted(t), true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use halter_api::littlehorse::{
        HaltedByParentNodeHaltReason, Interrupted, ManualHalt, ThreadRun,
    };

    fn th(n: i32, st: LhStatus, parent: Option<i32>, reasons: Vec<Reason>) -> (i32, ThreadRun) {
        (
            n,
            ThreadRun {
                number: n,
                status: st as i32,
                parent_thread_id: parent,
                halt_reasons: reasons
                    .into_iter()
                    .map(|r| ThreadHaltReason { reason: Some(r) })
                    .collect(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_thread_under_a_dead_parent_is_dead_unless_the_parent_waits_for_it() {
        // 1 was stopped for good by thread 0's WAIT_FOR_ANY while 3, its interrupt handler,
        // ran; 2 is 1's child. 5 is stopped by hand, 6 is its child.
        let run = RunState::new(
            Default::default(),
            BTreeMap::from([
                th(0, LhStatus::Running, None, vec![]),
                th(
                    1,
                    LhStatus::Halted,
                    Some(0),
                    vec![
                        Reason::Interrupted(Interrupted {
                            interrupt_thread_id: 3,
                        }),
                        Reason::HaltedByParent(HaltedByParentNodeHaltReason::default()),
                    ],
                ),
                th(2, LhStatus::Halted, Some(1), vec![parent_halted(1)]),
                th(3, LhStatus::Halted, Some(1), vec![parent_halted(1)]),
                th(
                    5,
                    LhStatus::Halted,
                    Some(0),
                    vec![Reason::ManualHalt(ManualHalt::default())],
                ),
                th(6, LhStatus::Halted, Some(5), vec![parent_halted(5)]),
                th(7, LhStatus::Error, Some(0), vec![]),
            ]),
            Default::default(),
        );
        assert!(!never_runs_again(&run, 0));
        assert!(never_runs_again(&run, 1), "halted by its parent's node");
        assert!(
            never_runs_again(&run, 2),
            "only 1 running again would resume it"
        );
        assert!(
            !never_runs_again(&run, 3),
            "1's handler is released while 1 stays halted"
        );
        assert!(!never_runs_again(&run, 5), "a ResumeWfRun resumes it");
        assert!(!never_runs_again(&run, 6));
        assert!(never_runs_again(&run, 7), "ended");
        assert!(!never_runs_again(&run, 42), "unknown");
    }
}
