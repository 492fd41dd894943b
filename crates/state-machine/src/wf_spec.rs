//! PutWfSpec (validation and versioning) and DeleteWfSpec (semantics §8).
//!
//! Validation rejects, with INVALID_ARGUMENT naming the thread, node and rule, anything Halter
//! would otherwise have to ignore: features not built yet are refused, never dropped.

use std::collections::BTreeSet;

use halter_api::halter::Command;
use halter_api::limits::{MAX_ASSIGNMENT_DEPTH, MAX_SPEC_ITEMS};
use halter_api::littlehorse::{
    edge::EdgeCondition,
    exit_node,
    failure_handler_def::{FailureToCatch, LhFailureType},
    node,
    sleep_node::SleepLength,
    variable_assignment,
    variable_mutation::{self, RhsValue},
    AllowedUpdateType, DeleteWfSpecRequest, FailureHandlerDef, LegacyEdgeCondition, LhStatus,
    MetadataStatus, Node, PutWfSpecRequest, ThreadSpec, UserTaskNode, VariableAssignment,
    VariableMutationType, WaitForThreadsStrategy, WfSpec, WfSpecId,
};
use halter_api::names::check_name;
use halter_api::values;
use halter_storage::codec;
use prost::Message;
use redb::ReadableTable;

use crate::ctx::Ctx;
use crate::error::{invalid, HResult, Rejection};
use crate::mutation;
use crate::time::ts;

fn check_local_name(what: &'static str, name: &str) -> Result<(), Rejection> {
    halter_api::names::check_local_name(what, name).map_err(Rejection::from)
}

struct Checker<'a, 'b, 't> {
    ctx: &'a Ctx<'b, 't>,
    thread: &'a str,
    spec: &'a ThreadSpec,
    /// Every ThreadSpec of the WfSpec: handlers and child threads name them.
    all: &'a std::collections::BTreeMap<String, ThreadSpec>,
    /// The variables a thread may use: its own and those of any thread it may run under (names
    /// are unique across the WfSpec, except `INPUT`).
    vars: BTreeSet<&'a str>,
}

