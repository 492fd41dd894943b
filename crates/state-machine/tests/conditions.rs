#![allow(clippy::unwrap_used)]
//! WAIT_FOR_CONDITION: the NodeRun waits RUNNING until its condition over the thread's
//! variables holds, looked at again whenever the WfRun advances (here: a child thread
//! mutating the parent's variable), and fails with VAR_SUB_ERROR when the condition cannot be
//! evaluated.

mod support;

use halter_api::halter::command::Kind;
use halter_api::littlehorse::*;
use halter_api::values;
use halter_state_machine::Rejection;
use support::*;

fn until(left: VariableAssignment, cmp: Comparator, right: VariableAssignment, to: &str) -> Node {
    node(
        node::Node::WaitForCondition(WaitForConditionNode {
            node_condition: Some(wait_for_condition_node::NodeCondition::LegacyCondition(
                LegacyEdgeCondition {
                    left: Some(left),
                    comparator: cmp as i32,
                    right: Some(right),
                },
            )),
        }),
        vec![edge(to)],
    )
}

fn add_one(var_name: &str) -> VariableMutation {
    VariableMutation {
        lhs_name: var_name.into(),
        operation: VariableMutationType::Add as i32,
        rhs_value: Some(variable_mutation::RhsValue::RhsAssignment(lit(
            values::int(1),
        ))),
        ..Default::default()
    }
}

/// Thread 0 starts a `voter` child and waits until `votes` >= `needed`; each `vote` event the
/// child takes adds one to its parent's `votes`.
fn voting_spec(name: &str, needed: VariableAssignment) -> PutWfSpecRequest {
    let mut counted = edge("2-vote");
    counted.variable_mutations = vec![add_one("votes")];
    let mut counted_again = edge("3-exit");
    counted_again.variable_mutations = vec![add_one("votes")];
    let voter = thread(
        vec![
            ("0-entry", entry("1-vote")),
            ("1-vote", wait("vote", None, vec![counted])),
            ("2-vote", wait("vote", None, vec![counted_again])),
            ("3-exit", exit()),
        ],
        vec![],
    );
    let mut req = spec(
        name,
        vec![
            ("0-entry", entry("1-start")),
            ("1-start", start_thread("voter", "2-until", "voter-number")),
            (
                "2-until",
                until(var("votes"), Comparator::GreaterThanEq, needed, "3-exit"),
            ),
            ("3-exit", exit()),
        ],
        vec![
            ThreadVarDef {
                var_def: Some(VariableDef {
                    default_value: Some(values::int(0)),
                    ..var_def("votes", VariableType::Int, false).var_def.unwrap()
                }),
                ..Default::default()
            },
            var_def("voter-number", VariableType::Int, false),
        ],
    );
    req.thread_specs.insert("voter".into(), voter);
    req
}

#[test]
fn the_node_waits_until_another_thread_makes_its_condition_true() {
    let mut h = Harness::new();
    h.put_def("vote");
    h.put_spec(voting_spec("vote-twice", lit(values::int(2))));
    h.run("vote-twice", "w1");
    let waiting = h.node_run("w1", 0, 2);
    assert_eq!(waiting.status, LhStatus::Running as i32);
    assert!(matches!(
        waiting.node_type,
        Some(node_run::NodeType::WaitForCondition(_))
    ));

    h.post("w1", "vote", values::null());
    assert_eq!(h.variable("w1", "votes"), values::int(1));
    assert_eq!(h.node_run("w1", 0, 2).status, LhStatus::Running as i32);
    assert_eq!(h.status("w1"), LhStatus::Running);

    h.post("w1", "vote", values::null());
    assert_eq!(h.variable("w1", "votes"), values::int(2));
    assert_eq!(h.node_run("w1", 0, 2).status, LhStatus::Completed as i32);
    assert_eq!(h.status("w1"), LhStatus::Completed);
}

#[test]
fn a_condition_true_on_arrival_passes_at_once_and_a_bad_one_fails_the_node() {
    let mut h = Harness::new();
    h.put_def("vote");
    // votes (0) >= 0: passes in RunWf's own command; the WfRun then waits for its child.
    h.put_spec(voting_spec("no-votes", lit(values::int(0))));
    h.run("no-votes", "w1");
    assert_eq!(h.node_run("w1", 0, 2).status, LhStatus::Completed as i32);
    assert_eq!(h.node_run("w1", 0, 3).node_name, "3-exit");

    // An INT against a STR cannot be compared: VAR_SUB_ERROR, and the WfRun fails.
    h.put_spec(voting_spec("bad", lit(values::str("two"))));
    h.run("bad", "w2");
    let nr = h.node_run("w2", 0, 2);
    assert_eq!(nr.status, LhStatus::Error as i32);
    assert_eq!(nr.failures[0].failure_name, "VAR_SUB_ERROR");
    assert_eq!(h.status("w2"), LhStatus::Error);
}

#[test]
fn put_wf_spec_refuses_a_condition_it_cannot_evaluate() {
    let mut h = Harness::new();
    h.put_def("vote");
    let mut req = voting_spec("s", lit(values::int(1)));
    if let Some(node::Node::WaitForCondition(w)) = &mut req
        .thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .nodes
        .get_mut("2-until")
        .unwrap()
        .node
    {
        w.node_condition = None;
    }
    let r = h.rejected(Kind::PutWfSpec(req));
    assert!(
        matches!(&r, Rejection::InvalidArgument(m) if m.contains("without a condition")),
        "{r:?}"
    );
    let r = h.rejected(Kind::PutWfSpec(voting_spec("s", var("undeclared"))));
    assert!(matches!(r, Rejection::InvalidArgument(_)), "{r:?}");
}
