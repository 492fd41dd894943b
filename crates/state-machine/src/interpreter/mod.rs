//! The workflow interpreter: moving ThreadRuns through their nodes.
//!
//! A thread is RUNNING while its current NodeRun is waiting (an EXTERNAL_EVENT without its
//! event, a SLEEP not matured) or about to move on. [`advance`] moves every RUNNING thread
//! until each one waits or ends; it is called after every change that can unblock a thread.
//!
//! A failed NodeRun does not end its thread directly: it is left failed, and `advance` decides
//! what the failure means (a handler, or the thread's end) in [`failures`]. Threads, their halt
//! reasons and what a thread's end means for its parent are in [`threads`]; child threads in
//! [`child_threads`]; interrupts in [`interrupts`]; RescueThreadRun in [`rescue`].

mod child_threads;
pub mod child_wf_runs;
pub mod failures;
pub mod interrupts;
pub mod rescue;
pub mod threads;

use halter_api::halter::{timer, NodeRunTimer};
use halter_api::limits::MAX_STEPS_PER_COMMAND;
use halter_api::littlehorse::{
    edge::EdgeCondition, exit_node, node, node_run::NodeType, sleep_node::SleepLength,
    thread_halt_reason, variable_mutation::RhsValue, variable_value::Value, Comparator, Edge,
    EntrypointRun, ExitRun, ExternalEvent, ExternalEventNodeRun, Failure, LegacyEdgeCondition,
    LhErrorType, LhStatus, NodeRun, NodeRunId, SleepNodeRun, ThreadRun, ThreadType,
    ThrowEventNodeRun, VariableAssignment, VariableMutationType, VariableValue,
    WaitForConditionRun,
};
use halter_api::values;
use halter_api::wf_run_id::wf_run_key;
use halter_storage::codec;
use redb::ReadableTable;

use crate::ctx::Ctx;
use crate::error::HResult;
use crate::expr::{self, Scope};
use crate::external_event;
use crate::run_state::{get_node, get_variable, put_node, put_variable, status, RunState};
use crate::time::{after_seconds, ms, ts};
use crate::timers;

/// Whether a failure name is an ERROR (one of LittleHorse's built-in error types) rather than
/// a business EXCEPTION.
pub fn is_error(failure_name: &str) -> bool {
    LhErrorType::from_str_name(failure_name).is_some()
}

pub(crate) fn failure_status(failure_name: &str) -> LhStatus {
    if is_error(failure_name) {
        LhStatus::Error
    } else {
        LhStatus::Exception
    }
}

/// Reads variables and node outputs as one thread sees them.
pub(crate) struct ThreadScope<'a, 'b, 't> {
    ctx: &'a Ctx<'b, 't>,
    wf: &'a str,
    /// The thread, then its parent, grandparent...: where variables are looked up.
    chain: Vec<i32>,
    run: &'a RunState,
}

impl<'a, 'b, 't> ThreadScope<'a, 'b, 't> {
    /// Opens the tables a scope reads first, so that a storage failure is fatal for the node
    /// (`?`), not an expression error recorded as a workflow failure on this replica only.
    pub(crate) fn new(ctx: &'a Ctx<'b, 't>, run: &'a RunState, thread: i32) -> HResult<Self> {
        ctx.tables.node_runs.open()?;
        ctx.tables.variables.open()?;
        let mut chain = vec![thread];
        let mut cur = run.threads.get(&thread).and_then(|t| t.parent_thread_id);
        while let Some(p) = cur {
            if chain.contains(&p) {
                break;
            }
            chain.push(p);
            cur = run.threads.get(&p).and_then(|t| t.parent_thread_id);
        }
        Ok(ThreadScope {
            ctx,
            wf: run.id(),
            chain,
            run,
        })
    }

    /// The thread that owns variable `name`. An INHERITED_VAR is the nearest ancestor
    /// WfRun's (in its entrypoint thread); the Variable's id says whose.
    fn owner(&self, name: &str) -> HResult<Option<(i32, halter_api::littlehorse::Variable)>> {
        for t in &self.chain {
            if let Some(v) = get_variable(self.ctx, self.wf, *t, name)? {
                return Ok(Some((*t, v)));
            }
        }
        if inherited(self.run, name).is_some() {
            let mut wf = self.wf;
            while let Some(parent) = halter_api::wf_run_id::parent_key(wf) {
                if let Some(v) = get_variable(self.ctx, parent, 0, name)? {
                    return Ok(Some((0, v)));
                }
                wf = parent;
            }
        }
        Ok(None)
    }
}

