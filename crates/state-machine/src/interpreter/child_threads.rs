//! START_THREAD, START_MULTIPLE_THREADS and WAIT_FOR_THREADS (semantics §8): child threads and
//! waiting for them.
//!
//! A WAIT_FOR_THREADS NodeRun records each awaited thread's progress. It is re-examined by
//! `advance` whenever its thread is RUNNING, so a child's end in the same command is seen at
//! once. A child that fails is handled by a matching `per_thread_failure_handlers` entry (a
//! FAILURE_HANDLER thread under the failed child); without one the node fails (an EXCEPTION as
//! it is, an ERROR as CHILD_FAILURE), which the node's own failure handlers may catch.

use std::collections::BTreeMap;

use halter_api::littlehorse::{
    exit_node, node,
    node_run::NodeType,
    thread_halt_reason::Reason,
    variable_value::Value,
    wait_for_threads_node::ThreadsToWaitForOneOf as Which,
    wait_for_threads_run::{WaitForThread, WaitingThreadStatus},
    Failure, FailureHandlerDef, HaltedByParentNodeHaltReason, LhErrorType, LhStatus, NodeRun,
    StartMultipleThreadsNode, StartMultipleThreadsRun, StartThreadNode, StartThreadRun, ThreadType,
    VariableValue, WaitForThreadsNode, WaitForThreadsRun, WaitForThreadsStrategy,
};
use halter_api::values;

use crate::ctx::Ctx;
use crate::error::HResult;
use crate::expr;
use crate::run_state::{get_node, put_node, status, RunState};
use crate::time::ts;

use super::threads::{self, Origin};
use super::{complete_node, fail_node, failures, is_error, ThreadScope};

/// Enters a START_THREAD node: evaluates the child's variables in the parent's scope, starts the
/// child, and completes with the child's number as output.
pub fn start(
    ctx: &mut Ctx,
    run: &mut RunState,
    t: i32,
    node: &StartThreadNode,
    mut nr: NodeRun,
) -> HResult<()> {
    let mut given = BTreeMap::new();
    {
        let mut scope = ThreadScope::new(ctx, run, t)?;
        for (name, a) in &node.variables {
            match expr::eval(a, &mut scope) {
                Ok(v) => {
                    given.insert(name.clone(), v);
                }
                Err(e) => {
                    return fail_node(
                        ctx,
                        &mut nr,
                        LhErrorType::VarSubError.as_str_name(),
                        format!("variable '{name}' of the child thread: {e}"),
                    )
                }
            }
        }
    }
    let child = threads::spawn(
        ctx,
        run,
        &node.thread_spec_name,
        t,
        ThreadType::Child,
        &given,
        Origin::default(),
    )?;
    match child {
        Ok(n) => {
            nr.node_type = Some(NodeType::StartThread(StartThreadRun {
                child_thread_id: Some(n),
                thread_spec_name: node.thread_spec_name.clone(),
            }));
            complete_node(ctx, &mut nr);
            put_node(ctx, &nr)
        }
        Err(e) => fail_node(ctx, &mut nr, LhErrorType::VarError.as_str_name(), e),
    }
}