impl Checker<'_, '_, '_> {
    fn err(&self, node: Option<&str>, msg: impl std::fmt::Display) -> Rejection {
        match node {
            Some(n) => invalid(format!("thread '{}', node '{n}': {msg}", self.thread)),
            None => invalid(format!("thread '{}': {msg}", self.thread)),
        }
    }

    /// A legacy `left <comparator> right` condition (an edge's or a WAIT_FOR_CONDITION's).
    fn legacy_condition(
        &self,
        node: &str,
        what: &str,
        c: &LegacyEdgeCondition,
    ) -> Result<(), Rejection> {
        let (Some(l), Some(r)) = (&c.left, &c.right) else {
            return Err(self.err(Some(node), format!("{what} needs left and right")));
        };
        self.assignment(node, l, 0)?;
        self.assignment(node, r, 0)
    }

    fn assignment(
        &self,
        node: &str,
        a: &VariableAssignment,
        depth: usize,
    ) -> Result<(), Rejection> {
        use variable_assignment::Source;
        if depth > MAX_ASSIGNMENT_DEPTH {
            return Err(self.err(Some(node), "expression nested too deeply"));
        }
        if let Some(variable_assignment::Path::LhPath(_)) = a.path {
            return Err(self.err(Some(node), "lh_path is not supported yet (use json_path)"));
        }
        if let Some(variable_assignment::Path::JsonPath(p)) = &a.path {
            crate::json_path::parse(p).map_err(|e| self.err(Some(node), e))?;
        }
        if a.target_type.is_some() {
            return Err(self.err(Some(node), "target_type casts are not supported yet"));
        }
        match &a.source {
            None => Err(self.err(Some(node), "a VariableAssignment has no source")),
            Some(Source::VariableName(v)) => {
                if self.vars.contains(v.as_str()) {
                    Ok(())
                } else {
                    Err(self.err(Some(node), format!("refers to undeclared variable '{v}'")))
                }
            }
            Some(Source::LiteralValue(v)) => match values::is_unsupported_kind(v) {
                Some(kind) => Err(self.err(Some(node), format!("{kind} are not supported yet"))),
                None => Ok(()),
            },
            Some(Source::NodeOutput(r)) => {
                if self.spec.nodes.contains_key(&r.node_name) {
                    Ok(())
                } else {
                    Err(self.err(
                        Some(node),
                        format!("refers to the output of unknown node '{}'", r.node_name),
                    ))
                }
            }
            Some(Source::FormatString(f)) => {
                let fmt = f
                    .format
                    .as_ref()
                    .ok_or_else(|| self.err(Some(node), "format string without a format"))?;
                self.assignment(node, fmt, depth + 1)?;
                f.args
                    .iter()
                    .try_for_each(|a| self.assignment(node, a, depth + 1))
            }
            Some(Source::Expression(e)) => {
                use variable_assignment::expression::Operation;
                let (Some(l), Some(r)) = (&e.lhs, &e.rhs) else {
                    return Err(self.err(Some(node), "an expression needs lhs and rhs"));
                };
                match e.operation {
                    Some(Operation::MutationType(op)) => {
                        let op = VariableMutationType::try_from(op)
                            .map_err(|_| self.err(Some(node), "unknown expression operation"))?;
                        if !mutation::supported(op) || op == VariableMutationType::Assign {
                            return Err(self.err(
                                Some(node),
                                format!(
                                    "expression operation {} is not supported",
                                    op.as_str_name()
                                ),
                            ));
                        }
                    }
                    Some(Operation::Comparator(_)) => {}
                    None => return Err(self.err(Some(node), "an expression needs an operation")),
                }
                self.assignment(node, l, depth + 1)?;
                self.assignment(node, r, depth + 1)
            }
            Some(Source::StructBuilder(_)) => {
                Err(self.err(Some(node), "struct builders are not supported yet"))
            }
            Some(Source::SizeOf(_)) => Err(self.err(Some(node), "size_of is not supported yet")),
            Some(Source::MapBuilder(_)) => {
                Err(self.err(Some(node), "map builders are not supported yet"))
            }
        }
    }

    /// A START_THREAD's or START_MULTIPLE_THREADS's thread spec and the variables it gives each
    /// child: the thread must exist and declare every one of them.
    fn child_threads(
        &self,
        node: &str,
        kind: &str,
        thread_spec_name: &str,
        variables: &std::collections::BTreeMap<String, VariableAssignment>,
    ) -> Result<(), Rejection> {
        let Some(child) = self.all.get(thread_spec_name) else {
            return Err(self.err(
                Some(node),
                format!("{kind} of '{thread_spec_name}', which is not one of the thread_specs"),
            ));
        };
        for (var, a) in variables {
            let declared = child
                .variable_defs
                .iter()
                .filter_map(|v| v.var_def.as_ref())
                .any(|d| &d.name == var);
            if !declared {
                return Err(self.err(
                    Some(node),
                    format!("variable '{var}' is not declared by thread '{thread_spec_name}'"),
                ));
            }
            self.assignment(node, a, 0)?;
        }
        Ok(())
    }

    /// A RUN_CHILD_WF node: a named WfSpec exists (at the major version named, if one is) and
    /// its entrypoint declares every input, none of them inherited.
    fn run_child_wf(
        &self,
        name: &str,
        r: &halter_api::littlehorse::RunChildWfNode,
    ) -> Result<(), Rejection> {
        use halter_api::littlehorse::run_child_wf_node::WfSpec as Which;
        use halter_api::littlehorse::WfRunVariableAccessLevel as Access;
        if r.major_version < -1 {
            return Err(self.err(Some(name), "major_version is -1 (the latest) or a version"));
        }
        for a in r.inputs.values() {
            self.assignment(name, a, 0)?;
        }
        if let Some(a) = &r.child_id {
            self.assignment(name, a, 0)?;
        }
        match &r.wf_spec {
            Some(Which::WfSpecVar(a)) => self.assignment(name, a, 0),
            None => Err(self.err(Some(name), "RUN_CHILD_WF without a WfSpec to run")),
            Some(Which::WfSpecName(spec)) => {
                let major = (r.major_version >= 0).then_some(r.major_version as u32);
                let table = self
                    .ctx
                    .tables
                    .wf_specs
                    .open()
                    .map_err(|e| invalid(e.to_string()))?;
                let found = latest(table, spec, major).map_err(|e| invalid(e.to_string()))?;
                let Some(child) = found else {
                    let version = major.map(|m| format!(" with major version {m}"));
                    return Err(self.err(
                        Some(name),
                        format!(
                            "Could not find WfSpec '{spec}'{}",
                            version.unwrap_or_default()
                        ),
                    ));
                };
                for input in r.inputs.keys() {
                    match crate::run_state::entry_var_def(&child, input) {
                        None => {
                            return Err(self.err(
                                Some(name),
                                format!("input '{input}' is not a variable of WfSpec '{spec}'"),
                            ))
                        }
                        Some(d) if d.access_level == Access::InheritedVar as i32 => {
                            return Err(self.err(
                                Some(name),
                                format!(
                                    "input '{input}' is inherited by WfSpec '{spec}', not given"
                                ),
                            ))
                        }
                        Some(_) => {}
                    }
                }
                Ok(())
            }
        }
    }

    /// A USER_TASK node: its def exists (at the version named, if one is), its assignments
    /// are well formed, and its triggers are ones Halter runs.
    fn user_task(&self, node: &str, u: &UserTaskNode) -> Result<(), Rejection> {
        let def =
            crate::user_task::find_def(self.ctx, &u.user_task_def_name, u.user_task_def_version)
                .map_err(|e| invalid(e.to_string()))?;
        if def.is_none() {
            return Err(self.err(
                Some(node),
                match u.user_task_def_version {
                    Some(v) => {
                        format!("No UserTaskDef '{}' with version {v}", u.user_task_def_name)
                    }
                    None => format!("No UserTaskDef named '{}'", u.user_task_def_name),
                },
            ));
        }
        if u.user_id.is_none() && u.user_group.is_none() {
            return Err(self.err(Some(node), "Must specify user_group or user_id"));
        }
        for a in [
            &u.user_id,
            &u.user_group,
            &u.notes,
            &u.on_cancellation_exception_name,
        ]
        .into_iter()
        .flatten()
        {
            self.assignment(node, a, 0)?;
        }
        for t in &u.actions {
            use halter_api::littlehorse::ut_action_trigger::Action;
            match &t.action {
                Some(Action::Cancel(_)) => {}
                Some(Action::Reassign(r)) => {
                    if r.user_id.is_none() && r.user_group.is_none() {
                        return Err(self.err(
                            Some(node),
                            "a reassign trigger needs a user_id or a user_group",
                        ));
                    }
                    for a in [&r.user_id, &r.user_group].into_iter().flatten() {
                        self.assignment(node, a, 0)?;
                    }
                }
                Some(Action::Task(t)) => {
                    let Some(task) = &t.task else {
                        return Err(self.err(Some(node), "a TASK trigger without a task"));
                    };
                    self.task(node, task)?;
                    if !t.mutations.is_empty() {
                        return Err(self.err(
                            Some(node),
                            "mutations on a TASK trigger are not supported yet",
                        ));
                    }
                }
                None => return Err(self.err(Some(node), "a user task trigger without an action")),
            }
            match &t.delay_seconds {
                Some(a) => self.assignment(node, a, 0)?,
                None => {
                    return Err(self.err(Some(node), "a user task trigger without delay_seconds"))
                }
            }
        }
        Ok(())
    }

    /// A TASK node's task, or a user task trigger's reminder task: the TaskDef exists and takes
    /// as many inputs as given, and retries, timeout and backoff are in range.
    fn task(&self, name: &str, t: &halter_api::littlehorse::TaskNode) -> Result<(), Rejection> {
        use halter_api::littlehorse::task_node::TaskToExecute;
        match &t.task_to_execute {
            Some(TaskToExecute::TaskDefId(id)) => {
                let def: Option<halter_api::littlehorse::TaskDef> =
                    crate::ctx::find_named(&self.ctx.tables.task_defs, &id.name)?;
                let Some(def) = def else {
                    return Err(self.err(
                        Some(name),
                        format!("refers to nonexistent TaskDef '{}'", id.name),
                    ));
                };
                if def.input_vars.len() != t.variables.len() {
                    return Err(self.err(
                        Some(name),
                        format!(
                            "TaskDef '{}' takes {} input variables, the node gives {}",
                            id.name,
                            def.input_vars.len(),
                            t.variables.len()
                        ),
                    ));
                }
            }
            Some(TaskToExecute::DynamicTask(a)) => self.assignment(name, a, 0)?,
            None => return Err(self.err(Some(name), "a TASK node without a task")),
        }
        for a in &t.variables {
            self.assignment(name, a, 0)?;
        }
        if !(0..=crate::task::MAX_RETRIES).contains(&t.retries) {
            return Err(self.err(
                Some(name),
                format!("retries must be 0 to {}", crate::task::MAX_RETRIES),
            ));
        }
        if t.timeout_seconds < 0 {
            return Err(self.err(Some(name), "timeout_seconds must not be negative"));
        }
        if let Some(b) = &t.exponential_backoff {
            if b.base_interval_ms <= 0
                || !(b.multiplier.is_finite() && b.multiplier >= 1.0)
                || b.max_delay_ms < i64::from(b.base_interval_ms)
            {
                return Err(self.err(
                    Some(name),
                    "exponential_backoff needs base_interval_ms > 0, multiplier >= 1 and max_delay_ms >= base_interval_ms",
                ));
            }
        }
        Ok(())
    }

    fn handler(&self, node: &str, h: &FailureHandlerDef) -> Result<(), Rejection> {
        if !self.all.contains_key(&h.handler_spec_name) {
            return Err(self.err(
                Some(node),
                format!(
                    "failure handler thread '{}' is not one of the thread_specs",
                    h.handler_spec_name
                ),
            ));
        }
        match &h.failure_to_catch {
            Some(FailureToCatch::SpecificFailure(f)) => {
                check_local_name("failure name", f).map_err(|e| self.err(Some(node), e))
            }
            Some(FailureToCatch::AnyFailureOfType(k)) => LhFailureType::try_from(*k)
                .map(|_| ())
                .map_err(|_| self.err(Some(node), format!("unknown failure type {k}"))),
            None => Ok(()),
        }
    }

    fn node(&self, name: &str, n: &Node) -> Result<bool, Rejection> {
        use node::Node as N;
        check_local_name("node name", name).map_err(|e| self.err(None, e))?;
        for h in &n.failure_handlers {
            self.handler(name, h)?;
        }
        for edge in &n.outgoing_edges {
            if !self.spec.nodes.contains_key(&edge.sink_node_name) {
                return Err(self.err(
                    Some(name),
                    format!("edge to unknown node '{}'", edge.sink_node_name),
                ));
            }
            match &edge.edge_condition {
                None => {}
                Some(EdgeCondition::LegacyCondition(c)) => {
                    self.legacy_condition(name, "an edge condition", c)?
                }
                Some(EdgeCondition::Condition(c)) => self.assignment(name, c, 0)?,
            }
            for m in &edge.variable_mutations {
                if !self.vars.contains(m.lhs_name.as_str()) {
                    return Err(self.err(
                        Some(name),
                        format!("mutation of undeclared variable '{}'", m.lhs_name),
                    ));
                }
                let op = VariableMutationType::try_from(m.operation)
                    .map_err(|_| self.err(Some(name), "unknown mutation operation"))?;
                if !mutation::supported(op) {
                    return Err(self.err(
                        Some(name),
                        format!("mutation {} is not supported yet", op.as_str_name()),
                    ));
                }
                if m.lhs_lh_path.is_some() {
                    return Err(self.err(
                        Some(name),
                        "lhs_lh_path is not supported yet (use lhs_json_path)",
                    ));
                }
                if let Some(p) = &m.lhs_json_path {
                    crate::json_path::parse(p).map_err(|e| self.err(Some(name), e))?;
                }
                match &m.rhs_value {
                    None => {
                        return Err(self.err(
                            Some(name),
                            format!("mutation of '{}' has no right-hand side", m.lhs_name),
                        ))
                    }
                    Some(RhsValue::RhsAssignment(a)) => self.assignment(name, a, 0)?,
                    Some(RhsValue::LiteralValue(v)) => {
                        if let Some(kind) = values::is_unsupported_kind(v) {
                            return Err(
                                self.err(Some(name), format!("{kind} are not supported yet"))
                            );
                        }
                    }
                    Some(RhsValue::NodeOutput(src)) => match &src.path {
                        Some(variable_mutation::node_output_source::Path::LhPath(_)) => {
                            return Err(
                                self.err(Some(name), "lh_path is not supported yet (use jsonpath)")
                            )
                        }
                        Some(variable_mutation::node_output_source::Path::Jsonpath(p)) => {
                            crate::json_path::parse(p).map_err(|e| self.err(Some(name), e))?;
                        }
                        None => {}
                    },
                }
            }
        }
        let is_entry = match &n.node {
            None => return Err(self.err(Some(name), "node has no type")),
            Some(N::Entrypoint(_)) => true,
            Some(N::Nop(_)) => false,
            Some(N::Exit(e)) => {
                match &e.result {
                    Some(exit_node::Result::ReturnContent(a)) => self.assignment(name, a, 0)?,
                    Some(exit_node::Result::FailureDef(f)) => {
                        check_local_name("failure name", &f.failure_name)
                            .map_err(|e| self.err(Some(name), e))?;
                        if let Some(c) = &f.content {
                            self.assignment(name, c, 0)?;
                        }
                    }
                    None => {}
                }
                if !n.outgoing_edges.is_empty() {
                    return Err(self.err(Some(name), "an EXIT node has no outgoing edges"));
                }
                false
            }
            Some(N::ExternalEvent(ee)) => {
                let def = ee
                    .external_event_def_id
                    .as_ref()
                    .map(|d| d.name.as_str())
                    .unwrap_or_default();
                if crate::external_event_def::find(self.ctx, def)?.is_none() {
                    return Err(self.err(Some(name), format!("No ExternalEventDef named '{def}'")));
                }
                if let Some(k) = &ee.correlation_key {
                    self.assignment(name, k, 0)?;
                }
                if let Some(t) = &ee.timeout_seconds {
                    self.assignment(name, t, 0)?;
                }
                false
            }
            Some(N::Sleep(s)) => {
                match &s.sleep_length {
                    Some(SleepLength::RawSeconds(a))
                    | Some(SleepLength::Timestamp(a))
                    | Some(SleepLength::IsoDate(a)) => self.assignment(name, a, 0)?,
                    None => return Err(self.err(Some(name), "SLEEP node without a length")),
                }
                false
            }
            Some(N::Task(t)) => {
                self.task(name, t)?;
                false
            }
            Some(N::StartThread(st)) => {
                self.child_threads(name, "START_THREAD", &st.thread_spec_name, &st.variables)?;
                false
            }
            Some(N::StartMultipleThreads(sm)) => {
                self.child_threads(
                    name,
                    "START_MULTIPLE_THREADS",
                    &sm.thread_spec_name,
                    &sm.variables,
                )?;
                match &sm.iterable {
                    Some(a) => self.assignment(name, a, 0)?,
                    None => {
                        return Err(
                            self.err(Some(name), "START_MULTIPLE_THREADS without an iterable")
                        )
                    }
                }
                false
            }
            Some(N::WaitForThreads(w)) => {
                use halter_api::littlehorse::wait_for_threads_node::ThreadsToWaitForOneOf as Which;
                match &w.threads_to_wait_for {
                    Some(Which::Threads(list)) => {
                        if list.threads.is_empty() {
                            return Err(self.err(Some(name), "WAIT_FOR_THREADS of no threads"));
                        }
                        for t in &list.threads {
                            let a = t.thread_run_number.as_ref().ok_or_else(|| {
                                self.err(Some(name), "a thread to wait for without a number")
                            })?;
                            self.assignment(name, a, 0)?;
                        }
                    }
                    Some(Which::ThreadList(a)) => self.assignment(name, a, 0)?,
                    None => return Err(self.err(Some(name), "WAIT_FOR_THREADS without threads")),
                }
                for h in &w.per_thread_failure_handlers {
                    self.handler(name, h)?;
                }
                if WaitForThreadsStrategy::try_from(w.strategy).is_err() {
                    return Err(self.err(
                        Some(name),
                        format!("unknown WAIT_FOR_THREADS strategy {}", w.strategy),
                    ));
                }
                false
            }
            Some(N::UserTask(u)) => {
                self.user_task(name, u)?;
                false
            }
            Some(N::ThrowEvent(te)) => {
                let Some(def) = te.event_def_id.as_ref().map(|d| d.name.as_str()) else {
                    return Err(self.err(Some(name), "THROW_EVENT without event_def_id"));
                };
                if crate::workflow_event::find_def(self.ctx, def)?.is_none() {
                    return Err(self.err(Some(name), format!("No WorkflowEventDef named '{def}'")));
                }
                match &te.content {
                    Some(c) => self.assignment(name, c, 0)?,
                    None => return Err(self.err(Some(name), "THROW_EVENT without content")),
                }
                false
            }
            Some(N::WaitForCondition(w)) => {
                use halter_api::littlehorse::wait_for_condition_node::NodeCondition;
                match &w.node_condition {
                    Some(NodeCondition::LegacyCondition(c)) => {
                        self.legacy_condition(name, "a condition", c)?
                    }
                    Some(NodeCondition::Condition(c)) => self.assignment(name, c, 0)?,
                    None => {
                        return Err(self.err(Some(name), "WAIT_FOR_CONDITION without a condition"))
                    }
                }
                false
            }
            Some(N::RunChildWf(r)) => {
                self.run_child_wf(name, r)?;
                false
            }
            Some(N::WaitForChildWf(w)) => {
                match &w.child_wf_run_id {
                    Some(a) => self.assignment(name, a, 0)?,
                    None => {
                        return Err(
                            self.err(Some(name), "WAIT_FOR_CHILD_WF without child_wf_run_id")
                        )
                    }
                }
                let source = &w.child_wf_run_source_node;
                let runs_child = |n: &Node| matches!(n.node, Some(N::RunChildWf(_)));
                if !source.is_empty() && !self.spec.nodes.get(source).is_some_and(runs_child) {
                    return Err(self.err(
                        Some(name),
                        format!("child_wf_run_source_node '{source}' is not a RUN_CHILD_WF node of this thread"),
                    ));
                }
                false
            }
        };
        Ok(is_entry)
    }
}