impl Scope for ThreadScope<'_, '_, '_> {
    fn variable(&mut self, name: &str) -> Result<Option<VariableValue>, String> {
        self.owner(name)
            .map(|o| o.map(|(_, v)| v.value.unwrap_or_default()))
            .map_err(|e| format!("storage: {e}"))
    }

    /// The output of the latest NodeRun of `node_name` in this thread: among the stored ones
    /// and those this command wrote (which win at the same position).
    fn node_output(&mut self, node_name: &str) -> Result<Option<VariableValue>, String> {
        let t = self.chain[0] as u32;
        let written = self
            .ctx
            .written_nodes_of(self.wf, t)
            .rev()
            .find(|(_, nr)| nr.node_name == node_name);
        let from = written.map_or(0, |(p, _)| p);
        let range = self
            .ctx
            .tables
            .node_runs
            .open()
            .map_err(|e| e.to_string())?
            .range((self.wf, t, from)..=(self.wf, t, u32::MAX))
            .map_err(|e| e.to_string())?;
        let mut stored = None;
        for row in range.rev() {
            let (k, v) = row.map_err(|e| e.to_string())?;
            let nr: NodeRun = codec::decode(v.value()).map_err(|e| e.to_string())?;
            if nr.node_name == node_name {
                stored = Some((k.value().2, nr));
                break;
            }
        }
        let latest = match (written, stored) {
            (Some((wp, w)), Some((sp, _))) if wp >= sp => w.clone(),
            (_, Some((sp, s))) => self.ctx.written_node(self.wf, t, sp).cloned().unwrap_or(s),
            (Some((_, w)), None) => w.clone(),
            (None, None) => return Ok(None),
        };
        output_of(self.ctx, &latest)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// What a completed NodeRun produced: an EXTERNAL_EVENT's event content, a START_THREAD's child
/// thread number, a START_MULTIPLE_THREADS's JSON_ARR of child numbers, a TASK's output, a
/// USER_TASK's results; null for the rest.
pub fn output_of(ctx: &Ctx, nr: &NodeRun) -> HResult<VariableValue> {
    if let Some(NodeType::StartThread(s)) = &nr.node_type {
        if let Some(n) = s.child_thread_id {
            return Ok(values::int(n as i64));
        }
    }
    if let Some(NodeType::StartMultipleThreads(s)) = &nr.node_type {
        let list: Vec<String> = s.child_thread_ids.iter().map(i32::to_string).collect();
        return Ok(values::json_arr(format!("[{}]", list.join(","))));
    }
    if let Some(NodeType::Task(t)) = &nr.node_type {
        if let Some(id) = &t.task_run_id {
            return Ok(crate::task::output(ctx, id)?.unwrap_or_default());
        }
    }
    if let Some(NodeType::UserTask(u)) = &nr.node_type {
        if let Some(id) = &u.user_task_run_id {
            return Ok(crate::user_task::output(ctx, id)?.unwrap_or_default());
        }
    }
    if let Some(NodeType::RunChildWf(r)) = &nr.node_type {
        if let Some(id) = &r.child_wf_run_id {
            return Ok(VariableValue {
                value: Some(Value::WfRunId(id.clone())),
            });
        }
    }
    if let Some(NodeType::WaitForChildWf(w)) = &nr.node_type {
        return child_wf_runs::output(ctx, w);
    }
    if let Some(NodeType::ExternalEvent(e)) = &nr.node_type {
        if let Some(id) = &e.external_event_id {
            if let Some(stored) = external_event::get(ctx, id)? {
                return Ok(stored.event.and_then(|e| e.content).unwrap_or_default());
            }
        }
    }
    Ok(values::null())
}

/// Creates thread `number` running `thread_spec_name` and enters its ENTRYPOINT.
pub fn start_thread(
    ctx: &mut Ctx,
    run: &mut RunState,
    number: i32,
    thread_spec_name: &str,
    parent: Option<i32>,
    ty: ThreadType,
) -> HResult<()> {
    let thread = ThreadRun {
        wf_spec_id: run.wf_run.wf_spec_id.clone(),
        number,
        status: LhStatus::Running as i32,
        thread_spec_name: thread_spec_name.to_string(),
        start_time: Some(ts(ctx.now_ms)),
        parent_thread_id: parent,
        r#type: ty as i32,
        ..Default::default()
    };
    run.threads.insert(number, thread);
    let entry = run
        .spec
        .thread_specs
        .get(thread_spec_name)
        .and_then(|t| {
            t.nodes
                .iter()
                .find(|(_, n)| matches!(n.node, Some(node::Node::Entrypoint(_))))
                .map(|(name, _)| name.clone())
        })
        .unwrap_or_default();
    arrive(ctx, run, number, &entry, 0)
}

fn node_run_id(run: &RunState, thread: i32, position: i32) -> NodeRunId {
    NodeRunId {
        wf_run_id: Some(run.wf_run_id()),
        thread_run_number: thread,
        position,
    }
}

/// Marks `nr` failed and writes it; `advance` then handles the failure (see [`failures`]).
pub(crate) fn fail_node(
    ctx: &mut Ctx,
    nr: &mut NodeRun,
    name: &str,
    message: String,
) -> HResult<()> {
    let failure = Failure {
        failure_name: name.to_string(),
        message,
        ..Default::default()
    };
    fail_node_with(ctx, nr, failure)
}

/// [`fail_node`] with a whole Failure (one that carries content, or a child's own).
pub(crate) fn fail_node_with(ctx: &mut Ctx, nr: &mut NodeRun, failure: Failure) -> HResult<()> {
    nr.status = failure_status(&failure.failure_name) as i32;
    nr.end_time = Some(ts(ctx.now_ms));
    nr.error_message = Some(failure.message.clone());
    nr.failures.push(failure);
    put_node(ctx, nr)
}

pub(crate) fn complete_node(ctx: &Ctx, nr: &mut NodeRun) {
    nr.status = LhStatus::Completed as i32;
    nr.end_time = Some(ts(ctx.now_ms));
}

/// Enters node `node_name` of thread `thread` at `position`.
fn arrive(
    ctx: &mut Ctx,
    run: &mut RunState,
    thread: i32,
    node_name: &str,
    position: i32,
) -> HResult<()> {
    let thread_spec_name = run.threads[&thread].thread_spec_name.clone();
    let Some(node) = run
        .spec
        .thread_specs
        .get(&thread_spec_name)
        .and_then(|t| t.nodes.get(node_name))
        .cloned()
    else {
        return threads::fail_thread(
            ctx,
            run,
            thread,
            LhErrorType::InternalError.as_str_name(),
            format!("node '{node_name}' is not in thread spec '{thread_spec_name}'"),
        );
    };
    if let Some(t) = run.threads.get_mut(&thread) {
        t.current_node_position = position;
    }
    let mut nr = NodeRun {
        id: Some(node_run_id(run, thread, position)),
        wf_spec_id: run.wf_run.wf_spec_id.clone(),
        status: LhStatus::Running as i32,
        arrival_time: Some(ts(ctx.now_ms)),
        thread_spec_name,
        node_name: node_name.to_string(),
        ..Default::default()
    };
    match node.node {
        Some(node::Node::Entrypoint(_)) => {
            nr.node_type = Some(NodeType::Entrypoint(EntrypointRun {}));
            complete_node(ctx, &mut nr);
        }
        // A NOP has no NodeRun variant of its own in LittleHorse's API.
        Some(node::Node::Nop(_)) => complete_node(ctx, &mut nr),
        Some(node::Node::Exit(exit)) => {
            nr.node_type = Some(NodeType::Exit(ExitRun {}));
            match exit.result {
                Some(exit_node::Result::FailureDef(f)) => {
                    let mut scope = ThreadScope::new(ctx, run, thread)?;
                    let content = f.content.as_ref().map(|c| expr::eval(c, &mut scope));
                    let mut failure = Failure {
                        failure_name: f.failure_name.clone(),
                        message: f.message.clone(),
                        ..Default::default()
                    };
                    match content {
                        Some(Err(e)) => {
                            return fail_node(
                                ctx,
                                &mut nr,
                                LhErrorType::VarSubError.as_str_name(),
                                e,
                            )
                        }
                        Some(Ok(v)) => failure.content = Some(v),
                        None => {}
                    }
                    return fail_node_with(ctx, &mut nr, failure);
                }
                // The thread ends once its children have (see `child_threads::check_exit`).
                _ => return put_node(ctx, &nr),
            }
        }
        Some(node::Node::ExternalEvent(ee)) => {
            nr.node_type = Some(NodeType::ExternalEvent(ExternalEventNodeRun {
                external_event_def_id: ee.external_event_def_id.clone(),
                mask_correlation_key: ee.mask_correlation_key,
                ..Default::default()
            }));
            let evaluated = {
                let mut scope = ThreadScope::new(ctx, run, thread)?;
                timeout_due(&ee, ctx.now_ms, &mut scope)
                    .and_then(|due| Ok((due, correlation_key(&ee, &mut scope)?)))
            };
            let (due, key) = match evaluated {
                Ok(v) => v,
                Err(e) => return fail_node(ctx, &mut nr, LhErrorType::VarError.as_str_name(), e),
            };
            if let Some(key) = &key {
                if let Some(NodeType::ExternalEvent(r)) = &mut nr.node_type {
                    r.correlation_key = Some(key.clone());
                }
            }
            // An event already put for this WfRun is claimed first; only a NodeRun still
            // waiting meets (or waits for) its correlated event, so none is made in vain.
            let mut claimed = try_claim(ctx, run.id(), thread, &mut nr)?;
            if let (false, Some(key)) = (claimed, &key) {
                let def = ee
                    .external_event_def_id
                    .as_ref()
                    .map(|d| d.name.clone())
                    .unwrap_or_default();
                crate::correlated_event::on_arrival(ctx, run.id(), &def, key, thread, position)?;
                claimed = try_claim(ctx, run.id(), thread, &mut nr)?;
            }
            if !claimed {
                if let Some(due) = due {
                    arm_node_timer(ctx, run.id(), thread, position, due)?;
                }
            }
        }
        Some(node::Node::Sleep(s)) => {
            let mut scope = ThreadScope::new(ctx, run, thread)?;
            let due = match &s.sleep_length {
                Some(SleepLength::RawSeconds(a)) => match expr::eval(a, &mut scope) {
                    Ok(VariableValue {
                        value: Some(Value::Int(secs)),
                    }) => Ok(after_seconds(ctx.now_ms, secs)),
                    Ok(other) => Err(format!(
                        "SLEEP seconds must be an INT, got {}",
                        values::type_name(values::type_of(&other))
                    )),
                    Err(e) => Err(e),
                },
                Some(SleepLength::Timestamp(a)) => match expr::eval(a, &mut scope) {
                    Ok(VariableValue {
                        value: Some(Value::Int(at)),
                    }) => Ok(at),
                    Ok(VariableValue {
                        value: Some(Value::UtcTimestamp(at)),
                    }) => Ok(ms(&at)),
                    Ok(other) => Err(format!(
                        "SLEEP timestamp must be an INT or TIMESTAMP, got {}",
                        values::type_name(values::type_of(&other))
                    )),
                    Err(e) => Err(e),
                },
                Some(SleepLength::IsoDate(a)) => match expr::eval(a, &mut scope) {
                    Ok(VariableValue {
                        value: Some(Value::Str(text)),
                    }) => crate::time::parse_iso_instant(&text),
                    Ok(other) => Err(format!(
                        "SLEEP iso_date must be a STR, got {}",
                        values::type_name(values::type_of(&other))
                    )),
                    Err(e) => Err(e),
                },
                None => Err("SLEEP node without a length".to_string()),
            };
            let due = match due {
                Ok(d) => d,
                Err(e) => return fail_node(ctx, &mut nr, LhErrorType::VarError.as_str_name(), e),
            };
            let matured = due <= ctx.now_ms;
            nr.node_type = Some(NodeType::Sleep(SleepNodeRun {
                maturation_time: Some(ts(due)),
                matured,
            }));
            if matured {
                complete_node(ctx, &mut nr);
            } else {
                arm_node_timer(ctx, run.id(), thread, position, due)?;
            }
        }
        Some(node::Node::StartThread(st)) => {
            return child_threads::start(ctx, run, thread, &st, nr);
        }
        Some(node::Node::StartMultipleThreads(sm)) => {
            return child_threads::start_multiple(ctx, run, thread, &sm, nr);
        }
        // Waits RUNNING; `advance` looks at the condition right after (see `check_condition`).
        Some(node::Node::WaitForCondition(_)) => {
            nr.node_type = Some(NodeType::WaitForCondition(WaitForConditionRun {}));
        }
        Some(node::Node::ThrowEvent(te)) => {
            let def = te
                .event_def_id
                .as_ref()
                .map(|d| d.name.clone())
                .unwrap_or_default();
            let content = match &te.content {
                Some(c) => {
                    let mut scope = ThreadScope::new(ctx, run, thread)?;
                    expr::eval(c, &mut scope)
                }
                None => Err("THROW_EVENT without content".to_string()),
            };
            nr.node_type = Some(NodeType::ThrowEvent(ThrowEventNodeRun::default()));
            let thrown = match content {
                Ok(v) => {
                    let id = node_run_id(run, thread, position);
                    crate::workflow_event::throw(ctx, &id, &def, v)?
                }
                Err(e) => Err(format!("Failed calculating content of workflow event: {e}")),
            };
            match thrown {
                Ok(id) => {
                    nr.node_type = Some(NodeType::ThrowEvent(ThrowEventNodeRun {
                        workflow_event_id: Some(id),
                    }));
                    complete_node(ctx, &mut nr);
                }
                Err(e) => {
                    return fail_node(ctx, &mut nr, LhErrorType::VarSubError.as_str_name(), e)
                }
            }
        }
        Some(node::Node::Task(t)) => {
            // The NodeRun waits RUNNING for its TaskRun (see `task`).
            if let Err((ty, msg)) = crate::task::schedule(ctx, run, thread, &t, &mut nr)? {
                return fail_node(ctx, &mut nr, ty.as_str_name(), msg);
            }
        }
        Some(node::Node::WaitForThreads(w)) => {
            return child_threads::enter(ctx, run, thread, &w, nr);
        }
        Some(node::Node::UserTask(u)) => {
            // The NodeRun waits RUNNING for its UserTaskRun (see `user_task`).
            if let Err((ty, msg)) = crate::user_task::start(ctx, run, thread, &u, &mut nr)? {
                return fail_node(ctx, &mut nr, ty.as_str_name(), msg);
            }
        }
        Some(node::Node::RunChildWf(r)) => {
            return child_wf_runs::run_child(ctx, run, thread, &r, &mut nr);
        }
        Some(node::Node::WaitForChildWf(w)) => {
            return child_wf_runs::wait(ctx, run, thread, &w, nr);
        }
        // PutWfSpec refuses every other node type, so a stored spec never has one.
        _ => {
            return fail_node(
                ctx,
                &mut nr,
                LhErrorType::InternalError.as_str_name(),
                "node type not supported".into(),
            )
        }
    }
    put_node(ctx, &nr)
}

/// When an EXTERNAL_EVENT node's timeout falls due, if it has one: an INT number of seconds
/// (zero or less means "wait forever", as the SDKs' -1 does).
fn timeout_due(
    ee: &halter_api::littlehorse::ExternalEventNode,
    now_ms: i64,
    scope: &mut dyn Scope,
) -> Result<Option<i64>, String> {
    let Some(a) = &ee.timeout_seconds else {
        return Ok(None);
    };
    match expr::eval(a, scope)? {
        VariableValue {
            value: Some(Value::Int(s)),
        } => Ok((s > 0).then(|| after_seconds(now_ms, s))),
        VariableValue { value: None } => Ok(None),
        other => Err(format!(
            "timeout_seconds must be an INT, got {}",
            values::type_name(values::type_of(&other))
        )),
    }
}

/// An EXTERNAL_EVENT node's correlation key, if it has one: a STR that is a valid key.
fn correlation_key(
    ee: &halter_api::littlehorse::ExternalEventNode,
    scope: &mut dyn Scope,
) -> Result<Option<String>, String> {
    let Some(a) = &ee.correlation_key else {
        return Ok(None);
    };
    match expr::eval(a, scope)? {
        VariableValue {
            value: Some(Value::Str(k)),
        } => {
            crate::correlated_event::check_key(&k).map_err(|e| e.to_string())?;
            Ok(Some(k))
        }
        other => Err(format!(
            "Resulting correlation key was of type {}, not STR",
            values::type_name(values::type_of(&other))
        )),
    }
}

fn arm_node_timer(ctx: &mut Ctx, wf: &str, thread: i32, position: i32, due: i64) -> HResult<()> {
    let id = timers::node_run_timer_id(wf, thread, position);
    let kind = timer::Kind::NodeRun(NodeRunTimer {
        wf_run_id: wf.to_string(),
        thread_run_number: thread,
        position,
    });
    timers::arm(ctx, &id, due, kind)
}

/// Lets a waiting EXTERNAL_EVENT NodeRun claim the oldest matching unclaimed event. Completes
/// `nr` (not yet written) and returns true if it claimed one.
pub(crate) fn try_claim(ctx: &mut Ctx, wf: &str, thread: i32, nr: &mut NodeRun) -> HResult<bool> {
    let Some(NodeType::ExternalEvent(ee)) = &nr.node_type else {
        return Ok(false);
    };
    let def = ee
        .external_event_def_id
        .as_ref()
        .map(|d| d.name.clone())
        .unwrap_or_default();
    let position = nr.id.as_ref().map(|i| i.position).unwrap_or_default();
    let Some(event) = external_event::claim_oldest(ctx, wf, &def, thread, position)? else {
        return Ok(false);
    };
    took_event(ctx, wf, thread, nr, &event)?;
    Ok(true)
}

/// The waiting EXTERNAL_EVENT NodeRun `nr` (not yet written) got `event`: it records the event,
/// stops waiting for a correlated event or its timeout, and completes.
pub(crate) fn took_event(
    ctx: &mut Ctx,
    wf: &str,
    thread: i32,
    nr: &mut NodeRun,
    event: &ExternalEvent,
) -> HResult<()> {
    let position = nr.id.as_ref().map(|i| i.position).unwrap_or_default();
    let Some(NodeType::ExternalEvent(ee)) = &mut nr.node_type else {
        return Ok(());
    };
    ee.external_event_id = event.id.clone();
    ee.event_time = event.created_at;
    if let Some(key) = ee.correlation_key.clone() {
        let def = ee
            .external_event_def_id
            .as_ref()
            .map(|d| d.name.clone())
            .unwrap_or_default();
        crate::correlated_event::forget_waiter(ctx, wf, &def, &key, thread, position)?;
    }
    complete_node(ctx, nr);
    timers::cancel(ctx, &timers::node_run_timer_id(wf, thread, position))?;
    Ok(())
}

/// The NodeRun that [`offer_events`] would hand a new event of `def` to when it is the only
/// unclaimed one of its WfRun: the first waiting one, by thread number, that the event's
/// targeting (`thread`, `position`) allows. Returns its thread number and the NodeRun.
pub(crate) fn first_claimant(
    ctx: &Ctx,
    run: &RunState,
    def: &str,
    thread: Option<i32>,
    position: Option<i32>,
) -> HResult<Option<(i32, NodeRun)>> {
    let wf = run.id();
    for t in run.threads.values() {
        if status(t.status) != LhStatus::Running {
            continue;
        }
        let (number, pos) = (t.number, t.current_node_position);
        if thread.is_some_and(|n| n != number) || position.is_some_and(|p| p != pos) {
            continue;
        }
        let Some(nr) = get_node(ctx, wf, number, pos)? else {
            continue;
        };
        if waits_for(&nr, def) {
            return Ok(Some((number, nr)));
        }
    }
    Ok(None)
}

/// Whether `nr` is a RUNNING EXTERNAL_EVENT NodeRun of `def` that has no event yet.
fn waits_for(nr: &NodeRun, def: &str) -> bool {
    status(nr.status) == LhStatus::Running
        && matches!(
            &nr.node_type,
            Some(NodeType::ExternalEvent(e))
                if e.external_event_def_id.as_ref().is_some_and(|d| d.name == def)
                    && e.external_event_id.is_none()
        )
}

/// Offers newly put events of `def` to the WfRun's waiting EXTERNAL_EVENT NodeRuns, lowest
/// thread number first, then moves the run on.
pub fn offer_events(ctx: &mut Ctx, run: &mut RunState, def: &str) -> HResult<()> {
    let wf = run.id().to_string();
    let waiting: Vec<(i32, i32)> = run
        .threads
        .values()
        .filter(|t| status(t.status) == LhStatus::Running)
        .map(|t| (t.number, t.current_node_position))
        .collect();
    for (thread, pos) in waiting {
        let Some(mut nr) = get_node(ctx, &wf, thread, pos)? else {
            continue;
        };
        if waits_for(&nr, def) && try_claim(ctx, &wf, thread, &mut nr)? {
            put_node(ctx, &nr)?;
        }
    }
    advance(ctx, run)
}

/// A node timer fired: an EXTERNAL_EVENT times out, a SLEEP matures.
pub fn fire_node_timer(
    ctx: &mut Ctx,
    run: &mut RunState,
    thread: i32,
    position: i32,
) -> HResult<()> {
    let wf = run.id().to_string();
    let Some(mut nr) = get_node(ctx, &wf, thread, position)? else {
        return Ok(());
    };
    let st = status(nr.status);
    if st != LhStatus::Running && st != LhStatus::Halted {
        // Completed or failed already: a late timer changes nothing.
        return Ok(());
    }
    match &mut nr.node_type {
        Some(NodeType::ExternalEvent(ee)) => {
            if ee.external_event_id.is_some() {
                return Ok(());
            }
            ee.timed_out = true;
            if let (Some(key), Some(def)) = (&ee.correlation_key, &ee.external_event_def_id) {
                crate::correlated_event::forget_waiter(ctx, &wf, &def.name, key, thread, position)?;
            }
            let name = LhErrorType::Timeout.as_str_name();
            let msg = "ExternalEvent did not arrive in time".to_string();
            nr.status = LhStatus::Error as i32;
            nr.end_time = Some(ts(ctx.now_ms));
            nr.error_message = Some(msg.clone());
            nr.failures.push(Failure {
                failure_name: name.to_string(),
                message: msg,
                ..Default::default()
            });
        }
        Some(NodeType::Sleep(s)) => {
            s.matured = true;
            if st == LhStatus::Running {
                complete_node(ctx, &mut nr);
            }
        }
        _ => return Ok(()),
    }
    put_node(ctx, &nr)?;
    // A halted thread fails (or moves on) when it is resumed; a running one does so now.
    advance(ctx, run)
}

/// Moves every RUNNING thread until it waits or ends.
pub fn advance(ctx: &mut Ctx, run: &mut RunState) -> HResult<()> {
    let wf = run.id().to_string();
    let mut steps = 0usize;
    loop {
        let mut progressed = false;
        let numbers: Vec<i32> = run.threads.keys().copied().collect();
        for t in numbers {
            let th = &run.threads[&t];
            if status(th.status) != LhStatus::Running {
                continue;
            }
            let pos = th.current_node_position;
            let Some(nr) = get_node(ctx, &wf, t, pos)? else {
                continue;
            };
            match status(nr.status) {
                LhStatus::Completed => {
                    steps += 1;
                    if steps > MAX_STEPS_PER_COMMAND {
                        threads::fail_thread(
                            ctx,
                            run,
                            t,
                            LhErrorType::InternalError.as_str_name(),
                            format!(
                                "more than {MAX_STEPS_PER_COMMAND} nodes in a row without waiting"
                            ),
                        )?;
                    } else {
                        take_edge(ctx, run, t, &nr, true)?;
                    }
                    progressed = true;
                }
                LhStatus::Error | LhStatus::Exception => {
                    steps += 1;
                    progressed |= failures::on_failed_node(ctx, run, t, nr)?;
                }
                LhStatus::Running if matches!(nr.node_type, Some(NodeType::WaitForThreads(_))) => {
                    progressed |= child_threads::check(ctx, run, t, nr)?;
                }
                LhStatus::Running
                    if matches!(nr.node_type, Some(NodeType::WaitForCondition(_))) =>
                {
                    progressed |= check_condition(ctx, run, t, nr)?;
                }
                LhStatus::Running if matches!(nr.node_type, Some(NodeType::WaitForChildWf(_))) => {
                    progressed |= child_wf_runs::check(ctx, nr)?;
                }
                LhStatus::Running if matches!(nr.node_type, Some(NodeType::Exit(_))) => {
                    progressed |= child_threads::check_exit(ctx, run, t, nr)?;
                }
                _ => {}
            }
        }
        if !progressed {
            return run.save(ctx);
        }
    }
}

fn edge_matches(edge: &Edge, scope: &mut dyn Scope) -> Result<bool, String> {
    match &edge.edge_condition {
        None => Ok(true),
        Some(EdgeCondition::LegacyCondition(c)) => legacy_holds(c, scope),
        Some(EdgeCondition::Condition(a)) => holds(a, "edge condition", scope),
    }
}

fn legacy_holds(c: &LegacyEdgeCondition, scope: &mut dyn Scope) -> Result<bool, String> {
    let l = expr::eval(c.left.as_ref().ok_or("condition without left")?, scope)?;
    let r = expr::eval(c.right.as_ref().ok_or("condition without right")?, scope)?;
    let cmp = Comparator::try_from(c.comparator).map_err(|_| "unknown comparator")?;
    expr::compare(cmp, &l, &r)
}

fn holds(a: &VariableAssignment, what: &str, scope: &mut dyn Scope) -> Result<bool, String> {
    match expr::eval(a, scope)?.value {
        Some(Value::Bool(b)) => Ok(b),
        _ => Err(format!("{what} did not evaluate to a BOOL")),
    }
}

/// A WAIT_FOR_CONDITION NodeRun of thread `t` looks at its condition again (on arrival, and
/// whenever its WfRun advances: every command that changes the WfRun may have changed a
/// variable). Completes it when the condition holds, fails it (`VAR_SUB_ERROR`) when the
/// condition cannot be evaluated; returns whether the NodeRun moved on.
fn check_condition(ctx: &mut Ctx, run: &RunState, t: i32, mut nr: NodeRun) -> HResult<bool> {
    use halter_api::littlehorse::wait_for_condition_node::NodeCondition;
    let cond = run.spec_node(&nr).and_then(|n| match &n.node {
        Some(node::Node::WaitForCondition(w)) => w.node_condition.clone(),
        _ => None,
    });
    let verdict = {
        let mut scope = ThreadScope::new(ctx, run, t)?;
        match &cond {
            Some(NodeCondition::LegacyCondition(c)) => legacy_holds(c, &mut scope),
            Some(NodeCondition::Condition(a)) => holds(a, "condition", &mut scope),
            None => Err("WAIT_FOR_CONDITION without a condition".into()),
        }
    };
    match verdict {
        Ok(false) => Ok(false),
        Ok(true) => {
            complete_node(ctx, &mut nr);
            put_node(ctx, &nr)?;
            Ok(true)
        }
        Err(e) => {
            fail_node(ctx, &mut nr, LhErrorType::VarSubError.as_str_name(), e)?;
            Ok(true)
        }
    }
}

/// Leaves the NodeRun `nr` (completed, or failed with a handled failure) along its first
/// matching edge and enters the next node. The edge's variable mutations apply only if
/// `mutations` (a handled failure skips them: the node produced no output).
pub(crate) fn take_edge(
    ctx: &mut Ctx,
    run: &mut RunState,
    thread: i32,
    nr: &NodeRun,
    mutations: bool,
) -> HResult<()> {
    let Some(node) = run.spec_node(nr).cloned() else {
        return threads::fail_thread(
            ctx,
            run,
            thread,
            LhErrorType::InternalError.as_str_name(),
            "node vanished from spec".into(),
        );
    };
    let mut chosen = None;
    {
        let mut scope = ThreadScope::new(ctx, run, thread)?;
        for edge in &node.outgoing_edges {
            match edge_matches(edge, &mut scope) {
                Ok(true) => {
                    chosen = Some(edge.clone());
                    break;
                }
                Ok(false) => {}
                Err(e) => {
                    let msg = format!("node '{}': {e}", nr.node_name);
                    let name = LhErrorType::VarSubError.as_str_name();
                    return edge_failed(ctx, run, thread, nr, mutations, name, msg);
                }
            }
        }
    }
    let Some(edge) = chosen else {
        return threads::fail_thread(
            ctx,
            run,
            thread,
            LhErrorType::InternalError.as_str_name(),
            format!("no outgoing edge of node '{}' matched", nr.node_name),
        );
    };
    // Each mutation is written at once (later ones see earlier ones); a failing one puts the
    // earlier ones back, so a failed edge changes no variable.
    let output = output_of(ctx, nr)?;
    let mut originals = Vec::new();
    if mutations {
        let scope = ThreadScope::new(ctx, run, thread)?;
        let mut scope = scope;
        for m in &edge.variable_mutations {
            type Write = (
                halter_api::littlehorse::Variable,
                halter_api::littlehorse::Variable,
            );
            let result = (|| -> Result<Write, String> {
                let (owner, var) = scope
                    .owner(&m.lhs_name)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("variable '{}' does not exist", m.lhs_name))?;
                let rhs = match &m.rhs_value {
                    Some(RhsValue::RhsAssignment(a)) => expr::eval(a, &mut scope)?,
                    Some(RhsValue::LiteralValue(v)) => v.clone(),
                    Some(RhsValue::NodeOutput(src)) => match &src.path {
                        Some(halter_api::littlehorse::variable_mutation::node_output_source::Path::Jsonpath(p)) => {
                            expr::select(&output, p)?
                        }
                        _ => output.clone(),
                    },
                    None => return Err("mutation without a right-hand side".into()),
                };
                let op =
                    VariableMutationType::try_from(m.operation).map_err(|_| "unknown operation")?;
                let ty = declared_type_of(run, owner, &m.lhs_name)?;
                let current = var.value.clone().unwrap_or_default();
                let new =
                    crate::mutation::mutate(ty, &current, m.lhs_json_path.as_deref(), op, &rhs)?;
                let mut var = var;
                let original = var.clone();
                var.value = Some(new);
                Ok((var, original))
            })();
            match result {
                // Written at once: later mutations of the same edge see earlier ones.
                Ok((var, original)) => {
                    write_variable(ctx, run, &var)?;
                    originals.push(original);
                }
                Err(e) => {
                    for v in originals.iter().rev() {
                        write_variable(ctx, run, v)?;
                    }
                    let msg = format!("mutating '{}': {e}", m.lhs_name);
                    let name = LhErrorType::VarMutationError.as_str_name();
                    return edge_failed(ctx, run, thread, nr, mutations, name, msg);
                }
            }
            scope = ThreadScope::new(ctx, run, thread)?;
        }
    }
    let next = nr.id.as_ref().map(|i| i.position).unwrap_or_default() + 1;
    arrive(ctx, run, thread, &edge.sink_node_name, next)
}

