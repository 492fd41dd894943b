#![allow(clippy::unwrap_used)]
//! Scenarios for the thread machinery around events: failure handlers (semantics §5), interrupts
//! (§6) and child threads (START_THREAD / WAIT_FOR_THREADS, §8). Each test is named after the
//! rule it checks; every rejection is also checked to change nothing (`Harness::rejected`).

mod support;

use std::collections::BTreeMap;

use halter_api::halter::command::Kind;
use halter_api::littlehorse::{
    failure_handler_def::{FailureToCatch, LhFailureType},
    node_run::NodeType,
    thread_halt_reason::Reason,
    variable_mutation::RhsValue,
    *,
};
use halter_api::values;
use halter_state_machine::Rejection;
use support::*;

const WAIT: &str = "1-wait-EXTERNAL_EVENT";

fn handler(thread: &str, catch: Option<FailureToCatch>) -> FailureHandlerDef {
    FailureHandlerDef {
        handler_spec_name: thread.into(),
        failure_to_catch: catch,
    }
}

fn specific(name: &str) -> Option<FailureToCatch> {
    Some(FailureToCatch::SpecificFailure(name.into()))
}

fn exit_failing(name: &str, content: Option<VariableValue>) -> Node {
    node(
        node::Node::Exit(ExitNode {
            result: Some(exit_node::Result::FailureDef(FailureDef {
                failure_name: name.into(),
                message: format!("{name} thrown"),
                content: content.map(lit),
            })),
        }),
        vec![],
    )
}

/// entry -> exit: a handler that completes at once.
fn done_thread() -> ThreadSpec {
    thread(
        vec![
            ("0-entrypoint-ENTRYPOINT", entry("1-exit-EXIT")),
            ("1-exit-EXIT", exit()),
        ],
        vec![],
    )
}

/// entry -> wait for `def` (with `timeout`) -> exit.
fn waiting_thread(def: &str, timeout: Option<i64>, vars: Vec<ThreadVarDef>) -> ThreadSpec {
    thread(
        vec![
            ("0-entrypoint-ENTRYPOINT", entry(WAIT)),
            (WAIT, wait(def, timeout, vec![edge("2-exit-EXIT")])),
            ("2-exit-EXIT", exit()),
        ],
        vars,
    )
}

/// entry -> exit failing with `name`.
fn failing_thread(name: &str, content: Option<VariableValue>) -> ThreadSpec {
    thread(
        vec![
            ("0-entrypoint-ENTRYPOINT", entry("1-exit-EXIT")),
            ("1-exit-EXIT", exit_failing(name, content)),
        ],
        vec![],
    )
}

fn assign(name: &str, v: VariableValue) -> VariableMutation {
    VariableMutation {
        lhs_name: name.into(),
        operation: VariableMutationType::Assign as i32,
        rhs_value: Some(RhsValue::LiteralValue(v)),
        ..Default::default()
    }
}

/// The spec `wait_spec` builds, whose wait node has `handlers`, whose edge assigns "after" =
/// "mutated", and with `extra` threads.
fn handled_wait_spec(
    name: &str,
    timeout: i64,
    handlers: Vec<FailureHandlerDef>,
    extra: Vec<(&str, ThreadSpec)>,
) -> PutWfSpecRequest {
    let mut out_edge = edge("2-exit-EXIT");
    out_edge.variable_mutations = vec![assign("after", values::str("mutated"))];
    let mut w = wait("e", Some(timeout), vec![out_edge]);
    w.failure_handlers = handlers;
    let mut req = spec(
        name,
        vec![
            ("0-entrypoint-ENTRYPOINT", entry(WAIT)),
            (WAIT, w),
            ("2-exit-EXIT", exit()),
        ],
        vec![var_def("after", VariableType::Str, false)],
    );
    for (n, t) in extra {
        req.thread_specs.insert(n.into(), t);
    }
    req
}