/// Enters a START_MULTIPLE_THREADS node (the SDKs' `spawnThreadForEach`): one child per element
/// of the JSON_ARR `iterable`, each with the node's `variables` (evaluated once, in the parent's
/// scope) and, if its thread declares `INPUT`, the element as INPUT. Completes with the children's
/// numbers as a JSON_ARR, which a WAIT_FOR_THREADS `thread_list` takes.
///
/// **[Halter]** Every child's variables are checked before the first child is created, so a bad
/// element fails the node with VAR_SUB_ERROR and starts none; LittleHorse keeps the children
/// it started before the bad element.
pub fn start_multiple(
    ctx: &mut Ctx,
    run: &mut RunState,
    t: i32,
    node: &StartMultipleThreadsNode,
    mut nr: NodeRun,
) -> HResult<()> {
    let evaluated: Result<(Vec<VariableValue>, BTreeMap<String, VariableValue>), String> = {
        let mut scope = ThreadScope::new(ctx, run, t)?;
        let elements = match &node.iterable {
            Some(a) => expr::eval(a, &mut scope).and_then(|v| match &v.value {
                Some(Value::JsonArr(s)) => serde_json::from_str::<Vec<serde_json::Value>>(s)
                    .map(|items| items.iter().map(expr::from_json).collect())
                    .map_err(|e| format!("iterable is not a JSON array: {e}")),
                _ => Err(format!(
                    "iterable must be a JSON_ARR, got {}",
                    values::type_name(values::type_of(&v))
                )),
            }),
            None => Err("START_MULTIPLE_THREADS without an iterable".to_string()),
        };
        elements.and_then(|elements| {
            let mut given = BTreeMap::new();
            for (name, a) in &node.variables {
                let v = expr::eval(a, &mut scope)
                    .map_err(|e| format!("variable '{name}' of the child threads: {e}"))?;
                given.insert(name.clone(), v);
            }
            Ok((elements, given))
        })
    };
    let spec_name = &node.thread_spec_name;
    let prepared = evaluated.and_then(|(elements, given)| {
        elements
            .into_iter()
            .map(|element| {
                // INPUT as a handler gets it: only if the thread declares it.
                let mut inputs = given.clone();
                inputs.extend(failures::handler_input(run, spec_name, element));
                threads::variables_for(run, spec_name, &inputs)
            })
            .collect::<Result<Vec<_>, String>>()
    });
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            return fail_node(
                ctx,
                &mut nr,
                LhErrorType::VarSubError.as_str_name(),
                format!("Failed constructing input variables for thread: {e}"),
            )
        }
    };
    let mut children = Vec::with_capacity(prepared.len());
    for vars in prepared {
        let n = threads::spawn_with(
            ctx,
            run,
            spec_name,
            t,
            ThreadType::Child,
            vars,
            Origin::default(),
        )?;
        children.push(n);
    }
    nr.node_type = Some(NodeType::StartMultipleThreads(StartMultipleThreadsRun {
        thread_spec_name: spec_name.clone(),
        child_thread_ids: children,
    }));
    complete_node(ctx, &mut nr);
    put_node(ctx, &nr)
}

fn as_thread_number(v: &VariableValue) -> Result<i32, String> {
    match &v.value {
        Some(Value::Int(n)) => i32::try_from(*n).map_err(|_| format!("{n} is not a thread number")),
        _ => Err(format!(
            "a thread number must be an INT, got {}",
            values::type_name(values::type_of(v))
        )),
    }
}

/// Enters a WAIT_FOR_THREADS node: evaluates which threads to wait for. The NodeRun then waits
/// (see [`check`]).
pub fn enter(
    ctx: &mut Ctx,
    run: &mut RunState,
    t: i32,
    node: &WaitForThreadsNode,
    mut nr: NodeRun,
) -> HResult<()> {
    let numbers: Result<Vec<i32>, String> = {
        let mut scope = ThreadScope::new(ctx, run, t)?;
        match &node.threads_to_wait_for {
            Some(Which::Threads(list)) => list
                .threads
                .iter()
                .map(|w| {
                    let a = w
                        .thread_run_number
                        .as_ref()
                        .ok_or("a thread to wait for without a number")?;
                    as_thread_number(&expr::eval(a, &mut scope)?)
                })
                .collect(),
            Some(Which::ThreadList(a)) => expr::eval(a, &mut scope).and_then(|v| match v.value {
                Some(Value::JsonArr(s)) => serde_json::from_str::<Vec<serde_json::Value>>(&s)
                    .map_err(|e| format!("thread_list is not a JSON array: {e}"))?
                    .iter()
                    .map(|x| {
                        x.as_i64()
                            .and_then(|n| i32::try_from(n).ok())
                            .ok_or_else(|| format!("{x} is not a thread number"))
                    })
                    .collect(),
                _ => Err("thread_list must be a JSON_ARR of thread numbers".to_string()),
            }),
            None => Err("WAIT_FOR_THREADS without threads to wait for".to_string()),
        }
    };
    let numbers = match numbers {
        Ok(n) => n,
        Err(e) => return fail_node(ctx, &mut nr, LhErrorType::VarSubError.as_str_name(), e),
    };
    let mut ancestors = vec![t];
    while let Some(p) = ancestors
        .last()
        .and_then(|a| run.threads.get(a))
        .and_then(|a| a.parent_thread_id)
    {
        if ancestors.contains(&p) {
            break;
        }
        ancestors.push(p);
    }
    if let Some(bad) = numbers
        .iter()
        .find(|n| !run.threads.contains_key(n) || ancestors.contains(n))
    {
        return fail_node(
            ctx,
            &mut nr,
            LhErrorType::VarSubError.as_str_name(),
            format!("Couldn't wait for thread {bad}: it does not exist or is this thread or an ancestor"),
        );
    }
    nr.node_type = Some(NodeType::WaitForThreads(WaitForThreadsRun {
        threads: numbers
            .into_iter()
            .map(|n| WaitForThread {
                thread_run_number: n,
                thread_status: run.threads[&n].status,
                waiting_status: WaitingThreadStatus::ThreadInProgress as i32,
                ..Default::default()
            })
            .collect(),
    }));
    put_node(ctx, &nr)?;
    // `advance` examines it next (the thread is RUNNING and its node waits).
    Ok(())
}

