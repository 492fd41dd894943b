//! One seed: start a 3-node cluster, run the workload under a seeded schedule of faults, heal,
//! give the cluster a liveness window, then check every invariant. The digest hashes the trace
//! of everything that happened and the final state, so two runs of one seed must agree.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use halter_api::halter::Empty;
use halter_api::littlehorse::*;
use halter_api::values;
use madsim::rand::Rng;
use madsim::runtime::Handle;
use sha2::{Digest, Sha256};

use crate::cluster::{status, within, Cluster, ClusterView};
use crate::oracle::Shared;
use crate::{invariants, task_worker, workload};

pub struct Report {
    pub nodes: usize,
    pub digest: String,
    pub acked_events: usize,
    pub runs: usize,
    pub faults: usize,
    /// Nodes that had purged their log behind a snapshot by the end: coverage of snapshot
    /// build, install and restart after purge.
    pub purged_nodes: usize,
    pub coverage: invariants::Coverage,
}

/// How long clients run (simulated time), and how long the healed cluster gets to finish.
const WORKLOAD: Duration = Duration::from_secs(20);
const LIVENESS_WINDOW: Duration = Duration::from_secs(20);
const CLIENTS: usize = 3;
const WORKERS: usize = 2;

pub fn run_seed(seed: u64) -> Result<Report, String> {
    let mut config = madsim::Config::default();
    config.net.packet_loss_rate = 0.002;
    config.net.send_latency = Duration::from_millis(1)..Duration::from_millis(8);
    let mut rt = madsim::runtime::Runtime::with_seed_and_config(seed, config);
    rt.set_time_limit(Duration::from_secs(600));
    rt.block_on(run())
}

fn edge(to: &str) -> Edge {
    Edge {
        sink_node_name: to.into(),
        ..Default::default()
    }
}

fn node(kind: node::Node, to: Option<&str>) -> Node {
    Node {
        outgoing_edges: to.map(edge).into_iter().collect(),
        node: Some(kind),
        ..Default::default()
    }
}

fn wait(to: &str, secs: i64) -> Node {
    wait_for("go", to, secs)
}

fn wait_for(def: &str, to: &str, secs: i64) -> Node {
    node(
        node::Node::ExternalEvent(ExternalEventNode {
            external_event_def_id: Some(ExternalEventDefId { name: def.into() }),
            timeout_seconds: Some(VariableAssignment {
                source: Some(variable_assignment::Source::LiteralValue(values::int(secs))),
                ..Default::default()
            }),
            correlation_key: None,
            mask_correlation_key: false,
        }),
        Some(to),
    )
}

fn thread(nodes: Vec<(&str, Node)>, vars: Vec<ThreadVarDef>) -> ThreadSpec {
    ThreadSpec {
        nodes: nodes.into_iter().map(|(n, x)| (n.to_string(), x)).collect(),
        variable_defs: vars,
        ..Default::default()
    }
}

fn typed_var(name: &str, ty: VariableType) -> VariableDef {
    VariableDef {
        name: name.into(),
        type_def: Some(TypeDefinition {
            defined_type: Some(type_definition::DefinedType::PrimitiveType(ty as i32)),
            masked: false,
        }),
        ..Default::default()
    }
}

fn int_var(name: &str) -> ThreadVarDef {
    ThreadVarDef {
        var_def: Some(typed_var(name, VariableType::Int)),
        ..Default::default()
    }
}

fn var_ref(name: &str) -> VariableAssignment {
    VariableAssignment {
        source: Some(variable_assignment::Source::VariableName(name.into())),
        ..Default::default()
    }
}

/// The TaskDef the simulation's workers execute.
pub const TASK: &str = "sim-task";
/// The correlated def: the key is the WfRun's id (its `order` variable).
pub const PAID: &str = "paid";
/// The WorkflowEventDef thrown (with the WfRun's `order`) once thread 0 got its `go`.
pub const SEEN: &str = "seen";
/// The THROW_EVENT node of thread 0.
pub const THROW_NODE: &str = "3t-throw";
/// The UserTaskDef of the child's review (one required BOOL field `ok`).
pub const REVIEW: &str = "sim-review";
/// The child's USER_TASK NodeRun is thread 1, position 2: its UserTaskRun's guid.
pub const REVIEW_GUID: &str = "1-2";
/// The group the review is assigned to, and its cancel trigger's delay.
pub const REVIEW_GROUP: &str = "sim";
const REVIEW_CANCEL_SECONDS: i64 = 3;

