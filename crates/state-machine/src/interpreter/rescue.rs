//! RescueThreadRun: giving a failed thread another go (semantics §5, LittleHorse's rescue).
//!
//! A thread in ERROR (not EXCEPTION: a business exception is the workflow's own decision) runs
//! its failed node again, or takes that node's outgoing edges (`skip_current_node`, with their
//! mutations; the node's output is null). The thread is RUNNING again, with everything its
//! failure stopped: the descendants halted with `ParentHalted`, and for the entrypoint thread
//! the WfRun itself. A parent that failed only because of this child (a WAIT_FOR_THREADS or EXIT
//! failed with CHILD_FAILURE) is rescued the same way, up the chain.
//!
//! Every check is made before the first write, so a refused rescue changes nothing. A node that
//! fails again at once is an ordinary failure: its handlers may catch it, or the thread fails
//! again, and the call still answers with the WfRun.

use halter_api::littlehorse::{
    node_run::NodeType, thread_halt_reason::Reason, LhErrorType, LhStatus, ThreadType,
};

use crate::ctx::Ctx;
use crate::error::{HResult, Rejection};
use crate::run_state::{get_node, status, RunState};
use crate::timers;
use crate::wf_run::is_terminal;

use super::{arrive, take_edge, threads};

/// Whether halt reason `r` of a failed thread is over: it waited for a handler that has ended.
fn ended_reason(run: &RunState, r: &Reason) -> bool {
    let handler = match r {
        Reason::HandlingFailure(h) => h.handler_thread_id,
        Reason::Interrupted(i) => i.interrupt_thread_id,
        _ => return false,
    };
    run.threads
        .get(&handler)
        .is_none_or(|h| is_terminal(status(h.status)))
}

/// Why thread `t` of `run` cannot be rescued (past its failed node, if `skip`), if it cannot.
pub fn check(ctx: &Ctx, run: &RunState, t: i32, skip: bool) -> HResult<()> {
    let refuse = |m: String| Err(Rejection::FailedPrecondition(m).into());
    let Some(th) = run.threads.get(&t) else {
        return Err(Rejection::InvalidArgument(format!(
            "Tried to rescue a non-existent thread id: WfRun '{}' has no thread {t}",
            run.id()
        ))
        .into());
    };
    if status(th.status) != LhStatus::Error {
        return refuse(format!(
            "Specified ThreadRun has status {}, not ERROR",
            status(th.status).as_str_name()
        ));
    }
    if matches!(
        th.r#type(),
        ThreadType::FailureHandler | ThreadType::Interrupt
    ) {
        // Its failure failed the thread it served; that thread is the one to rescue.
        return refuse(format!(
            "ThreadRun {t} is a {} thread: rescue thread {} instead",
            th.r#type().as_str_name(),
            th.parent_thread_id.unwrap_or_default()
        ));
    }
    if let Some(r) = th
        .halt_reasons
        .iter()
        .filter_map(|r| r.reason.as_ref())
        .find(|r| !ended_reason(run, r))
    {
        return refuse(format!(
            "ThreadRun {t} is also halted ({r:?}): resume it first"
        ));
    }
    let nr = get_node(ctx, run.id(), t, th.current_node_position)?;
    let Some(nr) = nr.filter(|nr| !nr.failures.is_empty()) else {
        return refuse(format!("ThreadRun {t} has no failed NodeRun to rescue"));
    };
    if skip
        && run
            .spec_node(&nr)
            .is_none_or(|n| n.outgoing_edges.is_empty())
    {
        return refuse(format!(
            "node '{}' has no outgoing edge to skip to",
            nr.node_name
        ));
    }
    let mut child = t;
    while let Some(parent) = run
        .threads
        .get(&child)
        .and_then(|c| c.parent_thread_id)
        .and_then(|p| run.threads.get(&p))
    {
        if parent.handled_failed_children.contains(&child) {
            return refuse("Parent of specified ThreadRun has already handled the failure".into());
        }
        if parent.number == child {
            break;
        }
        child = parent.number;
    }
    Ok(())
}

/// Rescues thread `t` (which [`check`] accepted), and its parents that failed for it.
pub fn rescue(ctx: &mut Ctx, run: &mut RunState, t: i32, skip: bool) -> HResult<()> {
    let wf = run.id().to_string();
    let Some(th) = run.threads.get(&t).cloned() else {
        return Ok(());
    };
    let Some(nr) = get_node(ctx, &wf, t, th.current_node_position)? else {
        return Ok(());
    };
    if let Some(th) = run.threads.get_mut(&t) {
        th.status = LhStatus::Running as i32;
        th.end_time = None;
        th.error_message = None;
        th.halt_reasons.clear();
    }
    if t == 0 {
        run.wf_run.status = LhStatus::Running as i32;
        run.wf_run.end_time = None;
        timers::cancel(ctx, &timers::wf_run_retention_timer_id(&wf))?;
    }
    if skip {
        take_edge(ctx, run, t, &nr, true)?;
    } else {
        let next = th.current_node_position + 1;
        arrive(ctx, run, t, &nr.node_name, next)?;
    }
    let parent_halted = threads::parent_halted(t);
    for c in threads::children(run, t) {
        threads::unhalt_thread(ctx, run, c, &|r| *r == parent_halted)?;
    }
    // A parent that failed only because this child did waits for it again.
    let Some(p) = th.parent_thread_id else {
        return Ok(());
    };
    let Some(parent) = run.threads.get(&p) else {
        return Ok(());
    };
    if status(parent.status) != LhStatus::Error {
        return Ok(());
    }
    let Some(pnr) = get_node(ctx, &wf, p, parent.current_node_position)? else {
        return Ok(());
    };
    let waits_for_children = matches!(
        pnr.node_type,
        Some(NodeType::WaitForThreads(_)) | Some(NodeType::Exit(_))
    );
    let child_failure = pnr
        .failures
        .last()
        .is_some_and(|f| f.failure_name == LhErrorType::ChildFailure.as_str_name());
    if waits_for_children && child_failure && check(ctx, run, p, false).is_ok() {
        rescue(ctx, run, p, false)?;
    }
    Ok(())
}