/// The failure a failed thread ended with: its current NodeRun's last failure.
fn failure_of(ctx: &Ctx, run: &RunState, n: i32) -> HResult<Failure> {
    let th = &run.threads[&n];
    let nr = get_node(ctx, run.id(), n, th.current_node_position)?;
    Ok(nr
        .and_then(|nr| nr.failures.last().cloned())
        .unwrap_or_else(|| Failure {
            failure_name: LhErrorType::InternalError.as_str_name().to_string(),
            message: th.error_message.clone().unwrap_or_default(),
            ..Default::default()
        }))
}

/// What a WAIT_FOR_THREADS node fails with for child `n`'s failure `f`: a business EXCEPTION
/// as it is, an ERROR as CHILD_FAILURE.
fn propagated(n: i32, f: Failure) -> Failure {
    if is_error(&f.failure_name) {
        Failure {
            failure_name: LhErrorType::ChildFailure.as_str_name().to_string(),
            message: format!(
                "Child thread {n} failed with {}: {}",
                f.failure_name, f.message
            ),
            ..Default::default()
        }
    } else {
        Failure {
            was_properly_handled: false,
            failure_handler_threadrun_id: None,
            ..f
        }
    }
}

/// Brings each awaited thread's entry up to date; starts per-thread failure handlers. Returns,
/// per entry in list order, the failure of an unsuccessful one.
fn refresh(
    ctx: &mut Ctx,
    run: &mut RunState,
    t: i32,
    w: &mut WaitForThreadsRun,
    handlers: &[FailureHandlerDef],
) -> HResult<Vec<Option<Failure>>> {
    let mut failures = Vec::new();
    for wt in &mut w.threads {
        let n = wt.thread_run_number;
        let Some(child) = run.threads.get(&n).cloned() else {
            failures.push(None);
            continue;
        };
        wt.thread_status = child.status;
        let waiting = WaitingThreadStatus::try_from(wt.waiting_status)
            .unwrap_or(WaitingThreadStatus::ThreadInProgress);
        let mut failure = None;
        match (waiting, status(child.status)) {
            (WaitingThreadStatus::ThreadInProgress, LhStatus::Completed) => {
                wt.waiting_status = WaitingThreadStatus::ThreadCompletedOrFailureHandled as i32;
            }
            (WaitingThreadStatus::ThreadInProgress, LhStatus::Error | LhStatus::Exception) => {
                let f = failure_of(ctx, run, n)?;
                match failures::find(handlers, &f.failure_name) {
                    Some(h) => {
                        // The handler runs under the failed child, with its failure as INPUT.
                        let input = failures::handler_input(
                            run,
                            &h.handler_spec_name,
                            f.content.clone().unwrap_or_default(),
                        );
                        let spec = h.handler_spec_name.clone();
                        let ty = ThreadType::FailureHandler;
                        match threads::spawn(ctx, run, &spec, n, ty, &input, Origin::default())? {
                            Ok(hn) => {
                                wt.waiting_status =
                                    WaitingThreadStatus::ThreadHandlingFailure as i32;
                                wt.failure_handler_thread_run_id = Some(hn);
                            }
                            Err(e) => {
                                wt.waiting_status = WaitingThreadStatus::ThreadUnsuccessful as i32;
                                failure = Some(Failure {
                                    failure_name: LhErrorType::ChildFailure.as_str_name().into(),
                                    message: format!("Failed launching handler '{spec}': {e}"),
                                    ..Default::default()
                                });
                            }
                        }
                    }
                    None => {
                        wt.waiting_status = WaitingThreadStatus::ThreadUnsuccessful as i32;
                        failure = Some(propagated(n, f));
                    }
                }
            }
            (WaitingThreadStatus::ThreadHandlingFailure, _) => {
                let h = wt.failure_handler_thread_run_id.unwrap_or(-1);
                match run.threads.get(&h).map(|x| status(x.status)) {
                    Some(LhStatus::Completed) => {
                        wt.waiting_status =
                            WaitingThreadStatus::ThreadCompletedOrFailureHandled as i32;
                        if let Some(me) = run.threads.get_mut(&t) {
                            if !me.handled_failed_children.contains(&n) {
                                me.handled_failed_children.push(n);
                            }
                        }
                    }
                    Some(LhStatus::Error | LhStatus::Exception) | None => {
                        wt.waiting_status = WaitingThreadStatus::ThreadUnsuccessful as i32;
                        failure = Some(propagated(h, failure_of(ctx, run, h)?));
                    }
                    _ => {}
                }
            }
            (WaitingThreadStatus::ThreadUnsuccessful, _) => {
                failure = Some(propagated(n, failure_of(ctx, run, n)?));
            }
            _ => {}
        }
        failures.push(failure);
    }
    Ok(failures)
}