fn validate(ctx: &Ctx, req: &PutWfSpecRequest) -> Result<(), Rejection> {
    check_name("WfSpec name", &req.name)?;
    if let Some(p) = &req.parent_wf_spec {
        check_name("parent WfSpec name", &p.wf_spec_name)?;
        if p.wf_spec_major_version < 0 {
            return Err(invalid(
                "parent_wf_spec.wf_spec_major_version must not be negative",
            ));
        }
    }
    if req.thread_specs.len() > MAX_SPEC_ITEMS {
        return Err(invalid(format!("more than {MAX_SPEC_ITEMS} ThreadSpecs")));
    }
    if !req.thread_specs.contains_key(&req.entrypoint_thread_name) {
        return Err(invalid(format!(
            "entrypoint_thread_name '{}' is not one of the thread_specs",
            req.entrypoint_thread_name
        )));
    }
    if let Some(r) = &req.retention_policy {
        use halter_api::littlehorse::workflow_retention_policy::WfGcPolicy;
        if let Some(WfGcPolicy::SecondsAfterWfTermination(s)) = r.wf_gc_policy {
            if s <= 0 {
                return Err(invalid(
                    "retention_policy.seconds_after_wf_termination must be positive",
                ));
            }
        }
    }
    let mut declared_by = std::collections::BTreeMap::new();
    for (thread, spec) in &req.thread_specs {
        check_local_name("ThreadSpec name", thread)?;
        if spec.nodes.len() > MAX_SPEC_ITEMS {
            return Err(invalid(format!(
                "thread '{thread}': more than {MAX_SPEC_ITEMS} nodes"
            )));
        }
        interrupts(ctx, req, thread, spec)?;
        let mut vars = BTreeSet::new();
        for tv in &spec.variable_defs {
            let def = tv
                .var_def
                .as_ref()
                .ok_or_else(|| invalid(format!("thread '{thread}': a variable without var_def")))?;
            check_local_name("variable name", &def.name)
                .map_err(|e| invalid(format!("thread '{thread}': {e}")))?;
            let ty = values::declared_type(def).map_err(|what| {
                invalid(format!(
                    "thread '{thread}', variable '{}': {what} is not supported yet",
                    def.name
                ))
            })?;
            inherited_var(ctx, req, thread, tv)?;
            if !tv.json_indexes.is_empty() {
                return Err(invalid(format!(
                    "thread '{thread}', variable '{}': json_indexes (searching inside JSON variables) are not supported yet",
                    def.name
                )));
            }
            if let Some(d) = &def.default_value {
                if !values::admits(ty, d) {
                    return Err(invalid(format!(
                        "thread '{thread}', variable '{}': default value is not a {}",
                        def.name,
                        ty.as_str_name()
                    )));
                }
            }
            if !vars.insert(def.name.as_str()) {
                return Err(invalid(format!(
                    "thread '{thread}': variable '{}' declared twice",
                    def.name
                )));
            }
            if def.name != "INPUT" {
                if let Some(other) = declared_by.insert(def.name.as_str(), thread.as_str()) {
                    return Err(invalid(format!(
                        "thread '{thread}': variable '{}' is also declared by thread '{other}' (names are unique across the WfSpec, except INPUT)",
                        def.name
                    )));
                }
            }
        }
    }
    let all_vars: BTreeSet<&str> = declared_by.keys().copied().collect();
    for (thread, spec) in &req.thread_specs {
        let mut vars = all_vars.clone();
        if spec
            .variable_defs
            .iter()
            .filter_map(|v| v.var_def.as_ref())
            .any(|d| d.name == "INPUT")
        {
            vars.insert("INPUT");
        }
        let checker = Checker {
            ctx,
            thread,
            spec,
            all: &req.thread_specs,
            vars,
        };
        let mut entrypoints = 0;
        for (name, n) in &spec.nodes {
            if checker.node(name, n)? {
                entrypoints += 1;
            }
        }
        if entrypoints != 1 {
            return Err(invalid(format!(
                "thread '{thread}': needs exactly one ENTRYPOINT node, found {entrypoints}"
            )));
        }
    }
    Ok(())
}