/// Leaving `nr` failed (a condition or mutation error). On the normal path the NodeRun takes the
/// failure, so its failure handlers may catch it; on the way out of an already handled failure
/// (edges without mutations) the thread fails.
fn edge_failed(
    ctx: &mut Ctx,
    run: &mut RunState,
    thread: i32,
    nr: &NodeRun,
    normal_path: bool,
    name: &str,
    message: String,
) -> HResult<()> {
    if normal_path {
        let mut failed = nr.clone();
        fail_node(ctx, &mut failed, name, message)
    } else {
        threads::fail_thread(ctx, run, thread, name, message)
    }
}

/// How the ThreadSpec of thread `thread` declares its variable `name` (for a variable of a
/// parent WfRun, how this WfRun's spec declares it INHERITED).
fn thread_var_def<'r>(
    run: &'r RunState,
    thread: i32,
    name: &str,
) -> Option<&'r halter_api::littlehorse::ThreadVarDef> {
    let own = run
        .threads
        .get(&thread)
        .and_then(|t| run.spec.thread_specs.get(&t.thread_spec_name))
        .and_then(|t| crate::run_state::var_def(t, name));
    own.or_else(|| inherited(run, name))
}

/// The spec's INHERITED_VAR declaration of `name`, in any thread.
fn inherited<'r>(
    run: &'r RunState,
    name: &str,
) -> Option<&'r halter_api::littlehorse::ThreadVarDef> {
    use halter_api::littlehorse::WfRunVariableAccessLevel;
    run.spec
        .thread_specs
        .values()
        .flat_map(|t| &t.variable_defs)
        .find(|v| {
            v.access_level == WfRunVariableAccessLevel::InheritedVar as i32
                && v.var_def.as_ref().is_some_and(|d| d.name == name)
        })
}