/// Re-examines the RUNNING WAIT_FOR_THREADS NodeRun `nr` of RUNNING thread `t`. Returns
/// whether anything changed.
///
/// WAIT_FOR_ALL completes when every thread completed (or had its failure handled) and fails
/// with the first unsuccessful one in list order. WAIT_FOR_ANY completes with the first
/// successful one and fails only when all are unsuccessful. WAIT_FOR_FIRST ends as the first
/// thread to end does. ANY and FIRST halt the threads still running, for good.
pub fn check(ctx: &mut Ctx, run: &mut RunState, t: i32, mut nr: NodeRun) -> HResult<bool> {
    let Some(NodeType::WaitForThreads(mut w)) = nr.node_type.take() else {
        return Ok(false);
    };
    let spec_node = run
        .spec_node(&nr)
        .and_then(|n| match &n.node {
            Some(node::Node::WaitForThreads(x)) => Some(x.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let before = w.clone();
    let failures = refresh(ctx, run, t, &mut w, &spec_node.per_thread_failure_handlers)?;
    let done = |x: &WaitForThread| {
        x.waiting_status == WaitingThreadStatus::ThreadCompletedOrFailureHandled as i32
    };
    let first_failure = failures.iter().flatten().next().cloned();
    let outcome: Option<Result<(), Failure>> =
        match WaitForThreadsStrategy::try_from(spec_node.strategy) {
            Ok(WaitForThreadsStrategy::WaitForAny) => {
                if w.threads.iter().any(done) {
                    Some(Ok(()))
                } else if failures.iter().all(Option::is_some) {
                    Some(Err(Failure {
                        failure_name: LhErrorType::ChildFailure.as_str_name().into(),
                        message: "All child threads failed".into(),
                        ..Default::default()
                    }))
                } else {
                    None
                }
            }
            Ok(WaitForThreadsStrategy::WaitForFirst) => {
                w.threads.iter().zip(&failures).find_map(|(x, f)| match f {
                    Some(f) => Some(Err(f.clone())),
                    None if done(x) => Some(Ok(())),
                    None => None,
                })
            }
            _ => match first_failure {
                Some(f) => Some(Err(f)),
                None if w.threads.iter().all(done) => Some(Ok(())),
                None => None,
            },
        };
    let changed = w != before;
    let strategy = spec_node.strategy;
    nr.node_type = Some(NodeType::WaitForThreads(w.clone()));
    let Some(outcome) = outcome else {
        if changed {
            put_node(ctx, &nr)?;
        }
        return Ok(changed);
    };
    if strategy != WaitForThreadsStrategy::WaitForAll as i32 {
        // The node decided for all of them: the thread's EXIT does not fail again for a child
        // that failed here.
        if let Some(me) = run.threads.get_mut(&t) {
            for (x, f) in w.threads.iter().zip(&failures) {
                if f.is_some() && !me.handled_failed_children.contains(&x.thread_run_number) {
                    me.handled_failed_children.push(x.thread_run_number);
                }
            }
        }
        let position = nr.id.as_ref().map(|i| i.position).unwrap_or_default();
        for x in &w.threads {
            threads::halt_thread(
                ctx,
                run,
                x.thread_run_number,
                Reason::HaltedByParent(HaltedByParentNodeHaltReason {
                    parent_thread_run_number: t,
                    waiting_node_run_position: position,
                }),
                true,
            )?;
        }
    }
    match outcome {
        Ok(()) => {
            complete_node(ctx, &mut nr);
            put_node(ctx, &nr)?;
        }
        Err(f) => {
            nr.status = super::failure_status(&f.failure_name) as i32;
            nr.end_time = Some(ts(ctx.now_ms));
            nr.error_message = Some(f.message.clone());
            nr.failures.push(f);
            put_node(ctx, &nr)?;
        }
    }
    Ok(true)
}

/// The RUNNING EXIT NodeRun `nr` of thread `t` ends the thread once every child has ended or
/// is halted for good. A child that failed without its failure being handled fails the EXIT with
/// CHILD_FAILURE. Returns whether anything changed.
pub fn check_exit(ctx: &mut Ctx, run: &mut RunState, t: i32, mut nr: NodeRun) -> HResult<bool> {
    let th = &run.threads[&t];
    let mut failed = Vec::new();
    for c in &th.child_thread_ids {
        let Some(child) = run.threads.get(c) else {
            continue;
        };
        match status(child.status) {
            LhStatus::Completed => {}
            // Halted for a while (a handler, an interrupt, a stop): wait for it.
            LhStatus::Halted if !threads::halted_for_good(run, *c) => return Ok(false),
            LhStatus::Halted => {}
            LhStatus::Error | LhStatus::Exception => {
                if !th.handled_failed_children.contains(c) && !failed.contains(c) {
                    failed.push(*c);
                }
            }
            _ => return Ok(false),
        }
    }
    if !failed.is_empty() {
        let list: Vec<String> = failed.iter().map(|c| c.to_string()).collect();
        fail_node(
            ctx,
            &mut nr,
            LhErrorType::ChildFailure.as_str_name(),
            format!("Child thread (or threads) failed: {}", list.join(" ")),
        )?;
        return Ok(true);
    }
    let result = run.spec_node(&nr).and_then(|n| match &n.node {
        Some(node::Node::Exit(e)) => e.result.clone(),
        _ => None,
    });
    let output = match result {
        Some(exit_node::Result::ReturnContent(a)) => {
            let mut scope = ThreadScope::new(ctx, run, t)?;
            match expr::eval(&a, &mut scope) {
                Ok(v) => Some(v),
                Err(e) => {
                    fail_node(ctx, &mut nr, LhErrorType::VarSubError.as_str_name(), e)?;
                    return Ok(true);
                }
            }
        }
        _ => None,
    };
    complete_node(ctx, &mut nr);
    put_node(ctx, &nr)?;
    threads::complete_thread(ctx, run, t, output)?;
    Ok(true)
}