/// An INHERITED_VAR is declared only by a child WfSpec, and its parent WfSpec's entrypoint
/// declares the variable, not PRIVATE_VAR, with the same type: a child reads and writes the
/// parent WfRun's entrypoint variable (LittleHorse looks there too).
fn inherited_var(
    ctx: &Ctx,
    req: &PutWfSpecRequest,
    thread: &str,
    tv: &halter_api::littlehorse::ThreadVarDef,
) -> Result<(), Rejection> {
    use halter_api::littlehorse::WfRunVariableAccessLevel as Access;
    let Some(def) = &tv.var_def else {
        return Ok(());
    };
    let err = |m: String| invalid(format!("thread '{thread}', variable '{}': {m}", def.name));
    match Access::try_from(tv.access_level) {
        Ok(Access::InheritedVar) => {}
        Ok(_) => return Ok(()),
        Err(_) => return Err(err(format!("unknown access_level {}", tv.access_level))),
    }
    let Some(p) = &req.parent_wf_spec else {
        return Err(err(
            "only a child WfSpec (with parent_wf_spec) may declare an INHERITED_VAR".into(),
        ));
    };
    let table = ctx
        .tables
        .wf_specs
        .open()
        .map_err(|e| invalid(e.to_string()))?;
    let major = p.wf_spec_major_version as u32;
    let parent = latest(table, &p.wf_spec_name, Some(major)).map_err(|e| invalid(e.to_string()))?;
    let Some(parent) = parent else {
        return Err(err(format!(
            "parent WfSpec '{}' (major version {major}) not found",
            p.wf_spec_name
        )));
    };
    let Some(theirs) = crate::run_state::entry_var_def(&parent, &def.name) else {
        return Err(err(format!(
            "INHERITED variable does not exist in the entrypoint of parent WfSpec '{}'",
            p.wf_spec_name
        )));
    };
    if theirs.access_level == Access::PrivateVar as i32 {
        return Err(err(format!(
            "it is PRIVATE_VAR in parent WfSpec '{}'",
            p.wf_spec_name
        )));
    }
    let ty = |d: &halter_api::littlehorse::VariableDef| values::declared_type(d).ok();
    if theirs.var_def.as_ref().and_then(ty) != ty(def) {
        return Err(err(format!(
            "its type differs from the variable in parent WfSpec '{}'",
            p.wf_spec_name
        )));
    }
    Ok(())
}

