#![allow(clippy::unwrap_used)]
//! Child WfRuns: RUN_CHILD_WF and WAIT_FOR_CHILD_WF nodes, RunWf with a parent, INHERITED_VAR
//! variables, and what a child's end, failure and deletion mean for its parent.
//!
//! Invariants checked here (`docs/child-workflows.md`):
//! - a child is stored under `{parent}_{child}` and answers to its nested WfRunId;
//! - a parent waiting for a child moves on in the same command as the child's end;
//! - a child's EXCEPTION reaches the parent under the child's failure name, its ERROR as
//!   CHILD_FAILURE;
//! - an INHERITED_VAR is the parent's variable: a child's write is the parent's, and wakes it;
//! - deleting a parent deletes its children;
//! - a spec that starts children of itself stops at the nesting bound, without a panic.

mod support;

use std::collections::BTreeMap;

use halter_api::halter::command::Kind;
use halter_api::littlehorse::*;
use halter_api::values;
use halter_state_machine::{query, Rejection};
use support::*;

fn run_child(spec: &str, inputs: Vec<(&str, VariableAssignment)>, to: &str) -> Node {
    node(
        node::Node::RunChildWf(RunChildWfNode {
            wf_spec: Some(run_child_wf_node::WfSpec::WfSpecName(spec.into())),
            major_version: -1,
            inputs: inputs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            child_id: None,
        }),
        vec![edge(to)],
    )
}

/// Waits for the child the RUN_CHILD_WF node `source` started; its output goes to `into`.
fn wait_child(source: &str, into: Option<&str>, to: &str) -> Node {
    let mut e = edge(to);
    if let Some(v) = into {
        e.variable_mutations = vec![assign_output(v)];
    }
    node(
        node::Node::WaitForChildWf(WaitForChildWfNode {
            child_wf_run_id: Some(VariableAssignment {
                source: Some(variable_assignment::Source::NodeOutput(
                    variable_assignment::NodeOutputReference {
                        node_name: source.into(),
                    },
                )),
                ..Default::default()
            }),
            child_wf_run_source_node: source.into(),
        }),
        vec![e],
    )
}

fn exit_returning(a: VariableAssignment) -> Node {
    node(
        node::Node::Exit(ExitNode {
            result: Some(exit_node::Result::ReturnContent(a)),
        }),
        vec![],
    )
}

fn exit_failing(name: &str) -> Node {
    node(
        node::Node::Exit(ExitNode {
            result: Some(exit_node::Result::FailureDef(FailureDef {
                failure_name: name.into(),
                message: format!("{name} thrown"),
                content: None,
            })),
        }),
        vec![],
    )
}

/// `child`: takes INT `n`, waits for event `go`, returns `n`.
fn waiting_child(h: &mut Harness) {
    h.put_def("go");
    h.put_spec(spec(
        "child",
        vec![
            ("0-entry", entry("1-go")),
            ("1-go", wait("go", None, vec![edge("2-exit")])),
            ("2-exit", exit_returning(var("n"))),
        ],
        vec![var_def("n", VariableType::Int, true)],
    ));
}

/// `parent`: starts `child` with n = 7, waits for it, keeps its output in `result`.
fn parent_spec(child: &str) -> PutWfSpecRequest {
    spec(
        "parent",
        vec![
            ("0-entry", entry("1-run")),
            (
                "1-run",
                run_child(child, vec![("n", lit(values::int(7)))], "2-wait"),
            ),
            ("2-wait", wait_child("1-run", Some("result"), "3-exit")),
            ("3-exit", exit()),
        ],
        vec![var_def("result", VariableType::Int, false)],
    )
}

fn node_run_id(wf: &str, thread: i32, position: i32) -> NodeRunId {
    NodeRunId {
        wf_run_id: Some(wf_id(wf)),
        thread_run_number: thread,
        position,
    }
}