/// Writes a variable a mutation changed. One of an ancestor WfRun is indexed as that WfRun's
/// spec declares it, and the ancestor is woken (a WAIT_FOR_CONDITION there may now hold).
fn write_variable(
    ctx: &mut Ctx,
    run: &RunState,
    v: &halter_api::littlehorse::Variable,
) -> HResult<()> {
    let id = v.id.clone().unwrap_or_default();
    let owner = id.wf_run_id.as_ref().map(wf_run_key).unwrap_or_default();
    if owner == run.id() {
        let searchable =
            thread_var_def(run, id.thread_run_number, &id.name).is_some_and(|d| d.searchable);
        return put_variable(ctx, v, searchable);
    }
    let searchable = RunState::load(ctx, &owner)?
        .and_then(|o| thread_var_def(&o, id.thread_run_number, &id.name).map(|d| d.searchable))
        .unwrap_or(false);
    put_variable(ctx, v, searchable)?;
    ctx.wakes.insert(owner);
    Ok(())
}

fn declared_type_of(
    run: &RunState,
    thread: i32,
    name: &str,
) -> Result<halter_api::littlehorse::VariableType, String> {
    thread_var_def(run, thread, name)
        .and_then(|v| v.var_def.as_ref())
        .ok_or_else(|| format!("variable '{name}' is not declared"))
        .and_then(|d| values::declared_type(d).map_err(str::to_string))
}