/// An interrupt's def exists and is used by no EXTERNAL_EVENT node of the WfSpec and by no
/// other ThreadSpec's interrupts; its handler exists and declares at most `INPUT`.
fn interrupts(
    ctx: &Ctx,
    req: &PutWfSpecRequest,
    thread: &str,
    spec: &ThreadSpec,
) -> Result<(), Rejection> {
    for i in &spec.interrupt_defs {
        let def = i
            .external_event_def_id
            .as_ref()
            .map(|d| d.name.as_str())
            .unwrap_or_default();
        let err = |m: String| invalid(format!("thread '{thread}', interrupt on '{def}': {m}"));
        if crate::external_event_def::find(ctx, def)?.is_none() {
            return Err(err(format!("No ExternalEventDef named '{def}'")));
        }
        let Some(handler) = req.thread_specs.get(&i.handler_spec_name) else {
            return Err(err(format!(
                "handler thread '{}' is not one of the thread_specs",
                i.handler_spec_name
            )));
        };
        let hv: Vec<&str> = handler
            .variable_defs
            .iter()
            .filter_map(|v| v.var_def.as_ref())
            .map(|d| d.name.as_str())
            .collect();
        if hv.len() > 1 || hv.first().is_some_and(|n| *n != "INPUT") {
            return Err(err(format!(
                "handler thread '{}' may declare only one variable, named INPUT",
                i.handler_spec_name
            )));
        }
        for (other_thread, other) in &req.thread_specs {
            for (node_name, n) in &other.nodes {
                if let Some(node::Node::ExternalEvent(ee)) = &n.node {
                    if ee
                        .external_event_def_id
                        .as_ref()
                        .is_some_and(|d| d.name == def)
                    {
                        return Err(err(format!(
                            "the def is also waited for by EXTERNAL_EVENT node '{node_name}' of thread '{other_thread}'; a def is either an interrupt trigger or an event to wait for"
                        )));
                    }
                }
            }
            if other_thread != thread
                && other.interrupt_defs.iter().any(|o| {
                    o.external_event_def_id
                        .as_ref()
                        .is_some_and(|d| d.name == def)
                })
            {
                return Err(err(format!(
                    "thread '{other_thread}' also has an interrupt on it; a def triggers interrupts in at most one ThreadSpec"
                )));
            }
        }
        if spec
            .interrupt_defs
            .iter()
            .filter(|o| {
                o.external_event_def_id
                    .as_ref()
                    .is_some_and(|d| d.name == def)
            })
            .count()
            > 1
        {
            return Err(err("declared twice in this thread".into()));
        }
    }
    Ok(())
}