/// The spec every WfRun runs (with `order` = its id). Thread 0 starts a child that waits for
/// the correlated event `paid` keyed by `order` (5 s) and then for the user task `sim-review`
/// (cancelled by its trigger after 3 s, which fails the child), waits for `rare` (2 s; a TIMEOUT is
/// caught by a handler that waits for `go` 2 s more), waits for `go` (3 s),
/// throws the WorkflowEvent `seen` with its `order`, runs the task
/// `sim-task` (3 s per attempt, one retry), then waits for the child. A `poke` interrupts
/// thread 0 with a handler that waits for `go` (2 s; its timeout fails thread 0). Every path
/// ends within seconds, in COMPLETED or ERROR.
/// What the clients' schedules start: entrypoint -> exit, done as it starts.
pub const TICK: &str = "sim-tick";

fn tick_spec() -> PutWfSpecRequest {
    PutWfSpecRequest {
        name: TICK.into(),
        thread_specs: [(
            "entrypoint".to_string(),
            thread(
                vec![
                    (
                        "0-entry",
                        node(node::Node::Entrypoint(EntrypointNode {}), Some("1-exit")),
                    ),
                    (
                        "1-exit",
                        node(node::Node::Exit(ExitNode { result: None }), None),
                    ),
                ],
                vec![],
            ),
        )]
        .into(),
        entrypoint_thread_name: "entrypoint".into(),
        ..Default::default()
    }
}

/// Parent and child WfSpecs: a `sim-family` run starts a `sim-member` child and waits for it;
/// the child waits for `go` (3 s) and writes the event into `paid`, which it inherits from
/// its parent. The parent's first version only declares `paid` (a child's INHERITED_VAR
/// needs its parent's WfSpec, a RUN_CHILD_WF node its child's).
pub const FAMILY: &str = "sim-family";
pub const MEMBER: &str = "sim-member";

fn paid_var(access: WfRunVariableAccessLevel) -> ThreadVarDef {
    ThreadVarDef {
        access_level: access as i32,
        ..int_var("paid")
    }
}

fn family_spec(with_child: bool) -> PutWfSpecRequest {
    let nodes = if with_child {
        vec![
            (
                "0-entry",
                node(node::Node::Entrypoint(EntrypointNode {}), Some("1-run")),
            ),
            (
                "1-run",
                node(
                    node::Node::RunChildWf(RunChildWfNode {
                        wf_spec: Some(run_child_wf_node::WfSpec::WfSpecName(MEMBER.into())),
                        major_version: -1,
                        inputs: Default::default(),
                        child_id: None,
                    }),
                    Some("2-wait"),
                ),
            ),
            (
                "2-wait",
                node(
                    node::Node::WaitForChildWf(WaitForChildWfNode {
                        child_wf_run_id: Some(VariableAssignment {
                            source: Some(variable_assignment::Source::NodeOutput(
                                variable_assignment::NodeOutputReference {
                                    node_name: "1-run".into(),
                                },
                            )),
                            ..Default::default()
                        }),
                        child_wf_run_source_node: "1-run".into(),
                    }),
                    Some("3-exit"),
                ),
            ),
            (
                "3-exit",
                node(node::Node::Exit(ExitNode { result: None }), None),
            ),
        ]
    } else {
        vec![
            (
                "0-entry",
                node(node::Node::Entrypoint(EntrypointNode {}), Some("1-exit")),
            ),
            (
                "1-exit",
                node(node::Node::Exit(ExitNode { result: None }), None),
            ),
        ]
    };
    PutWfSpecRequest {
        name: FAMILY.into(),
        thread_specs: [(
            "entrypoint".to_string(),
            thread(nodes, vec![paid_var(WfRunVariableAccessLevel::PublicVar)]),
        )]
        .into(),
        entrypoint_thread_name: "entrypoint".into(),
        ..Default::default()
    }
}