#[test]
fn a_parent_waits_for_its_child_and_takes_its_output() {
    let mut h = Harness::new();
    waiting_child(&mut h);
    h.put_spec(parent_spec("child"));
    h.run("parent", "p");
    assert_eq!(h.status("p"), LhStatus::Running);
    // The child's id is the RUN_CHILD_WF node's place; its key nests the parent's.
    let child = h.wf_run("p_0-1");
    assert_eq!(child.id, Some(wf_id("p_0-1")));
    assert_eq!(
        child.id.as_ref().unwrap().parent_wf_run_id.as_deref(),
        Some(&wf_id("p"))
    );
    assert_eq!(child.status(), LhStatus::Running);
    assert_eq!(h.variable("p_0-1", "n"), values::int(7));
    let trigger = child.parent_trigger.unwrap();
    assert_eq!(trigger.triggering_node_run, Some(node_run_id("p", 0, 1)));
    assert_eq!(trigger.waiting_node_run, Some(node_run_id("p", 0, 2)));
    let started = h.node_run("p", 0, 1);
    assert_eq!(started.status(), LhStatus::Completed);
    let Some(node_run::NodeType::RunChildWf(r)) = started.node_type else {
        panic!("{started:?}")
    };
    assert_eq!(r.child_wf_run_id, Some(wf_id("p_0-1")));
    assert_eq!(r.inputs.get("n"), Some(&values::int(7)));
    assert_eq!(h.node_run("p", 0, 2).status(), LhStatus::Running);

    // The event goes to the child by its nested id; its end moves the parent on.
    h.post("p_0-1", "go", values::null());
    assert_eq!(h.status("p_0-1"), LhStatus::Completed);
    assert_eq!(h.status("p"), LhStatus::Completed);
    assert_eq!(h.variable("p", "result"), values::int(7));
    // Each WfRun's objects stay its own.
    assert_eq!(h.events_of("p").len(), 0);
    assert_eq!(h.events_of("p_0-1").len(), 1);
}

#[test]
fn a_child_that_ends_at_once_completes_its_parent_in_the_same_command() {
    let mut h = Harness::new();
    h.put_spec(spec(
        "quick",
        vec![
            ("0-entry", entry("1-exit")),
            ("1-exit", exit_returning(var("n"))),
        ],
        vec![var_def("n", VariableType::Int, true)],
    ));
    h.put_spec(parent_spec("quick"));
    let run = h.run("parent", "p");
    assert_eq!(run.status(), LhStatus::Completed);
    assert_eq!(h.status("p_0-1"), LhStatus::Completed);
    assert_eq!(h.variable("p", "result"), values::int(7));
}

#[test]
fn a_childs_exception_reaches_the_parent_by_name_and_its_error_as_child_failure() {
    let mut h = Harness::new();
    h.put_spec(spec(
        "throws",
        vec![
            ("0-entry", entry("1-exit")),
            ("1-exit", exit_failing("out-of-stock")),
        ],
        vec![var_def("n", VariableType::Int, false)],
    ));
    h.put_spec(parent_spec("throws"));
    h.run("parent", "p");
    assert_eq!(h.status("p_0-1"), LhStatus::Exception);
    assert_eq!(h.status("p"), LhStatus::Exception);
    let waited = h.node_run("p", 0, 2);
    let f = waited.failures.last().unwrap();
    assert_eq!(f.failure_name, "out-of-stock");
    assert!(f.message.starts_with("Child WfRun failed: "), "{f:?}");

    // An input read from an unset variable is null: the child starts with n = null (it is
    // not required) and returns it, so parent and child complete.
    let mut h = Harness::new();
    h.put_spec(spec(
        "broken",
        vec![
            ("0-entry", entry("1-exit")),
            ("1-exit", exit_returning(var("n"))),
        ],
        vec![var_def("n", VariableType::Int, false)],
    ));
    let mut parent = parent_spec("broken");
    let t = parent.thread_specs.get_mut("entrypoint").unwrap();
    t.nodes.insert(
        "1-run".into(),
        run_child("broken", vec![("n", var("missing"))], "2-wait"),
    );
    t.variable_defs
        .push(var_def("missing", VariableType::Int, false));
    h.put_spec(parent);
    h.run("parent", "q");
    // `missing` is null, so the child starts with n = null and returns it: it completes.
    assert_eq!(h.status("q"), LhStatus::Completed);

    // A child that ends in ERROR: its exit mutates a STR into an INT variable.
    let mut h = Harness::new();
    let mut bad = edge("2-exit");
    bad.variable_mutations = vec![VariableMutation {
        lhs_name: "n".into(),
        operation: VariableMutationType::Assign as i32,
        rhs_value: Some(variable_mutation::RhsValue::RhsAssignment(lit(
            values::str("x"),
        ))),
        ..Default::default()
    }];
    h.put_spec(spec(
        "errs",
        vec![
            ("0-entry", entry("1-nop")),
            ("1-nop", node(node::Node::Nop(NopNode {}), vec![bad])),
            ("2-exit", exit()),
        ],
        vec![var_def("n", VariableType::Int, false)],
    ));
    h.put_spec(parent_spec("errs"));
    h.run("parent", "p");
    assert_eq!(h.status("p_0-1"), LhStatus::Error);
    assert_eq!(h.status("p"), LhStatus::Error);
    let f = h.node_run("p", 0, 2).failures.last().cloned().unwrap();
    assert_eq!(f.failure_name, "CHILD_FAILURE");
}