fn invalid_containing(r: Rejection, needles: &[&str]) {
    match r {
        Rejection::InvalidArgument(m) => {
            for n in needles {
                assert!(m.contains(n), "message '{m}' lacks '{n}'");
            }
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

// §5 Failure handlers

#[test]
fn s5_a_timeout_caught_by_its_handler_continues_on_the_edges_without_their_mutations() {
    let mut h = Harness::new();
    h.put_def("e");
    h.put_spec(handled_wait_spec(
        "w",
        5,
        vec![handler("on-timeout", specific("TIMEOUT"))],
        vec![("on-timeout", done_thread())],
    ));
    h.run("w", "r");
    h.advance_ms(5_000);
    assert_eq!(h.fire_due(), 1);
    assert_eq!(h.status("r"), LhStatus::Completed);
    let nr = h.node_run("r", 0, 1);
    assert_eq!(nr.status(), LhStatus::Error, "the node keeps its failure");
    assert_eq!(nr.failures.len(), 1);
    assert_eq!(nr.failures[0].failure_name, "TIMEOUT");
    assert!(nr.failures[0].was_properly_handled);
    assert_eq!(nr.failures[0].failure_handler_threadrun_id, Some(1));
    let handler_thread = h.thread_run("r", 1);
    assert_eq!(handler_thread.r#type(), ThreadType::FailureHandler);
    assert_eq!(handler_thread.parent_thread_id, Some(0));
    assert_eq!(
        handler_thread.failure_being_handled,
        Some(FailureBeingHandled {
            thread_run_number: 0,
            node_run_position: 1,
            failure_number: 0
        })
    );
    assert_eq!(h.thread_run("r", 0).child_thread_ids, vec![1]);
    // The edge's mutation did not run: the node produced no output.
    assert_eq!(h.variable("r", "after"), VariableValue::default());
    assert_eq!(h.node_run("r", 0, 2).node_name, "2-exit-EXIT");
}

#[test]
fn s5_while_its_handler_runs_the_failed_thread_is_halted_and_the_wf_run_running() {
    let mut h = Harness::new();
    h.put_def("e");
    h.put_def("fixed");
    h.put_spec(handled_wait_spec(
        "w",
        5,
        vec![handler("repair", specific("TIMEOUT"))],
        vec![("repair", waiting_thread("fixed", None, vec![]))],
    ));
    h.run("w", "r");
    h.advance_ms(5_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Running);
    let t0 = h.thread_run("r", 0);
    assert_eq!(t0.status(), LhStatus::Halted);
    assert_eq!(
        t0.halt_reasons,
        vec![ThreadHaltReason {
            reason: Some(Reason::HandlingFailure(HandlingFailureHaltReason {
                handler_thread_id: 1
            }))
        }]
    );
    assert_eq!(h.thread_run("r", 1).status(), LhStatus::Running);
    // A late "e" is not claimed by the timed-out node.
    let late = h.post("r", "e", values::str("late"));
    assert!(!late.claimed);
    let fixed = h.post("r", "fixed", values::str("ok"));
    assert!(fixed.claimed);
    assert_eq!(fixed.thread_run_number, Some(1));
    assert_eq!(h.thread_run("r", 1).status(), LhStatus::Completed);
    assert_eq!(h.thread_run("r", 0).status(), LhStatus::Completed);
    assert!(h.thread_run("r", 0).halt_reasons.is_empty());
    assert_eq!(h.status("r"), LhStatus::Completed);
}

#[test]
fn s5_a_failing_handler_fails_its_thread_with_its_own_failure() {
    let mut h = Harness::new();
    h.put_def("e");
    h.put_spec(handled_wait_spec(
        "w",
        5,
        vec![handler("give-up", specific("TIMEOUT"))],
        vec![("give-up", failing_thread("gave-up", None))],
    ));
    h.run("w", "r");
    h.advance_ms(5_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Exception);
    let t0 = h.thread_run("r", 0);
    assert_eq!(t0.status(), LhStatus::Exception);
    assert!(t0.error_message.unwrap().starts_with("gave-up"));
    assert_eq!(h.thread_run("r", 1).status(), LhStatus::Exception);
}

#[test]
fn s5_handlers_match_by_name_by_kind_or_any_and_the_first_listed_wins() {
    let cases: Vec<(Vec<FailureHandlerDef>, Option<i32>)> = vec![
        // Another name: not caught, the WfRun errs.
        (vec![handler("h1", specific("OTHER"))], None),
        // EXCEPTION kind does not catch TIMEOUT (an ERROR).
        (
            vec![handler(
                "h1",
                Some(FailureToCatch::AnyFailureOfType(
                    LhFailureType::FailureTypeException as i32,
                )),
            )],
            None,
        ),
        // TASK_ERROR names TIMEOUT too, as in LittleHorse.
        (vec![handler("h1", specific("TASK_ERROR"))], Some(1)),
        // The first listed that matches wins, whatever its kind.
        (
            vec![
                handler(
                    "h1",
                    Some(FailureToCatch::AnyFailureOfType(
                        LhFailureType::FailureTypeError as i32,
                    )),
                ),
                handler("h2", specific("TIMEOUT")),
            ],
            Some(1),
        ),
        (
            vec![handler("h1", specific("OTHER")), handler("h2", None)],
            Some(2),
        ),
    ];
    for (i, (handlers, expect)) in cases.into_iter().enumerate() {
        let mut h = Harness::new();
        h.put_def("e");
        let mut h1 = done_thread();
        h1.variable_defs = vec![var_def("marker1", VariableType::Int, false)];
        let mut h2 = done_thread();
        h2.variable_defs = vec![var_def("marker2", VariableType::Int, false)];
        h.put_spec(handled_wait_spec(
            "w",
            5,
            handlers,
            vec![("h1", h1), ("h2", h2)],
        ));
        h.run("w", "r");
        h.advance_ms(5_000);
        h.fire_due();
        match expect {
            None => {
                assert_eq!(h.status("r"), LhStatus::Error, "case {i}");
                assert_eq!(h.wf_run("r").thread_runs.len(), 1, "case {i}");
            }
            Some(n) => {
                assert_eq!(h.status("r"), LhStatus::Completed, "case {i}");
                let spec_name = format!("h{n}");
                assert_eq!(h.thread_run("r", 1).thread_spec_name, spec_name, "case {i}");
            }
        }
    }
}

#[test]
fn s5_handlers_naming_missing_threads_or_bad_kinds_are_invalid_argument() {
    let mut h = Harness::new();
    h.put_def("e");
    let r = h.rejected(Kind::PutWfSpec(handled_wait_spec(
        "w",
        5,
        vec![handler("nowhere", None)],
        vec![],
    )));
    invalid_containing(r, &["thread 'entrypoint'", WAIT, "'nowhere'"]);
    let r = h.rejected(Kind::PutWfSpec(handled_wait_spec(
        "w",
        5,
        vec![handler("h", Some(FailureToCatch::AnyFailureOfType(7)))],
        vec![("h", done_thread())],
    )));
    invalid_containing(r, &[WAIT, "unknown failure type 7"]);
}

// §6 Interrupts

/// Thread 0 waits for "e"; "stop" interrupts it with `handler_thread`.
fn interrupt_spec(handler_thread: ThreadSpec) -> PutWfSpecRequest {
    let mut req = wait_spec("i", "e", None);
    req.thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .interrupt_defs = vec![InterruptDef {
        external_event_def_id: Some(ExternalEventDefId {
            name: "stop".into(),
        }),
        handler_spec_name: "on-stop".into(),
    }];
    req.thread_specs.insert("on-stop".into(), handler_thread);
    req
}

#[test]
fn s6_an_interrupt_halts_the_thread_runs_its_handler_with_input_then_resumes_it() {
    let mut h = Harness::new();
    for d in ["e", "stop", "go"] {
        h.put_def(d);
    }
    h.put_spec(interrupt_spec(waiting_thread(
        "go",
        None,
        vec![var_def("INPUT", VariableType::Str, false)],
    )));
    h.run("i", "r");
    let stop = h.post("r", "stop", values::str("why"));
    assert!(stop.claimed, "an interrupt consumes its event");
    assert_eq!(stop.thread_run_number, None);
    assert_eq!(stop.node_run_position, None);
    assert_eq!(h.status("r"), LhStatus::Running);
    let t0 = h.thread_run("r", 0);
    assert_eq!(t0.status(), LhStatus::Halted);
    assert_eq!(
        t0.halt_reasons,
        vec![ThreadHaltReason {
            reason: Some(Reason::Interrupted(Interrupted {
                interrupt_thread_id: 1
            }))
        }]
    );
    assert_eq!(h.node_run("r", 0, 1).status(), LhStatus::Halted);
    let t1 = h.thread_run("r", 1);
    assert_eq!(t1.r#type(), ThreadType::Interrupt);
    assert_eq!(t1.interrupt_trigger_id, stop.id);
    assert_eq!(h.thread_variable("r", 1, "INPUT"), values::str("why"));
    // The interrupted node does not claim while halted; it does once resumed.
    let e = h.post("r", "e", values::str("payload"));
    assert!(!e.claimed);
    h.post("r", "go", values::null());
    assert_eq!(h.thread_run("r", 1).status(), LhStatus::Completed);
    assert_eq!(h.status("r"), LhStatus::Completed);
    let claimed = h.event("r", "e", &e.id.unwrap().guid);
    assert!(claimed.claimed);
    assert_eq!(claimed.thread_run_number, Some(0));
}

#[test]
fn s6_a_failing_interrupt_handler_fails_the_interrupted_thread_with_its_failure() {
    let mut h = Harness::new();
    for d in ["e", "stop"] {
        h.put_def(d);
    }
    h.put_spec(interrupt_spec(failing_thread("cancelled", None)));
    h.run("i", "r");
    h.post("r", "stop", values::null());
    assert_eq!(h.status("r"), LhStatus::Exception);
    let nr = h.node_run("r", 0, 1);
    assert_eq!(nr.status(), LhStatus::Exception);
    assert_eq!(nr.failures.last().unwrap().failure_name, "cancelled");
    assert_eq!(
        nr.failures.last().unwrap().message,
        "Interrupt thread with id 1 failed!"
    );
}

#[test]
fn s6_interrupt_rules_are_checked_when_the_spec_is_put() {
    let mut h = Harness::new();
    for d in ["e", "stop"] {
        h.put_def(d);
    }
    // A def waited for by an EXTERNAL_EVENT node cannot trigger interrupts.
    let mut req = interrupt_spec(done_thread());
    req.thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .interrupt_defs[0]
        .external_event_def_id = Some(ExternalEventDefId { name: "e".into() });
    invalid_containing(
        h.rejected(Kind::PutWfSpec(req)),
        &[
            "thread 'entrypoint'",
            "'e'",
            WAIT,
            "either an interrupt trigger",
        ],
    );
    // The handler declares at most INPUT.
    let mut bad_handler = done_thread();
    bad_handler.variable_defs = vec![var_def("x", VariableType::Int, false)];
    invalid_containing(
        h.rejected(Kind::PutWfSpec(interrupt_spec(bad_handler))),
        &["'on-stop'", "only one variable, named INPUT"],
    );
    // A def triggers interrupts in at most one ThreadSpec.
    let mut req = interrupt_spec(done_thread());
    let idefs = req.thread_specs["entrypoint"].interrupt_defs.clone();
    req.thread_specs.get_mut("on-stop").unwrap().interrupt_defs = idefs;
    invalid_containing(
        h.rejected(Kind::PutWfSpec(req)),
        &["at most one ThreadSpec"],
    );
    // The def and the handler exist.
    let mut req = interrupt_spec(done_thread());
    req.thread_specs.remove("on-stop");
    invalid_containing(
        h.rejected(Kind::PutWfSpec(req)),
        &["'on-stop' is not one of"],
    );
    let mut req = interrupt_spec(done_thread());
    req.thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .interrupt_defs[0]
        .external_event_def_id = Some(ExternalEventDefId {
        name: "nope".into(),
    });
    invalid_containing(
        h.rejected(Kind::PutWfSpec(req)),
        &["No ExternalEventDef named 'nope'"],
    );
}

// §8 Child threads

/// Two children, each waiting for its own event with its own timeout, and a wait for both.
fn fan_out_spec(
    strategy: WaitForThreadsStrategy,
    per_thread: Vec<FailureHandlerDef>,
    extra: Vec<(&str, ThreadSpec)>,
) -> PutWfSpecRequest {
    let mut req = spec(
        "fan",
        vec![
            ("0-entrypoint-ENTRYPOINT", entry("1-a-START_THREAD")),
            (
                "1-a-START_THREAD",
                start_thread("wait-a", "2-b-START_THREAD", "a-thread"),
            ),
            (
                "2-b-START_THREAD",
                start_thread("wait-b", "3-threads-WAIT_FOR_THREADS", "b-thread"),
            ),
            (
                "3-threads-WAIT_FOR_THREADS",
                wait_threads(
                    &["a-thread", "b-thread"],
                    strategy,
                    per_thread,
                    "4-exit-EXIT",
                ),
            ),
            ("4-exit-EXIT", exit()),
        ],
        vec![
            var_def("a-thread", VariableType::Int, false),
            var_def("b-thread", VariableType::Int, false),
        ],
    );
    req.thread_specs
        .insert("wait-a".into(), waiting_thread("a", Some(10), vec![]));
    req.thread_specs
        .insert("wait-b".into(), waiting_thread("b", Some(20), vec![]));
    for (n, t) in extra {
        req.thread_specs.insert(n.into(), t);
    }
    req
}

fn fan_out(h: &mut Harness, req: PutWfSpecRequest) {
    h.put_def("a");
    h.put_def("b");
    h.put_spec(req);
    h.run("fan", "r");
}

/// A harness with the fan-out spec (no handlers) running as "r".
fn fanned(strategy: WaitForThreadsStrategy) -> Harness {
    let mut h = Harness::new();
    fan_out(&mut h, fan_out_spec(strategy, vec![], vec![]));
    h
}

#[test]
fn s8_start_thread_outputs_the_child_number_and_wait_for_all_completes_when_both_do() {
    let mut h = fanned(WaitForThreadsStrategy::WaitForAll);
    assert_eq!(h.variable("r", "a-thread"), values::int(1));
    assert_eq!(h.variable("r", "b-thread"), values::int(2));
    let c1 = h.thread_run("r", 1);
    assert_eq!(c1.r#type(), ThreadType::Child);
    assert_eq!(c1.parent_thread_id, Some(0));
    assert_eq!(h.thread_run("r", 0).child_thread_ids, vec![1, 2]);
    match h.node_run("r", 0, 1).node_type {
        Some(NodeType::StartThread(s)) => assert_eq!(s.child_thread_id, Some(1)),
        other => panic!("unexpected {other:?}"),
    }
    h.post("r", "b", values::null());
    assert_eq!(h.status("r"), LhStatus::Running);
    h.post("r", "a", values::null());
    assert_eq!(h.status("r"), LhStatus::Completed);
    match h.node_run("r", 0, 3).node_type {
        Some(NodeType::WaitForThreads(w)) => {
            assert_eq!(w.threads.len(), 2);
            assert!(w.threads.iter().all(|t| t.waiting_status
                == wait_for_threads_run::WaitingThreadStatus::ThreadCompletedOrFailureHandled
                    as i32));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn s8_a_child_that_times_out_fails_wait_for_all_with_child_failure() {
    let mut h = fanned(WaitForThreadsStrategy::WaitForAll);
    h.advance_ms(10_000);
    h.fire_due();
    assert_eq!(h.thread_run("r", 1).status(), LhStatus::Error);
    assert_eq!(h.status("r"), LhStatus::Error);
    let nr = h.node_run("r", 0, 3);
    assert_eq!(nr.failures[0].failure_name, "CHILD_FAILURE");
    assert!(
        nr.failures[0].message.contains("TIMEOUT"),
        "{}",
        nr.failures[0].message
    );
    // The other child is halted for good with its parent's failure.
    assert_eq!(h.thread_run("r", 2).status(), LhStatus::Halted);
}

#[test]
fn s8_wait_for_first_of_several_events_each_with_its_own_timeout() {
    // The first event to arrive wins; the other waiter halts.
    let mut h = fanned(WaitForThreadsStrategy::WaitForFirst);
    h.post("r", "b", values::str("b first"));
    assert_eq!(h.status("r"), LhStatus::Completed);
    let a = h.thread_run("r", 1);
    assert_eq!(a.status(), LhStatus::Halted);
    assert!(matches!(
        a.halt_reasons[0].reason,
        Some(Reason::HaltedByParent(_))
    ));
    // The halted waiter's timeout later changes nothing.
    h.advance_ms(30_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Completed);
    // And a timeout first is a failure under WAIT_FOR_FIRST.
    let mut h = fanned(WaitForThreadsStrategy::WaitForFirst);
    h.advance_ms(10_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Error);
}

#[test]
fn s8_wait_for_any_succeeds_with_one_success_and_fails_only_when_all_fail() {
    let mut h = fanned(WaitForThreadsStrategy::WaitForAny);
    h.advance_ms(10_000);
    h.fire_due();
    assert_eq!(
        h.status("r"),
        LhStatus::Running,
        "a timed out, b may still come"
    );
    h.post("r", "b", values::null());
    assert_eq!(h.status("r"), LhStatus::Completed);
    let mut h = fanned(WaitForThreadsStrategy::WaitForAny);
    h.advance_ms(20_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Error);
    assert_eq!(
        h.node_run("r", 0, 3).failures[0].message,
        "All child threads failed"
    );
}

#[test]
fn s8_a_per_thread_failure_handler_lets_wait_for_all_complete() {
    let mut h = Harness::new();
    fan_out(
        &mut h,
        fan_out_spec(
            WaitForThreadsStrategy::WaitForAll,
            vec![handler("timed-out", specific("TIMEOUT"))],
            vec![("timed-out", done_thread())],
        ),
    );
    h.advance_ms(10_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Running);
    let handler_thread = h.thread_run("r", 3);
    assert_eq!(handler_thread.r#type(), ThreadType::FailureHandler);
    assert_eq!(
        handler_thread.parent_thread_id,
        Some(1),
        "under the failed child"
    );
    h.post("r", "b", values::null());
    assert_eq!(
        h.status("r"),
        LhStatus::Completed,
        "EXIT does not fail for a handled child"
    );
    assert_eq!(h.thread_run("r", 0).handled_failed_children, vec![1]);
}

#[test]
fn s8_a_child_exception_is_rethrown_as_it_is_and_a_node_handler_gets_its_content() {
    let mut h = Harness::new();
    let mut fail_spec = fan_out_spec(WaitForThreadsStrategy::WaitForAll, vec![], vec![]);
    fail_spec.thread_specs.insert(
        "wait-a".into(),
        failing_thread("no-stock", Some(values::str("sku-1"))),
    );
    let wft = fail_spec
        .thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .nodes
        .get_mut("3-threads-WAIT_FOR_THREADS")
        .unwrap();
    wft.failure_handlers = vec![handler("restock", specific("no-stock"))];
    let mut restock = waiting_thread("b", None, vec![]);
    restock.variable_defs = vec![var_def("INPUT", VariableType::Str, false)];
    restock
        .nodes
        .insert(WAIT.into(), wait("a", None, vec![edge("2-exit-EXIT")]));
    fail_spec.thread_specs.insert("restock".into(), restock);
    fan_out(&mut h, fail_spec);
    // Child 1 failed at once; the WAIT_FOR_THREADS node failed with its exception; the handler
    // runs with the exception's content as INPUT.
    let nr = h.node_run("r", 0, 3);
    assert_eq!(nr.failures[0].failure_name, "no-stock");
    assert_eq!(nr.failures[0].content, Some(values::str("sku-1")));
    let handler_thread = h.thread_run("r", 3);
    assert_eq!(handler_thread.thread_spec_name, "restock");
    assert_eq!(h.thread_variable("r", 3, "INPUT"), values::str("sku-1"));
    // While it runs, thread 0 and its other child are halted.
    assert_eq!(h.thread_run("r", 2).status(), LhStatus::Halted);
    h.post("r", "a", values::null());
    // Handled: thread 0 resumes, its child too; EXIT waits for child 2.
    assert_eq!(h.status("r"), LhStatus::Running);
    assert_eq!(h.thread_run("r", 2).status(), LhStatus::Running);
    h.post("r", "b", values::null());
    assert_eq!(h.status("r"), LhStatus::Completed);
}

#[test]
fn s8_exit_waits_for_running_children_and_fails_for_an_unhandled_child_failure() {
    let mut h = Harness::new();
    h.put_def("a");
    h.put_def("b");
    let req = |child: ThreadSpec| {
        let mut r = spec(
            "bg",
            vec![
                ("0-entrypoint-ENTRYPOINT", entry("1-a-START_THREAD")),
                (
                    "1-a-START_THREAD",
                    start_thread("child", "2-exit-EXIT", "n"),
                ),
                ("2-exit-EXIT", exit()),
            ],
            vec![var_def("n", VariableType::Int, false)],
        );
        r.thread_specs.insert("child".into(), child);
        r
    };
    h.put_spec(req(waiting_thread("a", Some(5), vec![])));
    h.run("bg", "ok");
    assert_eq!(
        h.status("ok"),
        LhStatus::Running,
        "EXIT waits for the child"
    );
    h.post("ok", "a", values::null());
    assert_eq!(h.status("ok"), LhStatus::Completed);
    h.run("bg", "late");
    h.advance_ms(5_000);
    h.fire_due();
    assert_eq!(h.status("late"), LhStatus::Error);
    let exit_run = h.node_run("late", 0, 2);
    assert_eq!(exit_run.failures[0].failure_name, "CHILD_FAILURE");
}

#[test]
fn s8_child_threads_read_and_mutate_their_parents_variables() {
    let mut h = Harness::new();
    h.put_def("a");
    let mut child_edge = edge("2-exit-EXIT");
    child_edge.variable_mutations = vec![VariableMutation {
        lhs_name: "total".into(),
        operation: VariableMutationType::Add as i32,
        rhs_value: Some(RhsValue::RhsAssignment(var("step"))),
        ..Default::default()
    }];
    let child = thread(
        vec![
            ("0-entrypoint-ENTRYPOINT", entry(WAIT)),
            (WAIT, wait("a", None, vec![child_edge])),
            ("2-exit-EXIT", exit()),
        ],
        vec![var_def("step", VariableType::Int, true)],
    );
    let mut start_node = start_thread("child", "2-threads-WAIT_FOR_THREADS", "n");
    if let Some(node::Node::StartThread(s)) = &mut start_node.node {
        s.variables = BTreeMap::from([("step".to_string(), lit(values::int(5)))]);
    }
    let mut req = spec(
        "sum",
        vec![
            ("0-entrypoint-ENTRYPOINT", entry("1-child-START_THREAD")),
            ("1-child-START_THREAD", start_node),
            (
                "2-threads-WAIT_FOR_THREADS",
                wait_threads(
                    &["n"],
                    WaitForThreadsStrategy::WaitForAll,
                    vec![],
                    "3-exit-EXIT",
                ),
            ),
            ("3-exit-EXIT", exit()),
        ],
        vec![
            var_def("n", VariableType::Int, false),
            var_def("total", VariableType::Int, false),
        ],
    );
    req.thread_specs.insert("child".into(), child);
    h.put_spec(req);
    h.run_with(
        "sum",
        "r",
        BTreeMap::from([("total".to_string(), values::int(1))]),
    );
    assert_eq!(h.thread_variable("r", 1, "step"), values::int(5));
    h.post("r", "a", values::null());
    assert_eq!(h.status("r"), LhStatus::Completed);
    assert_eq!(h.variable("r", "total"), values::int(6));
}

#[test]
fn s8_child_thread_rules_are_checked_when_the_spec_is_put() {
    let mut h = Harness::new();
    h.put_def("a");
    h.put_def("b");
    let mut req = fan_out_spec(WaitForThreadsStrategy::WaitForAll, vec![], vec![]);
    req.thread_specs.remove("wait-b");
    invalid_containing(
        h.rejected(Kind::PutWfSpec(req)),
        &["thread 'entrypoint'", "2-b-START_THREAD", "'wait-b'"],
    );
    let mut req = fan_out_spec(WaitForThreadsStrategy::WaitForAll, vec![], vec![]);
    req.thread_specs
        .get_mut("wait-a")
        .unwrap()
        .variable_defs
        .push(var_def("a-thread", VariableType::Int, false));
    invalid_containing(h.rejected(Kind::PutWfSpec(req)), &["'a-thread'", "unique"]);
    let mut req = fan_out_spec(WaitForThreadsStrategy::WaitForAll, vec![], vec![]);
    if let Some(node::Node::StartThread(s)) = &mut req
        .thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .nodes
        .get_mut("1-a-START_THREAD")
        .unwrap()
        .node
    {
        s.variables = BTreeMap::from([("undeclared".to_string(), lit(values::int(1)))]);
    }
    invalid_containing(
        h.rejected(Kind::PutWfSpec(req)),
        &[
            "1-a-START_THREAD",
            "'undeclared' is not declared by thread 'wait-a'",
        ],
    );
}

#[test]
fn s6_an_interrupt_during_a_failure_handler_halts_it_and_gives_it_back_afterwards() {
    let mut h = Harness::new();
    for d in ["e", "fixed", "stop", "go"] {
        h.put_def(d);
    }
    let mut req = handled_wait_spec(
        "w",
        5,
        vec![handler("repair", specific("TIMEOUT"))],
        vec![
            ("repair", waiting_thread("fixed", None, vec![])),
            ("on-stop", waiting_thread("go", None, vec![])),
        ],
    );
    req.thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .interrupt_defs = vec![InterruptDef {
        external_event_def_id: Some(ExternalEventDefId {
            name: "stop".into(),
        }),
        handler_spec_name: "on-stop".into(),
    }];
    h.put_spec(req);
    h.run("w", "r");
    h.advance_ms(5_000);
    h.fire_due();
    assert_eq!(
        h.thread_run("r", 1).status(),
        LhStatus::Running,
        "the failure handler"
    );
    h.post("r", "stop", values::null());
    let repair = h.thread_run("r", 1);
    assert_eq!(repair.status(), LhStatus::Halted, "halted with its parent");
    assert_eq!(
        h.thread_run("r", 2).status(),
        LhStatus::Running,
        "the interrupt handler"
    );
    // `fixed` cannot be claimed by the halted failure handler.
    let early = h.post("r", "fixed", values::null());
    assert!(!early.claimed);
    h.post("r", "go", values::null());
    // The interrupt is over: thread 0 still handles its failure, and its handler runs again
    // (and claims the waiting `fixed`).
    assert_eq!(h.thread_run("r", 2).status(), LhStatus::Completed);
    assert_eq!(h.thread_run("r", 1).status(), LhStatus::Completed);
    assert_eq!(h.status("r"), LhStatus::Completed);
}

#[test]
fn s8_exit_waits_for_a_child_halted_for_a_while_but_not_for_one_halted_for_good() {
    let mut h = Harness::new();
    h.put_def("a");
    let mut req = spec(
        "bg",
        vec![
            ("0-entrypoint-ENTRYPOINT", entry("1-a-START_THREAD")),
            (
                "1-a-START_THREAD",
                start_thread("child", "2-exit-EXIT", "n"),
            ),
            ("2-exit-EXIT", exit()),
        ],
        vec![var_def("n", VariableType::Int, false)],
    );
    req.thread_specs
        .insert("child".into(), waiting_thread("a", None, vec![]));
    h.put_spec(req);
    h.run("bg", "r");
    // The child is stopped by hand: the parent's EXIT still waits for it.
    h.ok(Kind::StopWfRun(StopWfRunRequest {
        wf_run_id: Some(wf_id("r")),
        thread_run_number: 1,
    }));
    assert_eq!(h.thread_run("r", 1).status(), LhStatus::Halted);
    // An event moves the run (advance looks at the EXIT again) but the halted child cannot
    // claim it, and the parent must not end without it.
    h.post("r", "a", values::null());
    assert_eq!(h.status("r"), LhStatus::Running);
    h.ok(Kind::ResumeWfRun(ResumeWfRunRequest {
        wf_run_id: Some(wf_id("r")),
        thread_run_number: 1,
    }));
    assert_eq!(h.thread_run("r", 1).status(), LhStatus::Completed);
    assert_eq!(h.status("r"), LhStatus::Completed);
}

#[test]
fn s5_a_failing_edge_mutation_fails_its_node_changes_no_variable_and_can_be_handled() {
    let build = |handlers: Vec<FailureHandlerDef>| {
        let mut out_edge = edge("2-exit-EXIT");
        out_edge.variable_mutations = vec![
            assign("after", values::str("mutated")),
            // The event's content is a STR: it does not fit the INT variable.
            assign_output("count"),
        ];
        let mut w = wait("e", None, vec![out_edge]);
        w.failure_handlers = handlers;
        let mut req = spec(
            "m",
            vec![
                ("0-entrypoint-ENTRYPOINT", entry(WAIT)),
                (WAIT, w),
                ("2-exit-EXIT", exit()),
            ],
            vec![
                var_def("after", VariableType::Str, false),
                var_def("count", VariableType::Int, false),
            ],
        );
        req.thread_specs.insert("fix".into(), done_thread());
        req
    };
    let mut h = Harness::new();
    h.put_def("e");
    h.put_spec(build(vec![]));
    h.run("m", "plain");
    h.post("plain", "e", values::str("not a number"));
    assert_eq!(h.status("plain"), LhStatus::Error);
    let nr = h.node_run("plain", 0, 1);
    assert_eq!(nr.status(), LhStatus::Error);
    assert_eq!(nr.failures[0].failure_name, "VAR_MUTATION_ERROR");
    assert_eq!(
        h.variable("plain", "after"),
        VariableValue::default(),
        "the edge's first mutation was put back"
    );
    // VAR_ERROR names VAR_MUTATION_ERROR too: the handler catches it and the thread goes on
    // without the edge's mutations.
    h.put_spec(build(vec![handler("fix", specific("VAR_ERROR"))]));
    h.run("m", "handled");
    h.post("handled", "e", values::str("not a number"));
    assert_eq!(h.status("handled"), LhStatus::Completed);
    assert!(h.node_run("handled", 0, 1).failures[0].was_properly_handled);
    assert_eq!(h.variable("handled", "after"), VariableValue::default());
}

// §8 START_MULTIPLE_THREADS (`spawnThreadForEach`)

/// entry -> one child per element of `items` (thread "each": INPUT of `input_type`, "step"
/// given by the node as 10) -> WAIT_FOR_THREADS of the output list -> exit. Each child waits for
/// an "a" event, then adds INPUT + step to the parent's "total".
fn for_each_spec(input_type: VariableType) -> PutWfSpecRequest {
    let mut child_edge = edge("2-exit-EXIT");
    child_edge.variable_mutations = vec![
        VariableMutation {
            lhs_name: "total".into(),
            operation: VariableMutationType::Add as i32,
            rhs_value: Some(RhsValue::RhsAssignment(var("INPUT"))),
            ..Default::default()
        },
        VariableMutation {
            lhs_name: "total".into(),
            operation: VariableMutationType::Add as i32,
            rhs_value: Some(RhsValue::RhsAssignment(var("step"))),
            ..Default::default()
        },
    ];
    let child = thread(
        vec![
            ("0-entrypoint-ENTRYPOINT", entry(WAIT)),
            (WAIT, wait("a", None, vec![child_edge])),
            ("2-exit-EXIT", exit()),
        ],
        vec![
            var_def("INPUT", input_type, false),
            var_def("step", VariableType::Int, true),
        ],
    );
    let mut spawned = edge("2-threads-WAIT_FOR_THREADS");
    spawned.variable_mutations = vec![assign_output("children")];
    let many = node(
        node::Node::StartMultipleThreads(StartMultipleThreadsNode {
            thread_spec_name: "each".into(),
            variables: BTreeMap::from([("step".to_string(), lit(values::int(10)))]),
            iterable: Some(var("items")),
        }),
        vec![spawned],
    );
    let wait_all = node(
        node::Node::WaitForThreads(WaitForThreadsNode {
            threads_to_wait_for: Some(wait_for_threads_node::ThreadsToWaitForOneOf::ThreadList(
                var("children"),
            )),
            per_thread_failure_handlers: vec![],
            strategy: WaitForThreadsStrategy::WaitForAll as i32,
        }),
        vec![edge("3-exit-EXIT")],
    );
    let mut req = spec(
        "each",
        vec![
            (
                "0-entrypoint-ENTRYPOINT",
                entry("1-each-START_MULTIPLE_THREADS"),
            ),
            ("1-each-START_MULTIPLE_THREADS", many),
            ("2-threads-WAIT_FOR_THREADS", wait_all),
            ("3-exit-EXIT", exit()),
        ],
        vec![
            var_def("items", VariableType::JsonArr, false),
            var_def("children", VariableType::JsonArr, false),
            var_def("total", VariableType::Int, false),
        ],
    );
    req.thread_specs.insert("each".into(), child);
    req
}

fn run_for_each(h: &mut Harness, input_type: VariableType, items: VariableValue) {
    h.put_def("a");
    h.put_spec(for_each_spec(input_type));
    h.run_with(
        "each",
        "r",
        BTreeMap::from([
            ("items".to_string(), items),
            ("total".to_string(), values::int(0)),
        ]),
    );
}

#[test]
fn s8_start_multiple_threads_starts_one_child_per_element_with_it_as_input() {
    let mut h = Harness::new();
    run_for_each(&mut h, VariableType::Int, values::json_arr("[1, 2, 3]"));
    assert_eq!(h.variable("r", "children"), values::json_arr("[1,2,3]"));
    assert_eq!(h.thread_run("r", 0).child_thread_ids, vec![1, 2, 3]);
    for (n, input) in [(1, 1), (2, 2), (3, 3)] {
        let child = h.thread_run("r", n);
        assert_eq!(child.r#type(), ThreadType::Child);
        assert_eq!(child.parent_thread_id, Some(0));
        assert_eq!(h.thread_variable("r", n, "INPUT"), values::int(input));
        assert_eq!(h.thread_variable("r", n, "step"), values::int(10));
    }
    match h.node_run("r", 0, 1).node_type {
        Some(NodeType::StartMultipleThreads(s)) => {
            assert_eq!(s.thread_spec_name, "each");
            assert_eq!(s.child_thread_ids, vec![1, 2, 3]);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Each event is claimed by one waiting child; the wait completes after the third.
    h.post("r", "a", values::null());
    h.post("r", "a", values::null());
    assert_eq!(h.status("r"), LhStatus::Running);
    assert_eq!(h.variable("r", "total"), values::int(1 + 2 + 20));
    h.post("r", "a", values::null());
    assert_eq!(h.status("r"), LhStatus::Completed);
    assert_eq!(h.variable("r", "total"), values::int(6 + 30));
}

#[test]
fn s8_start_multiple_threads_over_an_empty_list_starts_none_and_wait_for_all_completes() {
    let mut h = Harness::new();
    run_for_each(&mut h, VariableType::Int, values::json_arr("[]"));
    assert_eq!(h.variable("r", "children"), values::json_arr("[]"));
    assert!(h.thread_run("r", 0).child_thread_ids.is_empty());
    assert_eq!(h.status("r"), LhStatus::Completed);
}

#[test]
fn s8_start_multiple_threads_with_a_bad_element_starts_no_child_and_fails_var_sub_error() {
    let mut h = Harness::new();
    // The second element is not an INT, the INPUT's type: no child starts, not even the first.
    run_for_each(
        &mut h,
        VariableType::Int,
        values::json_arr(r#"[1, "x", 3]"#),
    );
    let nr = h.node_run("r", 0, 1);
    assert_eq!(nr.failures[0].failure_name, "VAR_SUB_ERROR");
    assert!(
        nr.failures[0].message.contains("'INPUT'"),
        "{}",
        nr.failures[0].message
    );
    assert!(h.thread_run("r", 0).child_thread_ids.is_empty());
    assert_eq!(h.wf_run("r").greatest_threadrun_number, 0);
    assert_eq!(h.status("r"), LhStatus::Error);

    // An iterable that is not a JSON_ARR fails the same way.
    let mut h = Harness::new();
    h.put_def("a");
    let mut req = for_each_spec(VariableType::Int);
    req.thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .variable_defs[0] = var_def("items", VariableType::Str, false);
    h.put_spec(req);
    h.run_with(
        "each",
        "r",
        BTreeMap::from([("items".to_string(), values::str("[1]"))]),
    );
    let nr = h.node_run("r", 0, 1);
    assert_eq!(nr.failures[0].failure_name, "VAR_SUB_ERROR");
    assert!(nr.failures[0].message.contains("JSON_ARR"));
    assert_eq!(h.wf_run("r").greatest_threadrun_number, 0);
}

#[test]
fn s8_start_multiple_threads_rules_are_checked_when_the_spec_is_put() {
    let mut h = Harness::new();
    h.put_def("a");
    fn many(req: &mut PutWfSpecRequest) -> &mut StartMultipleThreadsNode {
        match &mut req
            .thread_specs
            .get_mut("entrypoint")
            .unwrap()
            .nodes
            .get_mut("1-each-START_MULTIPLE_THREADS")
            .unwrap()
            .node
        {
            Some(node::Node::StartMultipleThreads(s)) => s,
            _ => unreachable!(),
        }
    }
    let mut req = for_each_spec(VariableType::Int);
    many(&mut req).thread_spec_name = "nope".into();
    invalid_containing(
        h.rejected(Kind::PutWfSpec(req)),
        &["1-each-START_MULTIPLE_THREADS", "'nope'"],
    );
    let mut req = for_each_spec(VariableType::Int);
    many(&mut req)
        .variables
        .insert("undeclared".into(), lit(values::int(1)));
    invalid_containing(
        h.rejected(Kind::PutWfSpec(req)),
        &["'undeclared' is not declared by thread 'each'"],
    );
    let mut req = for_each_spec(VariableType::Int);
    many(&mut req).iterable = None;
    invalid_containing(h.rejected(Kind::PutWfSpec(req)), &["without an iterable"]);
    let mut req = for_each_spec(VariableType::Int);
    many(&mut req).iterable = Some(var("not-a-variable"));
    invalid_containing(h.rejected(Kind::PutWfSpec(req)), &["not-a-variable"]);
}

// RescueThreadRun across threads

fn rescue(thread: i32, skip: bool) -> Kind {
    Kind::RescueThreadRun(RescueThreadRunRequest {
        wf_run_id: Some(wf_id("r")),
        thread_run_number: thread,
        skip_current_node: skip,
    })
}

#[test]
fn rescuing_a_failed_child_rescues_its_waiting_parent_and_resumes_its_siblings() {
    // Child 1 times out after 10 s; WAIT_FOR_ALL fails with CHILD_FAILURE, the entrypoint and
    // the WfRun fail, child 2 is halted under its failed parent.
    let mut h = fanned(WaitForThreadsStrategy::WaitForAll);
    h.advance_ms(10_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Error);
    assert_eq!(h.thread_run("r", 1).status(), LhStatus::Error);
    assert_eq!(h.thread_run("r", 2).status(), LhStatus::Halted);
    h.ok(rescue(1, false));
    assert_eq!(h.status("r"), LhStatus::Running);
    let child = h.thread_run("r", 1);
    assert_eq!(child.status(), LhStatus::Running);
    assert_eq!(
        h.node_run("r", 1, 2).status(),
        LhStatus::Running,
        "waits for 'a' again"
    );
    let parent = h.thread_run("r", 0);
    assert_eq!(parent.status(), LhStatus::Running);
    assert_eq!(
        parent.current_node_position, 4,
        "a new WAIT_FOR_THREADS NodeRun"
    );
    assert_eq!(h.thread_run("r", 2).status(), LhStatus::Running);
    assert!(h.thread_run("r", 2).halt_reasons.is_empty());
    h.post("r", "a", values::null());
    h.post("r", "b", values::null());
    assert_eq!(h.status("r"), LhStatus::Completed);
}

#[test]
fn a_failure_a_parent_handled_or_an_exception_is_not_rescued() {
    // A child's failure handled by a per-thread handler: the parent went on without it.
    let mut h = Harness::new();
    fan_out(
        &mut h,
        fan_out_spec(
            WaitForThreadsStrategy::WaitForAll,
            vec![handler("recover", specific("TIMEOUT"))],
            vec![("recover", done_thread())],
        ),
    );
    h.advance_ms(10_000);
    h.fire_due();
    assert_eq!(h.thread_run("r", 1).status(), LhStatus::Error);
    match h.rejected(rescue(1, false)) {
        Rejection::FailedPrecondition(m) => assert!(m.contains("already handled"), "{m}"),
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }

    // A business EXCEPTION is the workflow's own decision.
    let mut h = Harness::new();
    h.put_spec(spec(
        "boom",
        vec![
            ("0-entrypoint-ENTRYPOINT", entry("1-exit-EXIT")),
            ("1-exit-EXIT", exit_failing("out-of-stock", None)),
        ],
        vec![],
    ));
    h.run("boom", "r");
    assert_eq!(h.status("r"), LhStatus::Exception);
    match h.rejected(rescue(0, false)) {
        Rejection::FailedPrecondition(m) => assert!(m.contains("EXCEPTION, not ERROR"), "{m}"),
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }

    // An EXIT that failed for its child has nowhere to skip to, and run again it fails again
    // at once while the child is still in ERROR.
    let mut h = Harness::new();
    h.put_def("a");
    let mut req = spec(
        "quick",
        vec![
            ("0-entrypoint-ENTRYPOINT", entry("1-a-START_THREAD")),
            (
                "1-a-START_THREAD",
                start_thread("wait-a", "2-exit-EXIT", "a-thread"),
            ),
            ("2-exit-EXIT", exit()),
        ],
        vec![var_def("a-thread", VariableType::Int, false)],
    );
    req.thread_specs
        .insert("wait-a".into(), waiting_thread("a", Some(10), vec![]));
    h.put_spec(req);
    h.run("quick", "r");
    h.advance_ms(10_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Error);
    match h.rejected(rescue(0, true)) {
        Rejection::FailedPrecondition(m) => assert!(m.contains("no outgoing edge"), "{m}"),
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }
    h.ok(rescue(0, false));
    assert_eq!(h.status("r"), LhStatus::Error);
    assert_eq!(
        h.node_run("r", 0, 3).failures[0].failure_name,
        "CHILD_FAILURE"
    );
    h.ok(rescue(1, false));
    assert_eq!(h.status("r"), LhStatus::Running);
    h.post("r", "a", values::null());
    assert_eq!(h.status("r"), LhStatus::Completed);
}

#[test]
fn a_rescued_node_that_fails_again_fails_the_thread_again() {
    let mut h = Harness::new();
    h.put_def("e");
    let mut req = handled_wait_spec("w", 5, vec![], vec![]);
    req.retention_policy = Some(WorkflowRetentionPolicy {
        wf_gc_policy: Some(workflow_retention_policy::WfGcPolicy::SecondsAfterWfTermination(60)),
    });
    h.put_spec(req);
    h.run("w", "r");
    h.advance_ms(5_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Error);
    assert_eq!(h.pending_timers(), 1, "the failed WfRun's retention");
    h.ok(rescue(0, false));
    assert_eq!(h.status("r"), LhStatus::Running);
    assert_eq!(
        h.pending_timers(),
        1,
        "the new wait's timeout; the retention is gone"
    );
    h.advance_ms(5_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Error, "the new wait timed out too");
    assert_eq!(h.node_run("r", 0, 2).failures[0].failure_name, "TIMEOUT");
    // The first retention was due at 65 s, the second at 70 s: at 66 s the WfRun is still there.
    h.advance_ms(56_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Error);
    h.ok(rescue(0, true));
    assert_eq!(h.status("r"), LhStatus::Completed);
    assert_eq!(
        h.variable("r", "after"),
        values::str("mutated"),
        "skip runs the edge's mutations"
    );
}