fn member_spec() -> PutWfSpecRequest {
    let mut wait = wait("2-exit", 3);
    wait.outgoing_edges[0].variable_mutations = vec![assign_output("paid")];
    PutWfSpecRequest {
        name: MEMBER.into(),
        thread_specs: [(
            "entrypoint".to_string(),
            thread(
                vec![
                    (
                        "0-entry",
                        node(node::Node::Entrypoint(EntrypointNode {}), Some("1-go")),
                    ),
                    ("1-go", wait),
                    (
                        "2-exit",
                        node(node::Node::Exit(ExitNode { result: None }), None),
                    ),
                ],
                vec![paid_var(WfRunVariableAccessLevel::InheritedVar)],
            ),
        )]
        .into(),
        entrypoint_thread_name: "entrypoint".into(),
        parent_wf_spec: Some(wf_spec::ParentWfSpecReference {
            wf_spec_name: FAMILY.into(),
            wf_spec_major_version: 0,
        }),
        ..Default::default()
    }
}

pub const GATHER: &str = "sim-gather";
/// The event each of a gather run's parts waits for.
pub const PART: &str = "part";
/// How long a part waits for its event before its handler counts it anyway.
const PART_TIMEOUT_SECONDS: i64 = 3;

/// `var_name` = the node's output, on the edge leaving it.
fn assign_output(var_name: &str) -> VariableMutation {
    VariableMutation {
        lhs_name: var_name.into(),
        operation: VariableMutationType::Assign as i32,
        rhs_value: Some(variable_mutation::RhsValue::NodeOutput(Default::default())),
        ..Default::default()
    }
}