fn inherited(name: &str, ty: VariableType) -> ThreadVarDef {
    ThreadVarDef {
        access_level: WfRunVariableAccessLevel::InheritedVar as i32,
        ..var_def(name, ty, false)
    }
}

fn child_of(parent: &str, mut req: PutWfSpecRequest) -> PutWfSpecRequest {
    req.parent_wf_spec = Some(wf_spec::ParentWfSpecReference {
        wf_spec_name: parent.into(),
        wf_spec_major_version: 0,
    });
    req
}

fn add(var_name: &str, n: i64) -> VariableMutation {
    VariableMutation {
        lhs_name: var_name.into(),
        operation: VariableMutationType::Add as i32,
        rhs_value: Some(variable_mutation::RhsValue::RhsAssignment(lit(
            values::int(n),
        ))),
        ..Default::default()
    }
}

fn run_under(h: &mut Harness, spec: &str, id: &str, parent: &str) -> Result<WfRun, Rejection> {
    h.apply(Kind::RunWf(RunWfRequest {
        wf_spec_name: spec.into(),
        id: Some(id.into()),
        parent_wf_run_id: Some(wf_id(parent)),
        ..Default::default()
    }))
    .response
    .map(|r| match r {
        halter_state_machine::Response::WfRun(w) => w,
        other => panic!("unexpected {other:?}"),
    })
}

/// `name`: waits until its `total` (with `access`) reaches 5.
fn account_spec(name: &str, access: WfRunVariableAccessLevel) -> PutWfSpecRequest {
    spec(
        name,
        vec![
            ("0-entry", entry("1-until")),
            (
                "1-until",
                node(
                    node::Node::WaitForCondition(WaitForConditionNode {
                        node_condition: Some(
                            wait_for_condition_node::NodeCondition::LegacyCondition(
                                LegacyEdgeCondition {
                                    left: Some(var("total")),
                                    comparator: Comparator::GreaterThanEq as i32,
                                    right: Some(lit(values::int(5))),
                                },
                            ),
                        ),
                    }),
                    vec![edge("2-exit")],
                ),
            ),
            ("2-exit", exit()),
        ],
        vec![ThreadVarDef {
            access_level: access as i32,
            var_def: Some(VariableDef {
                default_value: Some(values::int(0)),
                ..var_def("total", VariableType::Int, false).var_def.unwrap()
            }),
            ..Default::default()
        }],
    )
}

/// `account`: waits until its public `total` reaches 5. `deposit` (its child): adds 5 to the
/// inherited `total`.
fn accounts(h: &mut Harness) {
    h.put_spec(account_spec("account", WfRunVariableAccessLevel::PublicVar));
    let mut added = edge("1-exit");
    added.variable_mutations = vec![add("total", 5)];
    h.put_spec(child_of(
        "account",
        spec(
            "deposit",
            vec![
                (
                    "0-entry",
                    node(node::Node::Entrypoint(EntrypointNode {}), vec![added]),
                ),
                ("1-exit", exit()),
            ],
            vec![inherited("total", VariableType::Int)],
        ),
    ));
}

#[test]
fn an_inherited_variable_is_the_parents_and_a_childs_write_wakes_the_parent() {
    let mut h = Harness::new();
    accounts(&mut h);
    h.run("account", "acct");
    assert_eq!(h.status("acct"), LhStatus::Running);
    let child = run_under(&mut h, "deposit", "d1", "acct").unwrap();
    assert_eq!(child.status(), LhStatus::Completed);
    assert_eq!(h.variable("acct", "total"), values::int(5));
    // The child has no `total` of its own.
    let own = h.read(|t| {
        query::get_variable(
            t,
            &VariableId {
                wf_run_id: Some(wf_id("acct_d1")),
                thread_run_number: 0,
                name: "total".into(),
            },
        )
    });
    assert!(own.is_err(), "{own:?}");
    // The parent's WAIT_FOR_CONDITION saw the child's write in the same command.
    assert_eq!(h.status("acct"), LhStatus::Completed);
}