/// The part of a spec that decides whether a change is breaking: the entrypoint thread's
/// variables (name, type, required). Changing them changes what RunWf accepts.
fn signature(
    thread_specs: &std::collections::BTreeMap<String, ThreadSpec>,
    entry: &str,
) -> Vec<(String, i32, bool)> {
    let mut sig: Vec<_> = thread_specs
        .get(entry)
        .map(|t| {
            t.variable_defs
                .iter()
                .filter_map(|tv| {
                    let d = tv.var_def.as_ref()?;
                    let ty = values::declared_type(d).map(|t| t as i32).unwrap_or(-1);
                    Some((d.name.clone(), ty, tv.required))
                })
                .collect()
        })
        .unwrap_or_default();
    sig.sort();
    sig
}

/// The newest version of `name`, restricted to `major` if given.
pub fn latest<T>(table: &T, name: &str, major: Option<u32>) -> HResult<Option<WfSpec>>
where
    T: ReadableTable<(&'static str, u32, u32), &'static [u8]>,
{
    let (lo, hi) = match major {
        Some(m) => ((name, m, 0), (name, m, u32::MAX)),
        None => ((name, 0, 0), (name, u32::MAX, u32::MAX)),
    };
    let last = table.range(lo..=hi)?.next_back().transpose()?;
    match last {
        None => Ok(None),
        Some((_, v)) => Ok(Some(halter_storage::codec::decode(v.value())?)),
    }
}

pub fn put(ctx: &mut Ctx, req: &PutWfSpecRequest) -> HResult<WfSpec> {
    // Opened here, so that a storage failure is fatal, not a rejection from `validate`.
    ctx.tables.external_event_defs.open()?;
    ctx.tables.task_defs.open()?;
    ctx.tables.workflow_event_defs.open()?;
    ctx.tables.user_task_defs.open()?;
    ctx.tables.wf_specs.open()?;
    validate(ctx, req)?;
    let pinned = pin_versions(ctx, req)?;
    let req = pinned.as_ref().unwrap_or(req);
    let body = |r: &PutWfSpecRequest| {
        PutWfSpecRequest {
            allowed_updates: 0,
            ..r.clone()
        }
        .encode_to_vec()
    };
    let current = latest(ctx.tables.wf_specs.open()?, &req.name, None)?;
    let (major, revision) = match &current {
        None => (0, 0),
        Some(cur) => {
            let cur_req = PutWfSpecRequest {
                name: req.name.clone(),
                thread_specs: cur.thread_specs.clone(),
                entrypoint_thread_name: cur.entrypoint_thread_name.clone(),
                retention_policy: cur.retention_policy,
                parent_wf_spec: cur.parent_wf_spec.clone(),
                allowed_updates: 0,
            };
            if body(&cur_req) == body(req) {
                // Identical spec: the existing version, nothing new.
                return Ok(cur.clone());
            }
            let id = cur.id.clone().unwrap_or_default();
            let breaking = signature(&cur.thread_specs, &cur.entrypoint_thread_name)
                != signature(&req.thread_specs, &req.entrypoint_thread_name);
            let allowed = AllowedUpdateType::try_from(req.allowed_updates)
                .unwrap_or(AllowedUpdateType::AllUpdates);
            match (allowed, breaking) {
                (AllowedUpdateType::NoUpdates, _) => {
                    return Err(Rejection::FailedPrecondition(format!(
                        "WfSpec '{}' exists and allowed_updates is NO_UPDATES",
                        req.name
                    ))
                    .into())
                }
                (AllowedUpdateType::MinorRevisionUpdates, true) => {
                    return Err(Rejection::FailedPrecondition(format!(
                        "WfSpec '{}': the change alters the entrypoint variables (a new major version) but allowed_updates is MINOR_REVISION_UPDATES",
                        req.name
                    ))
                    .into())
                }
                (_, true) => (id.major_version + 1, 0),
                (_, false) => (id.major_version, id.revision + 1),
            }
        }
    };
    let spec = WfSpec {
        id: Some(WfSpecId {
            name: req.name.clone(),
            major_version: major,
            revision,
        }),
        created_at: Some(ts(ctx.now_ms)),
        frozen_variables: vec![],
        status: MetadataStatus::Active as i32,
        thread_specs: req.thread_specs.clone(),
        entrypoint_thread_name: req.entrypoint_thread_name.clone(),
        retention_policy: req.retention_policy,
        migration: None,
        parent_wf_spec: req.parent_wf_spec.clone(),
    };
    codec::put(
        ctx.tables.wf_specs.open_mut()?,
        (req.name.as_str(), major as u32, revision as u32),
        &spec,
    )?;
    Ok(spec)
}

/// The request with every USER_TASK node that names no UserTaskDef version, and every
/// RUN_CHILD_WF node that names no major version, pinned to the latest one (`None` if there is
/// none to pin), as LittleHorse does: a WfRun's user tasks keep the form they were designed
/// with when a new version of the def is put later.
fn pin_versions(ctx: &Ctx, req: &PutWfSpecRequest) -> HResult<Option<PutWfSpecRequest>> {
    use halter_api::littlehorse::run_child_wf_node::WfSpec as Which;
    let unpinned = |n: &Node| match &n.node {
        Some(node::Node::UserTask(u)) => u.user_task_def_version.is_none(),
        Some(node::Node::RunChildWf(r)) => {
            r.major_version == -1 && matches!(r.wf_spec, Some(Which::WfSpecName(_)))
        }
        _ => false,
    };
    if !req
        .thread_specs
        .values()
        .any(|t| t.nodes.values().any(unpinned))
    {
        return Ok(None);
    }
    let mut pinned = req.clone();
    for t in pinned.thread_specs.values_mut() {
        for n in t.nodes.values_mut() {
            if let Some(node::Node::UserTask(u)) = &mut n.node {
                if u.user_task_def_version.is_none() {
                    // `validate` found the def, in this same transaction.
                    u.user_task_def_version =
                        crate::user_task::find_def(ctx, &u.user_task_def_name, None)?
                            .map(|d| d.version);
                }
            }
            // A child WfSpec named without a major version runs the latest one at the time of
            // this PutWfSpec, as LittleHorse pins it: a new major version of the child does
            // not change what running parents start.
            if let Some(node::Node::RunChildWf(r)) = &mut n.node {
                if let (-1, Some(Which::WfSpecName(spec))) = (r.major_version, &r.wf_spec) {
                    if let Some(found) = latest(ctx.tables.wf_specs.open()?, spec, None)? {
                        r.major_version = found.id.map_or(0, |i| i.major_version);
                    }
                }
            }
        }
    }
    Ok(Some(pinned))
}

/// Deleting is idempotent, but a version that running WfRuns still use cannot be deleted.
pub fn delete(ctx: &mut Ctx, req: &DeleteWfSpecRequest) -> HResult<()> {
    let id = req.id.as_ref().ok_or_else(|| invalid("missing id"))?;
    check_name("WfSpec name", &id.name)?;
    if id.major_version < 0 || id.revision < 0 {
        return Err(invalid("WfSpec versions are not negative").into());
    }
    let lo = (id.name.as_str(), i64::MIN, "");
    for row in ctx.tables.wf_runs_by_spec.open()?.range(lo..)? {
        let (k, _) = row?;
        let (name, _, run_id) = k.value();
        if name != id.name {
            break;
        }
        let run: Option<halter_api::littlehorse::WfRun> =
            codec::get(ctx.tables.wf_runs.open()?, run_id)?;
        if let Some(run) = run {
            let same = run.wf_spec_id.as_ref() == Some(id);
            let active = !crate::wf_run::is_terminal(run.status());
            if same && active {
                return Err(Rejection::FailedPrecondition(format!(
                    "WfSpec {} v{}.{} is used by WfRun '{run_id}', which is {}",
                    id.name,
                    id.major_version,
                    id.revision,
                    LhStatus::try_from(run.status)
                        .map(|s| s.as_str_name())
                        .unwrap_or("active")
                ))
                .into());
            }
        }
    }
    ctx.tables.wf_specs.open_mut()?.remove((
        id.name.as_str(),
        id.major_version as u32,
        id.revision as u32,
    ))?;
    Ok(())
}

/// A command is `PutWfSpec` — used by tests to build one.
pub fn command(req: PutWfSpecRequest, now_ms: i64) -> Command {
    crate::command(halter_api::halter::command::Kind::PutWfSpec(req), now_ms)
}
