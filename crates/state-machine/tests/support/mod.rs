//! A state machine on an in-memory redb, plus builders for the requests tests send.
#![allow(dead_code)]

use std::collections::BTreeMap;

use halter_api::halter::{command::Kind, FireTimers, TimerKey};
use halter_api::littlehorse::*;
use halter_api::values;
use halter_state_machine::{apply, command, query, Applied, Rejection, Response};
use halter_storage::{digest::digest, ReadTables, Store, Tables};

pub struct Harness {
    pub store: Store,
    pub now: i64,
    next_id: u64,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        Harness {
            store: Store::in_memory().unwrap(),
            now: 1_700_000_000_000,
            next_id: 0,
        }
    }

    /// Applies one command at the harness's current time, in its own transaction.
    pub fn apply(&mut self, kind: Kind) -> Applied {
        let txn = self.store.begin_write().unwrap();
        let applied = {
            let mut tables = Tables::new(&txn);
            apply(&mut tables, &command(kind, self.now)).unwrap()
        };
        txn.commit().unwrap();
        applied
    }

    pub fn ok(&mut self, kind: Kind) -> Response {
        let a = self.apply(kind);
        a.response.unwrap_or_else(|e| panic!("rejected: {e:?}"))
    }

    pub fn rejected(&mut self, kind: Kind) -> Rejection {
        let before = self.digest();
        let a = self.apply(kind);
        let r = a.response.expect_err("expected a rejection");
        assert_eq!(
            before,
            self.digest(),
            "a rejected command changed the state: {r:?}"
        );
        r
    }

    pub fn read<T>(&self, f: impl FnOnce(&ReadTables) -> T) -> T {
        let txn = self.store.begin_read().unwrap();
        let t = ReadTables::new(&txn);
        f(&t)
    }

    /// A query's answer, its refusal as the client would see it; a storage error panics.
    pub fn query<T>(
        &self,
        f: impl FnOnce(&ReadTables) -> Result<T, halter_state_machine::error::Outcome>,
    ) -> Result<T, Rejection> {
        self.read(f).map_err(|e| match e {
            halter_state_machine::error::Outcome::Rejected(r) => r,
            other => panic!("storage error {other:?}"),
        })
    }

    /// What a node does when it opens a state or installs a snapshot: builds the search
    /// indexes the state lacks. Returns whether it built any.
    pub fn build_missing_indexes(&mut self) -> bool {
        let txn = self.store.begin_write().unwrap();
        let built = {
            let mut t = Tables::new(&txn);
            halter_state_machine::indexes::build_if_missing(&mut t).unwrap()
        };
        txn.commit().unwrap();
        built
    }

    pub fn digest(&self) -> String {
        digest(&self.store.begin_read().unwrap()).unwrap()
    }

    pub fn advance_ms(&mut self, ms: i64) {
        self.now += ms;
    }

    /// Fires every timer due now, as the leader's timer service would.
    pub fn fire_due(&mut self) -> usize {
        let due = self.read(|t| {
            halter_state_machine::timers::due(t.timers().unwrap(), self.now, 10_000).unwrap()
        });
        if due.is_empty() {
            return 0;
        }
        let timers = due
            .into_iter()
            .map(|(due_ms, id)| TimerKey { due_ms, id })
            .collect();
        match self.ok(Kind::FireTimers(FireTimers { timers })) {
            Response::TimersFired(n) => n,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn pending_timers(&self) -> usize {
        self.read(|t| {
            halter_state_machine::timers::due(t.timers().unwrap(), i64::MAX, 1_000_000)
                .unwrap()
                .len()
        })
    }

    pub fn fresh_guid(&mut self) -> String {
        self.next_id += 1;
        format!("{:032x}", self.next_id)
    }

    // ---- requests ----

    pub fn put_def(&mut self, name: &str) -> ExternalEventDef {
        match self.ok(Kind::PutExternalEventDef(PutExternalEventDefRequest {
            name: name.into(),
            ..Default::default()
        })) {
            Response::ExternalEventDef(d) => d,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn put_spec(&mut self, req: PutWfSpecRequest) -> WfSpec {
        match self.ok(Kind::PutWfSpec(req)) {
            Response::WfSpec(s) => s,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn run(&mut self, spec: &str, id: &str) -> WfRun {
        self.run_with(spec, id, BTreeMap::new())
    }

    pub fn run_with(
        &mut self,
        spec: &str,
        id: &str,
        variables: BTreeMap<String, VariableValue>,
    ) -> WfRun {
        match self.ok(Kind::RunWf(RunWfRequest {
            wf_spec_name: spec.into(),
            id: Some(id.into()),
            variables,
            ..Default::default()
        })) {
            Response::WfRun(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn event_req(
        &mut self,
        wf: &str,
        def: &str,
        content: VariableValue,
    ) -> PutExternalEventRequest {
        PutExternalEventRequest {
            wf_run_id: Some(wf_id(wf)),
            external_event_def_id: Some(ExternalEventDefId { name: def.into() }),
            guid: Some(self.fresh_guid()),
            content: Some(content),
            thread_run_number: None,
            node_run_position: None,
        }
    }

    pub fn put_event(&mut self, req: PutExternalEventRequest) -> ExternalEvent {
        match self.ok(Kind::PutExternalEvent(req)) {
            Response::ExternalEvent(e) => e,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn post(&mut self, wf: &str, def: &str, content: VariableValue) -> ExternalEvent {
        let req = self.event_req(wf, def, content);
        self.put_event(req)
    }

    pub fn wf_run(&self, id: &str) -> WfRun {
        self.read(|t| query::get_wf_run(t, &wf_id(id)).unwrap())
    }

    pub fn status(&self, id: &str) -> LhStatus {
        self.wf_run(id).status()
    }

    pub fn node_run(&self, wf: &str, thread: i32, pos: i32) -> NodeRun {
        self.read(|t| {
            query::get_node_run(
                t,
                &NodeRunId {
                    wf_run_id: Some(wf_id(wf)),
                    thread_run_number: thread,
                    position: pos,
                },
            )
            .unwrap()
        })
    }

    pub fn variable(&self, wf: &str, name: &str) -> VariableValue {
        self.thread_variable(wf, 0, name)
    }

    pub fn thread_variable(&self, wf: &str, thread: i32, name: &str) -> VariableValue {
        self.read(|t| {
            query::get_variable(
                t,
                &VariableId {
                    wf_run_id: Some(wf_id(wf)),
                    thread_run_number: thread,
                    name: name.into(),
                },
            )
            .unwrap()
            .value
            .unwrap_or_default()
        })
    }

    /// Thread `n` of WfRun `wf`.
    pub fn thread_run(&self, wf: &str, n: i32) -> ThreadRun {
        self.wf_run(wf)
            .thread_runs
            .into_iter()
            .find(|t| t.number == n)
            .unwrap_or_else(|| panic!("WfRun {wf} has no thread {n}"))
    }

    pub fn event(&self, wf: &str, def: &str, guid: &str) -> ExternalEvent {
        self.read(|t| query::get_external_event(t, &event_id(wf, def, guid)).unwrap())
    }

    pub fn events_of(&self, wf: &str) -> Vec<ExternalEvent> {
        self.read(|t| {
            query::list_external_events(
                t,
                &ListExternalEventsRequest {
                    wf_run_id: Some(wf_id(wf)),
                    ..Default::default()
                },
            )
            .unwrap()
            .results
        })
    }
}

/// The WfRunId of `id`, its text form: a child's is `{parent}_{child}`.
pub fn wf_id(id: &str) -> WfRunId {
    halter_api::wf_run_id::wf_run_id_of(id)
}

pub fn event_id(wf: &str, def: &str, guid: &str) -> ExternalEventId {
    ExternalEventId {
        wf_run_id: Some(wf_id(wf)),
        external_event_def_id: Some(ExternalEventDefId { name: def.into() }),
        guid: guid.into(),
    }
}

// ---- spec builders ----

pub fn lit(v: VariableValue) -> VariableAssignment {
    VariableAssignment {
        source: Some(variable_assignment::Source::LiteralValue(v)),
        ..Default::default()
    }
}

pub fn var(name: &str) -> VariableAssignment {
    VariableAssignment {
        source: Some(variable_assignment::Source::VariableName(name.into())),
        ..Default::default()
    }
}

pub fn edge(to: &str) -> Edge {
    Edge {
        sink_node_name: to.into(),
        ..Default::default()
    }
}

pub fn node(kind: node::Node, edges: Vec<Edge>) -> Node {
    Node {
        outgoing_edges: edges,
        failure_handlers: vec![],
        node: Some(kind),
    }
}

pub fn entry(to: &str) -> Node {
    node(node::Node::Entrypoint(EntrypointNode {}), vec![edge(to)])
}

pub fn exit() -> Node {
    node(node::Node::Exit(ExitNode { result: None }), vec![])
}

pub fn wait(def: &str, timeout: Option<i64>, edges: Vec<Edge>) -> Node {
    node(
        node::Node::ExternalEvent(ExternalEventNode {
            external_event_def_id: Some(ExternalEventDefId { name: def.into() }),
            timeout_seconds: timeout.map(|t| lit(values::int(t))),
            correlation_key: None,
            mask_correlation_key: false,
        }),
        edges,
    )
}

pub fn var_def(name: &str, ty: VariableType, required: bool) -> ThreadVarDef {
    ThreadVarDef {
        var_def: Some(VariableDef {
            r#type: None,
            name: name.into(),
            default_value: None,
            masked_value: None,
            type_def: Some(TypeDefinition {
                defined_type: Some(type_definition::DefinedType::PrimitiveType(ty as i32)),
                masked: false,
            }),
        }),
        required,
        ..Default::default()
    }
}

/// A ThreadSpec made of `nodes`.
pub fn thread(nodes: Vec<(&str, Node)>, vars: Vec<ThreadVarDef>) -> ThreadSpec {
    ThreadSpec {
        nodes: nodes
            .into_iter()
            .map(|(n, node)| (n.to_string(), node))
            .collect(),
        variable_defs: vars,
        interrupt_defs: vec![],
        retention_policy: None,
    }
}

/// A spec with one thread `entrypoint` made of `nodes`.
pub fn spec(name: &str, nodes: Vec<(&str, Node)>, vars: Vec<ThreadVarDef>) -> PutWfSpecRequest {
    let thread = thread(nodes, vars);
    PutWfSpecRequest {
        name: name.into(),
        thread_specs: BTreeMap::from([("entrypoint".to_string(), thread)]),
        entrypoint_thread_name: "entrypoint".into(),
        ..Default::default()
    }
}

/// entrypoint -> wait for `def` (with `timeout`) -> exit.
pub fn wait_spec(name: &str, def: &str, timeout: Option<i64>) -> PutWfSpecRequest {
    spec(
        name,
        vec![
            ("0-entrypoint-ENTRYPOINT", entry("1-wait-EXTERNAL_EVENT")),
            (
                "1-wait-EXTERNAL_EVENT",
                wait(def, timeout, vec![edge("2-exit-EXIT")]),
            ),
            ("2-exit-EXIT", exit()),
        ],
        vec![],
    )
}

/// An edge mutation: `name` = the node's output.
pub fn assign_output(name: &str) -> VariableMutation {
    VariableMutation {
        lhs_name: name.into(),
        operation: VariableMutationType::Assign as i32,
        rhs_value: Some(variable_mutation::RhsValue::NodeOutput(Default::default())),
        ..Default::default()
    }
}

/// A START_THREAD node of `thread` that puts the child's number into `number_var`.
pub fn start_thread(thread: &str, to: &str, number_var: &str) -> Node {
    let mut e = edge(to);
    e.variable_mutations = vec![assign_output(number_var)];
    node(
        node::Node::StartThread(StartThreadNode {
            thread_spec_name: thread.into(),
            variables: Default::default(),
        }),
        vec![e],
    )
}

/// A WAIT_FOR_THREADS node for the thread numbers in `vars`.
pub fn wait_threads(
    vars: &[&str],
    strategy: WaitForThreadsStrategy,
    per_thread: Vec<FailureHandlerDef>,
    to: &str,
) -> Node {
    node(
        node::Node::WaitForThreads(WaitForThreadsNode {
            threads_to_wait_for: Some(wait_for_threads_node::ThreadsToWaitForOneOf::Threads(
                wait_for_threads_node::ThreadsToWaitFor {
                    threads: vars
                        .iter()
                        .map(|v| wait_for_threads_node::ThreadToWaitFor {
                            thread_run_number: Some(var(v)),
                        })
                        .collect(),
                },
            )),
            per_thread_failure_handlers: per_thread,
            strategy: strategy as i32,
        }),
        vec![edge(to)],
    )
}