#[test]
fn run_wf_with_a_parent_follows_littlehorses_rules() {
    let mut h = Harness::new();
    accounts(&mut h);
    waiting_child(&mut h);
    h.run("account", "acct");
    h.run_with(
        "child",
        "solo",
        BTreeMap::from([("n".to_string(), values::int(1))]),
    );

    // A child WfSpec needs a parent, and only a child WfSpec takes one.
    let r = h.rejected(Kind::RunWf(RunWfRequest {
        wf_spec_name: "deposit".into(),
        id: Some("d".into()),
        ..Default::default()
    }));
    assert!(
        matches!(&r, Rejection::InvalidArgument(m) if m.contains("requires a parent")),
        "{r:?}"
    );
    let r = h.rejected(Kind::RunWf(RunWfRequest {
        wf_spec_name: "child".into(),
        id: Some("c".into()),
        parent_wf_run_id: Some(wf_id("acct")),
        variables: BTreeMap::from([("n".to_string(), values::int(1))]),
        ..Default::default()
    }));
    assert!(
        matches!(&r, Rejection::InvalidArgument(m) if m.contains("does not refer")),
        "{r:?}"
    );
    // The parent exists, and runs the parent WfSpec.
    let r = h.rejected(Kind::RunWf(RunWfRequest {
        wf_spec_name: "deposit".into(),
        id: Some("d".into()),
        parent_wf_run_id: Some(wf_id("nobody")),
        ..Default::default()
    }));
    assert!(matches!(r, Rejection::FailedPrecondition(_)), "{r:?}");
    let r = h.rejected(Kind::RunWf(RunWfRequest {
        wf_spec_name: "deposit".into(),
        id: Some("d".into()),
        parent_wf_run_id: Some(wf_id("solo")),
        ..Default::default()
    }));
    assert!(
        matches!(&r, Rejection::InvalidArgument(m) if m.contains("run of 'child'")),
        "{r:?}"
    );
    // An inherited variable is not an input; ids keep the name rules at every level.
    let r = h.rejected(Kind::RunWf(RunWfRequest {
        wf_spec_name: "deposit".into(),
        id: Some("d".into()),
        parent_wf_run_id: Some(wf_id("acct")),
        variables: BTreeMap::from([("total".to_string(), values::int(1))]),
        ..Default::default()
    }));
    assert!(
        matches!(&r, Rejection::InvalidArgument(m) if m.contains("inherited")),
        "{r:?}"
    );
    assert!(matches!(
        run_under(&mut h, "deposit", "a_b", "acct"),
        Err(Rejection::InvalidArgument(_))
    ));
    run_under(&mut h, "deposit", "d", "acct").unwrap();
    assert!(matches!(
        run_under(&mut h, "deposit", "d", "acct"),
        Err(Rejection::AlreadyExists(_))
    ));
}

#[test]
fn put_wf_spec_refuses_child_features_it_cannot_honour() {
    let mut h = Harness::new();
    accounts(&mut h);
    h.put_spec(account_spec(
        "private-account",
        WfRunVariableAccessLevel::PrivateVar,
    ));
    let one = |vars| {
        spec(
            "c",
            vec![("0-entry", entry("1-exit")), ("1-exit", exit())],
            vars,
        )
    };
    let cases: Vec<(PutWfSpecRequest, &str)> = vec![
        (
            one(vec![inherited("total", VariableType::Int)]),
            "only a child WfSpec",
        ),
        (
            child_of("account", one(vec![inherited("other", VariableType::Int)])),
            "does not exist",
        ),
        (
            child_of("account", one(vec![inherited("total", VariableType::Str)])),
            "type differs",
        ),
        (
            child_of(
                "private-account",
                one(vec![inherited("total", VariableType::Int)]),
            ),
            "PRIVATE_VAR",
        ),
        (
            child_of("nowhere", one(vec![inherited("total", VariableType::Int)])),
            "not found",
        ),
        (
            spec(
                "p",
                vec![
                    ("0-entry", entry("1-run")),
                    ("1-run", run_child("missing", vec![], "2-exit")),
                    ("2-exit", exit()),
                ],
                vec![],
            ),
            "Could not find WfSpec 'missing'",
        ),
        (
            spec(
                "p",
                vec![
                    ("0-entry", entry("1-run")),
                    (
                        "1-run",
                        run_child("deposit", vec![("total", lit(values::int(1)))], "2-exit"),
                    ),
                    ("2-exit", exit()),
                ],
                vec![],
            ),
            "inherited by WfSpec 'deposit'",
        ),
        (
            spec(
                "p",
                vec![
                    ("0-entry", entry("1-run")),
                    (
                        "1-run",
                        run_child("account", vec![("nope", lit(values::int(1)))], "2-exit"),
                    ),
                    ("2-exit", exit()),
                ],
                vec![],
            ),
            "input 'nope' is not a variable",
        ),
        (
            spec(
                "p",
                vec![
                    ("0-entry", entry("1-wait")),
                    ("1-wait", wait_child("0-entry", None, "2-exit")),
                    ("2-exit", exit()),
                ],
                vec![],
            ),
            "not a RUN_CHILD_WF node",
        ),
    ];
    for (req, expected) in cases {
        let r = h.rejected(Kind::PutWfSpec(req));
        assert!(
            matches!(&r, Rejection::InvalidArgument(m) if m.contains(expected)),
            "{expected}: {r:?}"
        );
    }
}