fn add_one(var_name: &str) -> VariableMutation {
    VariableMutation {
        lhs_name: var_name.into(),
        operation: VariableMutationType::Add as i32,
        rhs_value: Some(variable_mutation::RhsValue::RhsAssignment(
            VariableAssignment {
                source: Some(variable_assignment::Source::LiteralValue(values::int(1))),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// Fan-out and fan-in: thread 0 starts one `part` thread per element of `parts`
/// (START_MULTIPLE_THREADS), waits until `done` >= `n` (WAIT_FOR_CONDITION), then joins the
/// parts (WAIT_FOR_THREADS over the list the spawn returned). Each part adds one to its
/// ancestor's `done` exactly once: on the edge after its `part` event, or, if the event does
/// not come in time, in its TIMEOUT handler (a handler's thread goes on without the edge's
/// mutations), so the condition is met only by the last part's write in a child thread.
fn gather_spec() -> PutWfSpecRequest {
    let entry = |to: &str| node(node::Node::Entrypoint(EntrypointNode {}), Some(to));
    let exit = || node(node::Node::Exit(ExitNode { result: None }), None);
    let mut spawn = node(
        node::Node::StartMultipleThreads(StartMultipleThreadsNode {
            thread_spec_name: "part".into(),
            variables: Default::default(),
            iterable: Some(var_ref("parts")),
        }),
        Some("2-until"),
    );
    spawn.outgoing_edges[0].variable_mutations = vec![assign_output("threads")];
    let until = node(
        node::Node::WaitForCondition(WaitForConditionNode {
            node_condition: Some(wait_for_condition_node::NodeCondition::LegacyCondition(
                LegacyEdgeCondition {
                    left: Some(var_ref("done")),
                    comparator: Comparator::GreaterThanEq as i32,
                    right: Some(var_ref("n")),
                },
            )),
        }),
        Some("3-join"),
    );
    let join = node(
        node::Node::WaitForThreads(WaitForThreadsNode {
            threads_to_wait_for: Some(wait_for_threads_node::ThreadsToWaitForOneOf::ThreadList(
                var_ref("threads"),
            )),
            per_thread_failure_handlers: vec![],
            strategy: WaitForThreadsStrategy::WaitForAll as i32,
        }),
        Some("4-exit"),
    );
    let main = thread(
        vec![
            ("0-entry", entry("1-spawn")),
            ("1-spawn", spawn),
            ("2-until", until),
            ("3-join", join),
            ("4-exit", exit()),
        ],
        vec![
            ThreadVarDef {
                var_def: Some(typed_var("parts", VariableType::JsonArr)),
                ..Default::default()
            },
            ThreadVarDef {
                var_def: Some(typed_var("threads", VariableType::JsonArr)),
                ..Default::default()
            },
            int_var("n"),
            int_var("done"),
        ],
    );
    let mut wait = wait_for(PART, "2-exit", PART_TIMEOUT_SECONDS);
    wait.outgoing_edges[0].variable_mutations = vec![add_one("done")];
    wait.failure_handlers = vec![FailureHandlerDef {
        handler_spec_name: "part-late".into(),
        failure_to_catch: Some(failure_handler_def::FailureToCatch::SpecificFailure(
            "TIMEOUT".into(),
        )),
    }];
    let part = thread(
        vec![
            ("0-entry", entry("1-wait")),
            ("1-wait", wait),
            ("2-exit", exit()),
        ],
        vec![int_var("INPUT")],
    );
    let mut counted = entry("1-exit");
    counted.outgoing_edges[0].variable_mutations = vec![add_one("done")];
    let late = thread(vec![("0-entry", counted), ("1-exit", exit())], vec![]);
    PutWfSpecRequest {
        name: GATHER.into(),
        thread_specs: BTreeMap::from([
            ("entrypoint".to_string(), main),
            ("part".to_string(), part),
            ("part-late".to_string(), late),
        ]),
        entrypoint_thread_name: "entrypoint".into(),
        ..Default::default()
    }
}

fn sim_spec() -> PutWfSpecRequest {
    let entry = node(node::Node::Entrypoint(EntrypointNode {}), Some("1-child"));
    let mut start = node(
        node::Node::StartThread(StartThreadNode {
            thread_spec_name: "child".into(),
            variables: Default::default(),
        }),
        Some("2-first"),
    );
    start.outgoing_edges[0].variable_mutations = vec![assign_output("child-number")];
    let mut first = wait_for("rare", "3-second", 2);
    first.failure_handlers = vec![FailureHandlerDef {
        handler_spec_name: "late".into(),
        failure_to_catch: Some(failure_handler_def::FailureToCatch::SpecificFailure(
            "TIMEOUT".into(),
        )),
    }];
    let task = node(
        node::Node::Task(TaskNode {
            task_to_execute: Some(task_node::TaskToExecute::TaskDefId(TaskDefId {
                name: TASK.into(),
            })),
            timeout_seconds: 3,
            retries: 1,
            exponential_backoff: None,
            variables: vec![var_ref("child-number")],
        }),
        Some("5-join"),
    );
    let join = node(
        node::Node::WaitForThreads(WaitForThreadsNode {
            threads_to_wait_for: Some(wait_for_threads_node::ThreadsToWaitForOneOf::Threads(
                wait_for_threads_node::ThreadsToWaitFor {
                    threads: vec![wait_for_threads_node::ThreadToWaitFor {
                        thread_run_number: Some(var_ref("child-number")),
                    }],
                },
            )),
            per_thread_failure_handlers: vec![],
            strategy: WaitForThreadsStrategy::WaitForAll as i32,
        }),
        Some("6-exit"),
    );
    let exit = || node(node::Node::Exit(ExitNode { result: None }), None);
    let waiter = |first: Node| {
        thread(
            vec![
                (
                    "0-entry",
                    node(node::Node::Entrypoint(EntrypointNode {}), Some("1-wait")),
                ),
                ("1-wait", first),
                ("2-exit", exit()),
            ],
            vec![],
        )
    };
    let mut paid = wait_for(PAID, "2-review", 5);
    if let Some(node::Node::ExternalEvent(ee)) = &mut paid.node {
        ee.correlation_key = Some(var_ref("order"));
    }
    let review = node(
        node::Node::UserTask(UserTaskNode {
            user_task_def_name: REVIEW.into(),
            user_group: Some(VariableAssignment {
                source: Some(variable_assignment::Source::LiteralValue(values::str(
                    REVIEW_GROUP,
                ))),
                ..Default::default()
            }),
            actions: vec![UtActionTrigger {
                action: Some(ut_action_trigger::Action::Cancel(Default::default())),
                delay_seconds: Some(VariableAssignment {
                    source: Some(variable_assignment::Source::LiteralValue(values::int(
                        REVIEW_CANCEL_SECONDS,
                    ))),
                    ..Default::default()
                }),
                hook: ut_action_trigger::UtHook::OnArrival as i32,
            }],
            ..Default::default()
        }),
        Some("3-exit"),
    );
    let child = thread(
        vec![
            (
                "0-entry",
                node(node::Node::Entrypoint(EntrypointNode {}), Some("1-wait")),
            ),
            ("1-wait", paid),
            ("2-review", review),
            ("3-exit", exit()),
        ],
        vec![],
    );
    let mut main = thread(
        vec![
            ("0-entry", entry),
            ("1-child", start),
            ("2-first", first),
            ("3-second", wait(THROW_NODE, 3)),
            (
                THROW_NODE,
                node(
                    node::Node::ThrowEvent(ThrowEventNode {
                        event_def_id: Some(WorkflowEventDefId { name: SEEN.into() }),
                        content: Some(var_ref("order")),
                    }),
                    Some("4-task"),
                ),
            ),
            ("4-task", task),
            ("5-join", join),
            ("6-exit", exit()),
        ],
        // Both searchable, so SearchVariable's index follows RunWf (order), an edge's
        // mutation (child-number) and deletion by retention.
        vec![
            ThreadVarDef {
                searchable: true,
                ..int_var("child-number")
            },
            ThreadVarDef {
                var_def: Some(typed_var("order", VariableType::Str)),
                searchable: true,
                ..Default::default()
            },
        ],
    );
    main.interrupt_defs = vec![InterruptDef {
        external_event_def_id: Some(ExternalEventDefId {
            name: "poke".into(),
        }),
        handler_spec_name: "on-poke".into(),
    }];
    let mut on_poke = waiter(wait("2-exit", 2));
    on_poke.variable_defs = vec![int_var("INPUT")];
    PutWfSpecRequest {
        name: "sim".into(),
        thread_specs: BTreeMap::from([
            ("entrypoint".to_string(), main),
            ("child".to_string(), child),
            ("late".to_string(), waiter(wait("2-exit", 2))),
            ("on-poke".to_string(), on_poke),
        ]),
        entrypoint_thread_name: "entrypoint".into(),
        ..Default::default()
    }
}

async fn wait_leader(c: ClusterView, timeout: Duration) -> Option<usize> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        for i in 0..c.len() {
            if let Some(s) = status(&c, i).await {
                if let Some(l) = s.leader_id {
                    return Some((l - 1) as usize);
                }
            }
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn setup(c: &ClusterView) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(30);
    let mut lh = c.lh(0);
    loop {
        let mut failed = None;
        for name in ["go", "poke", "rare", PAID, PART] {
            let r = within(
                4000,
                lh.put_external_event_def(PutExternalEventDefRequest {
                    name: name.into(),
                    correlated_event_config: (name == PAID).then_some(CorrelatedEventConfig {
                        ttl_seconds: Some(3),
                        delete_after_first_correlation: false,
                    }),
                    ..Default::default()
                }),
            )
            .await;
            if !matches!(r, Some(Ok(_))) {
                failed = Some(format!("def {name}: {r:?}"));
            }
        }
        let r = within(
            4000,
            lh.put_task_def(PutTaskDefRequest {
                name: TASK.into(),
                input_vars: vec![typed_var("n", VariableType::Int)],
                return_type: Some(ReturnType {
                    return_type: typed_var("", VariableType::Int).type_def,
                }),
                description: None,
            }),
        )
        .await;
        if !matches!(r, Some(Ok(_))) {
            failed = Some(format!("task def: {r:?}"));
        }
        let r = within(
            4000,
            lh.put_workflow_event_def(PutWorkflowEventDefRequest {
                name: SEEN.into(),
                content_type: Some(ReturnType {
                    return_type: typed_var("", VariableType::Str).type_def,
                }),
            }),
        )
        .await;
        if !matches!(r, Some(Ok(_))) {
            failed = Some(format!("workflow event def: {r:?}"));
        }
        let r = within(
            4000,
            lh.put_user_task_def(PutUserTaskDefRequest {
                name: REVIEW.into(),
                fields: vec![UserTaskField {
                    name: "ok".into(),
                    r#type: VariableType::Bool as i32,
                    display_name: "ok".into(),
                    required: true,
                    description: None,
                }],
                description: None,
            }),
        )
        .await;
        if !matches!(r, Some(Ok(_))) {
            failed = Some(format!("user task def: {r:?}"));
        }
        if failed.is_none() {
            let r = within(4000, lh.put_wf_spec(sim_spec())).await;
            if !matches!(r, Some(Ok(_))) {
                failed = Some(format!("spec: {r:?}"));
            }
            let r = within(4000, lh.put_wf_spec(tick_spec())).await;
            if !matches!(r, Some(Ok(_))) {
                failed = Some(format!("tick spec: {r:?}"));
            }
            for (what, req) in [
                ("family spec", family_spec(false)),
                ("member spec", member_spec()),
                ("family spec with its child", family_spec(true)),
                ("gather spec", gather_spec()),
            ] {
                if failed.is_none() {
                    let r = within(4000, lh.put_wf_spec(req)).await;
                    if !matches!(r, Some(Ok(_))) {
                        failed = Some(format!("{what}: {r:?}"));
                    }
                }
            }
        }
        let Some(why) = failed else {
            return Ok(());
        };
        if Instant::now() > end {
            return Err(format!("setup failed: {why}"));
        }
        madsim::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Watches every node's view of leadership: no node's term goes back (see
/// `invariants::terms_never_go_back`), and which leaders each term had, for the trace.
async fn monitor(c_ips: Vec<std::net::IpAddr>, oracle: Shared, until: Instant) {
    let admins: Vec<_> = c_ips
        .iter()
        .map(|ip| {
            halter_api::halter::cluster_client::ClusterClient::new(crate::cluster::channel(
                format!("{ip}:{}", crate::cluster::PEER_PORT),
            ))
        })
        .collect();
    while Instant::now() < until {
        for (i, a) in admins.iter().enumerate() {
            let mut a = a.clone();
            if let Some(Ok(s)) = within(200, a.status(Empty {})).await {
                let s = s.into_inner();
                let mut o = oracle.lock();
                let seen = o.terms.entry(s.node_id).or_insert(s.term);
                if s.term < *seen {
                    let line = format!(
                        "node {} went back from term {} to term {}",
                        s.node_id, *seen, s.term
                    );
                    drop(o);
                    oracle.violation(line);
                    continue;
                }
                *seen = s.term;
                if s.state == "Leader" && o.leaders.entry(s.term).or_default().insert(s.node_id) {
                    o.trace.push(format!(
                        "leader term={} node={} seen@{i}",
                        s.term, s.node_id
                    ));
                }
            }
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn faults(
    c: &mut Cluster,
    on: &madsim::runtime::NodeHandle,
    oracle: &Shared,
    until: Instant,
) {
    let mut rng = madsim::rand::thread_rng();
    let n = c.nodes.len();
    while Instant::now() < until {
        madsim::time::sleep(Duration::from_millis(rng.gen_range(800..2500))).await;
        let outage = Duration::from_millis(rng.gen_range(300..2500));
        let victim = rng.gen_range(0..n);
        let kind = rng.gen_range(0..8);
        let line = match kind {
            0 => {
                c.kill(victim);
                madsim::time::sleep(outage).await;
                c.restart(victim).await;
                format!("fault: crash node {} for {outage:?}", victim + 1)
            }
            1 => {
                c.clog(victim);
                madsim::time::sleep(outage).await;
                c.unclog(victim);
                format!("fault: isolate node {} for {outage:?}", victim + 1)
            }
            2 => {
                let view = c.view();
                let leader = on
                    .spawn(async move { status(&view, victim).await })
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| s.leader_id)
                    .map(|l| (l - 1) as usize);
                let target = leader.unwrap_or(victim);
                c.clog(target);
                madsim::time::sleep(outage).await;
                c.unclog(target);
                format!("fault: isolate leader {} for {outage:?}", target + 1)
            }
            3 => {
                let other = (victim + 1 + rng.gen_range(0..n - 1)) % n;
                c.clog_link(victim, other);
                madsim::time::sleep(outage).await;
                c.unclog_link(victim, other);
                format!(
                    "fault: cut link {}-{} for {outage:?}",
                    victim + 1,
                    other + 1
                )
            }
            5 => {
                // A majority crashes at once: only what was fsynced survives on a quorum.
                let other = (victim + 1 + rng.gen_range(0..n - 1)) % n;
                c.kill(victim);
                c.kill(other);
                madsim::time::sleep(outage).await;
                c.restart(victim).await;
                c.restart(other).await;
                format!(
                    "fault: crash nodes {} and {} for {outage:?}",
                    victim + 1,
                    other + 1
                )
            }
            6 => {
                // The whole cluster loses power.
                for i in 0..n {
                    c.kill(i);
                }
                madsim::time::sleep(outage).await;
                for i in 0..n {
                    c.restart(i).await;
                }
                format!("fault: crash every node for {outage:?}")
            }
            7 => {
                // Membership change under load: remove a voter, then add it back (as a learner
                // that catches up, then a voter again).
                let view = c.view();
                let outcome = on
                    .spawn(async move { cycle_membership(&view, victim).await })
                    .await
                    .unwrap_or_else(|e| format!("task failed: {e}"));
                format!("fault: remove and re-add node {}: {outcome}", victim + 1)
            }
            _ => {
                let mut a = c.view().admin(victim);
                let r = on
                    .spawn(
                        async move { within(1000, a.trigger_election(Empty {})).await.is_some() },
                    )
                    .await
                    .unwrap_or(false);
                format!("fault: node {} starts an election ({r})", victim + 1)
            }
        };
        let mut o = oracle.lock();
        o.faults += 1;
        o.trace.push(line);
    }
}

/// Removes node `i` from the voters and adds it back. Returns what happened (for the trace).
async fn cycle_membership(c: &ClusterView, i: usize) -> String {
    use halter_api::halter::{AddLearnerRequest, ChangeMembershipRequest, NodeInfo};
    let id = i as u64 + 1;
    let all: Vec<u64> = (1..=c.len() as u64).collect();
    // Ask a node other than the one leaving (any node forwards to the leader).
    let mut admin = c.admin((i + 1) % c.len());
    let without: Vec<u64> = all.iter().copied().filter(|v| *v != id).collect();
    let removed = within(
        5000,
        admin.change_membership(ChangeMembershipRequest {
            voters: without,
            remove_learners: vec![],
        }),
    )
    .await;
    if !matches!(removed, Some(Ok(_))) {
        return format!(
            "remove failed ({})",
            removed.map_or("timeout".into(), |r| format!(
                "{:?}",
                r.err().map(|s| s.code())
            ))
        );
    }
    madsim::time::sleep(Duration::from_millis(300)).await;
    let node = NodeInfo {
        id,
        peer_addr: format!("{}:{}", c.ips[i], crate::cluster::PEER_PORT),
        client_addr: format!("{}:{}", c.ips[i], crate::cluster::CLIENT_PORT),
    };
    // Until it is a voter again, keep trying: the cluster must end with all its members.
    for _ in 0..50 {
        let added = within(
            5000,
            admin.add_learner(AddLearnerRequest {
                node: Some(node.clone()),
            }),
        )
        .await;
        let promoted = match added {
            Some(Ok(_)) => {
                within(
                    5000,
                    admin.change_membership(ChangeMembershipRequest {
                        voters: all.clone(),
                        remove_learners: vec![],
                    }),
                )
                .await
            }
            _ => None,
        };
        if matches!(promoted, Some(Ok(_))) {
            return "ok".into();
        }
        madsim::time::sleep(Duration::from_millis(500)).await;
        admin = c.admin((i + 1 + madsim::rand::thread_rng().gen_range(0..c.len() - 1)) % c.len());
    }
    "re-add did not finish".into()
}

async fn run() -> Result<Report, String> {
    let handle = Handle::current();
    let oracle = Shared::default();
    // Most seeds run 3 nodes; every fourth runs 5.
    let size = if Handle::current().seed().is_multiple_of(4) {
        5
    } else {
        3
    };
    let mut cluster = Cluster::start(size);
    oracle.trace(format!("cluster of {size} nodes"));
    let ips: Vec<_> = cluster.nodes.iter().map(|n| n.ip).collect();
    let checker = handle
        .create_node()
        .name("checker")
        .ip([10, 0, 2, 1].into())
        .build();

    let view = cluster.view();
    checker
        .spawn(wait_leader(view, Duration::from_secs(20)))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no leader elected within 20 s")?;
    // Requests must come from a simulated host: run setup and checks on the checker.
    let view = cluster.view();
    checker
        .spawn(async move { setup(&view).await })
        .await
        .map_err(|e| e.to_string())??;

    let until = Instant::now() + WORKLOAD;
    let mut clients = Vec::new();
    for k in 0..CLIENTS {
        let node = handle
            .create_node()
            .name(format!("client-{k}"))
            .ip([10, 0, 1, k as u8 + 1].into())
            .build();
        clients.push(node.spawn(workload::client(k, ips.clone(), oracle.clone(), until)));
    }
    // Task workers keep polling through the liveness window: an attempt is only timed from
    // its claim, so a task queued when the workers stopped would wait for ever.
    let mut workers = Vec::new();
    for k in 0..WORKERS {
        let node = handle
            .create_node()
            .name(format!("worker-{k}"))
            .ip([10, 0, 4, k as u8 + 1].into())
            .build();
        workers.push(node.spawn(task_worker::worker(
            k,
            ips.clone(),
            oracle.clone(),
            until + LIVENESS_WINDOW - Duration::from_secs(1),
        )));
    }
    let mon = handle
        .create_node()
        .name("monitor")
        .ip([10, 0, 3, 1].into())
        .build();
    let monitor = mon.spawn(monitor(
        ips.clone(),
        oracle.clone(),
        until + LIVENESS_WINDOW,
    ));

    faults(&mut cluster, &checker, &oracle, until).await;
    // Heal: every link back, every node up.
    cluster.heal_network();
    for i in 0..cluster.nodes.len() {
        if !cluster.nodes[i].alive {
            cluster.restart(i).await;
        }
    }
    for c in clients {
        c.await.map_err(|e| format!("client task: {e}"))?;
    }
    madsim::time::sleep(LIVENESS_WINDOW).await;
    monitor.await.map_err(|e| format!("monitor task: {e}"))?;
    for w in workers {
        w.await.map_err(|e| format!("task worker: {e}"))?;
    }

    let view = cluster.view();
    let v = view.clone();
    let purged_nodes = checker
        .spawn(async move {
            let mut n = 0;
            for i in 0..size {
                if status(&v, i)
                    .await
                    .is_some_and(|s| s.purged_index.is_some())
                {
                    n += 1;
                }
            }
            n
        })
        .await
        .map_err(|e| e.to_string())?;
    let o = oracle.clone();
    let checked = checker
        .spawn(async move { invariants::check_all(&view, &o).await })
        .await
        .map_err(|e| e.to_string())?;

    let o = oracle.lock();
    // The trace goes to stderr (the seed's log) when asked for, and always when the seed fails.
    if std::env::var_os("HALTER_SIM_TRACE").is_some()
        || !o.violations.is_empty()
        || checked.is_err()
    {
        for line in &o.trace {
            eprintln!("trace: {line}");
        }
    }
    if let Some(v) = o.violations.first() {
        return Err(format!("{} violation(s), first: {v}", o.violations.len()));
    }
    let (final_digest, coverage) = checked?;
    let mut h = Sha256::new();
    for line in &o.trace {
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    h.update(final_digest.as_bytes());
    Ok(Report {
        nodes: size,
        digest: hex::encode(&h.finalize()[..16]),
        acked_events: o.acked.len(),
        runs: o.runs.len(),
        faults: o.faults,
        purged_nodes,
        coverage,
    })
}