/// The entrypoint thread ended: the WfRun ends with it, and its retention starts.
pub(crate) fn finish_wf_run(ctx: &mut Ctx, run: &mut RunState, st: LhStatus) -> HResult<()> {
    run.wf_run.status = st as i32;
    run.wf_run.end_time = Some(ts(ctx.now_ms));
    child_wf_runs::wake_parent_of(ctx, run.id());
    let has_tasks = run.spec.thread_specs.values().any(|t| {
        t.nodes
            .values()
            .any(|n| matches!(n.node, Some(node::Node::Task(_))))
    });
    if has_tasks {
        crate::task::dequeue_all_of(ctx, run.id())?;
    }
    use halter_api::littlehorse::workflow_retention_policy::WfGcPolicy;
    if let Some(WfGcPolicy::SecondsAfterWfTermination(s)) =
        run.spec.retention_policy.and_then(|r| r.wf_gc_policy)
    {
        let id = run.id().to_string();
        timers::arm(
            ctx,
            &timers::wf_run_retention_timer_id(&id),
            after_seconds(ctx.now_ms, s),
            timer::Kind::WfRunRetention(id.clone()),
        )?;
    }
    Ok(())
}

/// StopWfRun: halts the thread and its descendants; for the entrypoint thread, every thread
/// of the WfRun (handlers included) and the WfRun itself.
pub fn halt(ctx: &mut Ctx, run: &mut RunState, thread: i32) -> HResult<()> {
    let manual = || thread_halt_reason::Reason::ManualHalt(Default::default());
    if thread == 0 {
        let all: Vec<i32> = run.threads.keys().copied().collect();
        for t in all {
            threads::halt_thread(ctx, run, t, manual(), false)?;
        }
        if status(run.wf_run.status) == LhStatus::Running {
            run.wf_run.status = LhStatus::Halted as i32;
        }
    } else {
        threads::halt_thread(ctx, run, thread, manual(), true)?;
    }
    run.save(ctx)
}

/// ResumeWfRun: the reverse of [`halt`]; a resumed EXTERNAL_EVENT waits (and claims) again.
pub fn resume(ctx: &mut Ctx, run: &mut RunState, thread: i32) -> HResult<()> {
    let manual =
        |r: &thread_halt_reason::Reason| matches!(r, thread_halt_reason::Reason::ManualHalt(_));
    if thread == 0 {
        let all: Vec<i32> = run.threads.keys().copied().collect();
        for t in all {
            threads::unhalt_thread(ctx, run, t, &manual)?;
        }
        if status(run.wf_run.status) == LhStatus::Halted {
            run.wf_run.status = LhStatus::Running as i32;
        }
    } else {
        threads::unhalt_thread(ctx, run, thread, &manual)?;
    }
    advance(ctx, run)
}