#[test]
fn deleting_a_parent_deletes_its_children_and_a_deleted_child_fails_its_waiter() {
    let mut h = Harness::new();
    waiting_child(&mut h);
    h.put_spec(parent_spec("child"));
    h.run("parent", "p");
    h.run("parent", "q");
    // A parent whose child is deleted stops waiting.
    h.ok(Kind::DeleteWfRun(DeleteWfRunRequest {
        id: Some(wf_id("q_0-1")),
    }));
    assert_eq!(h.status("q"), LhStatus::Error);
    let f = h.node_run("q", 0, 2).failures.last().cloned().unwrap();
    assert_eq!(f.failure_name, "CHILD_FAILURE");

    h.ok(Kind::DeleteWfRun(DeleteWfRunRequest {
        id: Some(wf_id("p")),
    }));
    for gone in ["p", "p_0-1"] {
        let r = h.read(|t| query::get_wf_run(t, &wf_id(gone)));
        assert!(r.is_err(), "{gone}: {r:?}");
    }
    assert!(h.events_of("p_0-1").is_empty());
}

#[test]
fn a_spec_that_starts_children_of_itself_stops_at_the_nesting_bound() {
    let mut h = Harness::new();
    h.put_spec(spec(
        "loop",
        vec![("0-entry", entry("1-exit")), ("1-exit", exit())],
        vec![],
    ));
    h.put_spec(spec(
        "loop",
        vec![
            ("0-entry", entry("1-run")),
            ("1-run", run_child("loop", vec![], "2-wait")),
            ("2-wait", wait_child("1-run", None, "3-exit")),
            ("3-exit", exit()),
        ],
        vec![],
    ));
    let run = h.run("loop", "top");
    let depth = halter_api::limits::MAX_CHILD_WF_RUN_DEPTH;
    let deepest: String = std::iter::once("top".to_string())
        .chain(std::iter::repeat_n("0-1".to_string(), depth))
        .collect::<Vec<_>>()
        .join("_");
    let f = h.node_run(&deepest, 0, 1).failures.last().cloned().unwrap();
    assert_eq!(f.failure_name, "CHILD_FAILURE");
    assert!(f.message.contains("nest"), "{f:?}");
    // Every level failed in turn, up to the top, in the one command.
    assert_eq!(run.status(), LhStatus::Error);
}

#[test]
fn a_schedule_with_a_parent_starts_children_of_it() {
    let mut h = Harness::new();
    accounts(&mut h);
    h.run("account", "acct");
    // The parent is checked when the schedule is made, as RunWf would check it.
    let r = h.rejected(Kind::ScheduleWf(ScheduleWfRequest {
        id: Some("s".into()),
        wf_spec_name: "deposit".into(),
        cron_expression: "* * * * *".into(),
        parent_wf_run_id: Some(wf_id("nobody")),
        ..Default::default()
    }));
    assert!(matches!(r, Rejection::FailedPrecondition(_)), "{r:?}");
    h.ok(Kind::ScheduleWf(ScheduleWfRequest {
        id: Some("s".into()),
        wf_spec_name: "deposit".into(),
        cron_expression: "* * * * *".into(),
        parent_wf_run_id: Some(wf_id("acct")),
        ..Default::default()
    }));
    let due = (h.now / 60_000 + 1) * 60_000;
    h.advance_ms(due - h.now);
    assert!(h.fire_due() >= 1);
    let child = format!("acct_s-{due}");
    assert_eq!(h.status(&child), LhStatus::Completed);
    assert_eq!(h.variable("acct", "total"), values::int(5));
    assert_eq!(h.status("acct"), LhStatus::Completed);
}
