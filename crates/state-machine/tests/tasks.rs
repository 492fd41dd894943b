#![allow(clippy::unwrap_used)]
//! Scenarios for TaskDefs, TaskRuns and their dispatch (claim, report, timeout, retry). Every
//! rejection is also checked to change nothing (`Harness::rejected`).

mod support;

use halter_api::halter::{command::Kind, ClaimTask};
use halter_api::littlehorse::{
    failure_handler_def::FailureToCatch, node_run::NodeType, report_task_run,
    type_definition::DefinedType, variable_value::Value, *,
};
use halter_api::values;
use halter_state_machine::{query, Rejection, Response};
use support::*;

const TASK: &str = "1-charge-TASK";

fn typed(name: &str, ty: VariableType) -> VariableDef {
    VariableDef {
        name: name.into(),
        type_def: Some(TypeDefinition {
            defined_type: Some(DefinedType::PrimitiveType(ty as i32)),
            masked: false,
        }),
        ..Default::default()
    }
}

fn task_def_req(name: &str, ret: Option<VariableType>) -> PutTaskDefRequest {
    PutTaskDefRequest {
        name: name.into(),
        input_vars: vec![typed("amount", VariableType::Int)],
        return_type: Some(ReturnType {
            return_type: ret.map(|t| TypeDefinition {
                defined_type: Some(DefinedType::PrimitiveType(t as i32)),
                masked: false,
            }),
        }),
        description: None,
    }
}

fn put_task_def(h: &mut Harness, name: &str, ret: Option<VariableType>) -> TaskDef {
    match h.ok(Kind::PutTaskDef(task_def_req(name, ret))) {
        Response::TaskDef(d) => d,
        other => panic!("unexpected {other:?}"),
    }
}

/// A thread: entry -> the TASK node `n` -> exit.
fn task_thread(n: Node) -> ThreadSpec {
    thread(
        vec![
            ("0-entrypoint-ENTRYPOINT", entry(TASK)),
            (TASK, n),
            ("2-exit-EXIT", exit()),
        ],
        vec![],
    )
}

/// The TASK node running `task`, on to the exit.
fn charge_node(task: TaskNode) -> Node {
    node(node::Node::Task(task), vec![edge("2-exit-EXIT")])
}

/// entry -> TASK `charge(amount)` (result into "receipt") -> exit.
fn task_spec(name: &str, task: TaskNode, handlers: Vec<FailureHandlerDef>) -> PutWfSpecRequest {
    let mut e = edge("2-exit-EXIT");
    e.variable_mutations = vec![assign_output("receipt")];
    let mut n = node(node::Node::Task(task), vec![e]);
    n.failure_handlers = handlers;
    let mut req = spec(name, vec![], vec![]);
    req.thread_specs.insert(
        "entrypoint".into(),
        ThreadSpec {
            variable_defs: vec![
                var_def("amount", VariableType::Int, false),
                var_def("receipt", VariableType::Str, false),
            ],
            ..task_thread(n)
        },
    );
    req.thread_specs.insert(
        "handler".into(),
        thread(
            vec![
                ("0-entrypoint-ENTRYPOINT", entry("1-exit-EXIT")),
                ("1-exit-EXIT", exit()),
            ],
            vec![],
        ),
    );
    req
}

fn charge(retries: i32, timeout: i32) -> TaskNode {
    TaskNode {
        task_to_execute: Some(task_node::TaskToExecute::TaskDefId(TaskDefId {
            name: "charge".into(),
        })),
        timeout_seconds: timeout,
        retries,
        exponential_backoff: None,
        variables: vec![var("amount")],
    }
}

fn start(h: &mut Harness, task: TaskNode, handlers: Vec<FailureHandlerDef>) {
    put_task_def(h, "charge", Some(VariableType::Str));
    h.put_spec(task_spec("pay", task, handlers));
    h.run_with("pay", "r", [("amount".to_string(), values::int(30))].into());
}

fn claim(h: &mut Harness, worker: &str) -> Option<ScheduledTask> {
    match h.ok(Kind::ClaimTask(ClaimTask {
        task_def_name: "charge".into(),
        worker_id: worker.into(),
        worker_version: None,
    })) {
        Response::ScheduledTask(t) => t,
        other => panic!("unexpected {other:?}"),
    }
}

fn report(
    t: &ScheduledTask,
    status: TaskStatus,
    result: Option<report_task_run::Result>,
) -> ReportTaskRun {
    ReportTaskRun {
        task_run_id: t.task_run_id.clone(),
        time: None,
        status: status as i32,
        result,
        log_output: None,
        attempt_number: t.attempt_number,
        total_checkpoints: 0,
    }
}

fn output(v: VariableValue) -> Option<report_task_run::Result> {
    Some(report_task_run::Result::Output(v))
}

fn task_run(h: &Harness) -> TaskRun {
    h.read(|t| {
        query::get_task_run(
            t,
            &TaskRunId {
                wf_run_id: Some(wf_id("r")),
                task_guid: "0-1".into(),
            },
        )
        .unwrap()
    })
}

#[test]
fn a_task_def_is_immutable_and_checked() {
    let mut h = Harness::new();
    let d = put_task_def(&mut h, "charge", Some(VariableType::Str));
    assert_eq!(d.input_vars[0].name, "amount");
    assert_eq!(
        put_task_def(&mut h, "charge", Some(VariableType::Str)),
        d,
        "identical again"
    );
    match h.rejected(Kind::PutTaskDef(task_def_req(
        "charge",
        Some(VariableType::Int),
    ))) {
        Rejection::AlreadyExists(m) => assert!(m.contains("immutable"), "{m}"),
        other => panic!("expected ALREADY_EXISTS, got {other:?}"),
    }
    assert!(matches!(
        h.rejected(Kind::PutTaskDef(task_def_req("bad name", None))),
        Rejection::InvalidArgument(_)
    ));
    // A legacy `type` comes back as `type_def`, which task workers read.
    let mut legacy = task_def_req("legacy", None);
    legacy.input_vars = vec![VariableDef {
        name: "x".into(),
        r#type: Some(VariableType::Double as i32),
        ..Default::default()
    }];
    match h.ok(Kind::PutTaskDef(legacy)) {
        Response::TaskDef(d) => assert_eq!(
            d.input_vars[0].type_def.as_ref().unwrap().defined_type,
            Some(DefinedType::PrimitiveType(VariableType::Double as i32))
        ),
        other => panic!("unexpected {other:?}"),
    }
    h.ok(Kind::DeleteTaskDef(DeleteTaskDefRequest {
        id: Some(TaskDefId {
            name: "legacy".into(),
        }),
    }));
    assert!(matches!(
        h.rejected(Kind::DeleteTaskDef(DeleteTaskDefRequest {
            id: Some(TaskDefId {
                name: "legacy".into()
            }),
        })),
        Rejection::NotFound(_)
    ));
}

#[test]
fn a_spec_whose_task_node_names_a_missing_def_or_the_wrong_inputs_is_invalid() {
    let mut h = Harness::new();
    let r = h.rejected(Kind::PutWfSpec(task_spec("pay", charge(0, 0), vec![])));
    match r {
        Rejection::InvalidArgument(m) => {
            assert!(
                m.contains("thread 'entrypoint'") && m.contains(TASK) && m.contains("'charge'"),
                "{m}"
            )
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    put_task_def(&mut h, "charge", None);
    let mut two = charge(0, 0);
    two.variables.push(var("amount"));
    match h.rejected(Kind::PutWfSpec(task_spec("pay", two, vec![]))) {
        Rejection::InvalidArgument(m) => assert!(m.contains("takes 1 input"), "{m}"),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

#[test]
fn a_claimed_task_reported_done_completes_its_node_with_the_output() {
    let mut h = Harness::new();
    start(&mut h, charge(0, 0), vec![]);
    let tr = task_run(&h);
    assert_eq!(tr.status(), TaskStatus::TaskScheduled);
    assert_eq!(tr.timeout_seconds, 60, "0 means LittleHorse's default");
    assert_eq!(tr.input_variables[0].value, Some(values::int(30)));
    match h.node_run("r", 0, 1).node_type {
        Some(NodeType::Task(t)) => assert_eq!(t.task_run_id, tr.id),
        other => panic!("unexpected {other:?}"),
    }
    let t = claim(&mut h, "w1").expect("a task");
    assert!(claim(&mut h, "w2").is_none(), "one task, one worker");
    assert_eq!(t.attempt_number, 0);
    assert_eq!(t.variables[0].var_name, "amount");
    assert!(matches!(
        t.source.as_ref().and_then(|s| s.task_run_source.as_ref()),
        Some(task_run_source::TaskRunSource::TaskNode(_))
    ));
    assert_eq!(task_run(&h).attempts[0].task_worker_id, "w1");
    h.ok(Kind::ReportTask(report(
        &t,
        TaskStatus::TaskSuccess,
        output(values::str("ok-30")),
    )));
    assert_eq!(h.status("r"), LhStatus::Completed);
    assert_eq!(h.variable("r", "receipt"), values::str("ok-30"));
    assert_eq!(task_run(&h).status(), TaskStatus::TaskSuccess);
    // The worker's retry of its report is answered OK and changes nothing.
    let before = h.digest();
    h.ok(Kind::ReportTask(report(
        &t,
        TaskStatus::TaskSuccess,
        output(values::str("ok-30")),
    )));
    assert_eq!(before, h.digest());
    // A different report for the finished attempt is refused.
    assert!(matches!(
        h.rejected(Kind::ReportTask(report(&t, TaskStatus::TaskFailed, None))),
        Rejection::FailedPrecondition(_)
    ));
}

#[test]
fn a_timed_out_attempt_is_handed_out_again_while_retries_last() {
    let mut h = Harness::new();
    start(&mut h, charge(1, 5), vec![]);
    let first = claim(&mut h, "slow").unwrap();
    h.advance_ms(5_000);
    assert_eq!(h.fire_due(), 1);
    let tr = task_run(&h);
    assert_eq!(tr.attempts[0].status(), TaskStatus::TaskTimeout);
    assert_eq!(tr.attempts[1].status(), TaskStatus::TaskScheduled);
    // The slow worker's late report is refused and changes nothing.
    assert!(matches!(
        h.rejected(Kind::ReportTask(report(
            &first,
            TaskStatus::TaskSuccess,
            output(values::str("late"))
        ))),
        Rejection::FailedPrecondition(_)
    ));
    let second = claim(&mut h, "fast").unwrap();
    assert_eq!(second.attempt_number, 1);
    h.advance_ms(5_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Error, "no retry left");
    let nr = h.node_run("r", 0, 1);
    assert_eq!(nr.failures[0].failure_name, "TIMEOUT");
    assert_eq!(task_run(&h).status(), TaskStatus::TaskTimeout);
}

#[test]
fn failures_exceptions_and_bad_output_fail_the_node_by_their_kind() {
    // Exhausted TASK_FAILED: TASK_FAILURE (ERROR).
    let mut h = Harness::new();
    start(&mut h, charge(0, 0), vec![]);
    let t = claim(&mut h, "w").unwrap();
    let err = Some(report_task_run::Result::Error(LhTaskError {
        r#type: LhErrorType::TaskError as i32,
        message: "stack trace".into(),
    }));
    h.ok(Kind::ReportTask(report(&t, TaskStatus::TaskFailed, err)));
    assert_eq!(h.status("r"), LhStatus::Error);
    assert_eq!(
        h.node_run("r", 0, 1).failures[0].failure_name,
        "TASK_FAILURE"
    );
    // Output of the wrong type: VAR_MUTATION_ERROR.
    let mut h = Harness::new();
    start(&mut h, charge(3, 0), vec![]);
    let t = claim(&mut h, "w").unwrap();
    h.ok(Kind::ReportTask(report(
        &t,
        TaskStatus::TaskSuccess,
        output(values::int(1)),
    )));
    assert_eq!(task_run(&h).attempts.len(), 1, "not retried");
    assert_eq!(task_run(&h).status(), TaskStatus::TaskOutputSerdeError);
    assert_eq!(
        h.node_run("r", 0, 1).failures[0].failure_name,
        "VAR_MUTATION_ERROR"
    );
    let before = h.digest();
    h.ok(Kind::ReportTask(report(
        &t,
        TaskStatus::TaskSuccess,
        output(values::int(1)),
    )));
    assert_eq!(
        before,
        h.digest(),
        "the worker's repeat is OK and changes nothing"
    );
    // A business exception: EXCEPTION with its name and content, caught by its handler.
    let mut h = Harness::new();
    start(
        &mut h,
        charge(3, 0),
        vec![FailureHandlerDef {
            handler_spec_name: "handler".into(),
            failure_to_catch: Some(FailureToCatch::SpecificFailure("card-declined".into())),
        }],
    );
    let t = claim(&mut h, "w").unwrap();
    let exc = Some(report_task_run::Result::Exception(LhTaskException {
        name: "card-declined".into(),
        message: "insufficient funds".into(),
        content: Some(values::int(30)),
    }));
    h.ok(Kind::ReportTask(report(&t, TaskStatus::TaskException, exc)));
    assert_eq!(task_run(&h).attempts.len(), 1, "exceptions are not retried");
    let nr = h.node_run("r", 0, 1);
    assert_eq!(nr.status(), LhStatus::Exception);
    assert_eq!(nr.failures[0].failure_name, "card-declined");
    assert_eq!(nr.failures[0].content, Some(values::int(30)));
    assert!(nr.failures[0].was_properly_handled);
    assert_eq!(h.status("r"), LhStatus::Completed);
}

#[test]
fn a_retry_with_backoff_waits_before_it_is_handed_out() {
    let mut h = Harness::new();
    let mut task = charge(2, 0);
    task.exponential_backoff = Some(ExponentialBackoffRetryPolicy {
        base_interval_ms: 1_000,
        max_delay_ms: 10_000,
        multiplier: 2.0,
    });
    start(&mut h, task, vec![]);
    let t = claim(&mut h, "w").unwrap();
    h.ok(Kind::ReportTask(report(&t, TaskStatus::TaskFailed, None)));
    assert_eq!(task_run(&h).status(), TaskStatus::TaskPending);
    assert!(claim(&mut h, "w").is_none(), "still backing off");
    h.advance_ms(999);
    h.fire_due();
    assert!(claim(&mut h, "w").is_none());
    h.advance_ms(1);
    h.fire_due();
    let t = claim(&mut h, "w").unwrap();
    assert_eq!(t.attempt_number, 1);
    h.ok(Kind::ReportTask(report(&t, TaskStatus::TaskFailed, None)));
    // The second retry waits 2 s.
    h.advance_ms(1_999);
    h.fire_due();
    assert!(claim(&mut h, "w").is_none());
    h.advance_ms(1);
    h.fire_due();
    assert_eq!(claim(&mut h, "w").unwrap().attempt_number, 2);
}

/// Thread 0 starts a child thread that runs TASK `charge(amount)`, then waits 3 s for "stop";
/// the unhandled timeout ends the WfRun in ERROR while the child's task is still wanted by
/// nothing.
fn abandoning(h: &mut Harness, task: TaskNode) {
    put_task_def(h, "charge", Some(VariableType::Str));
    h.put_def("stop");
    let mut req = spec(
        "abandon",
        vec![
            ("0-entrypoint-ENTRYPOINT", entry("1-start-START_THREAD")),
            (
                "1-start-START_THREAD",
                start_thread("worker", "2-stop-EXTERNAL_EVENT", "child"),
            ),
            (
                "2-stop-EXTERNAL_EVENT",
                wait("stop", Some(3), vec![edge("3-exit-EXIT")]),
            ),
            ("3-exit-EXIT", exit()),
        ],
        vec![
            var_def("amount", VariableType::Int, false),
            var_def("child", VariableType::Int, false),
        ],
    );
    req.thread_specs
        .insert("worker".into(), task_thread(charge_node(task)));
    h.put_spec(req);
}

fn run_abandoning(h: &mut Harness, id: &str) {
    h.run_with(
        "abandon",
        id,
        [("amount".to_string(), values::int(30))].into(),
    );
}

/// The child's TaskRun in WfRun `wf`.
fn child_task_run(h: &Harness, wf: &str) -> TaskRun {
    h.read(|t| {
        query::get_task_run(
            t,
            &TaskRunId {
                wf_run_id: Some(wf_id(wf)),
                task_guid: "1-1".into(),
            },
        )
        .unwrap()
    })
}

#[test]
fn a_queued_task_of_an_ended_wf_run_is_never_handed_out() {
    let mut h = Harness::new();
    abandoning(&mut h, charge(0, 10));
    run_abandoning(&mut h, "r");
    assert_eq!(child_task_run(&h, "r").status(), TaskStatus::TaskScheduled);
    h.advance_ms(3_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Error);
    assert!(
        !h.read(|t| query::task_queued(t, "charge").unwrap()),
        "the end took it off the queue"
    );
    // A live WfRun's task queued after the dead one is handed out; the dead one stays as it
    // was, with no worker.
    run_abandoning(&mut h, "r2");
    let t = claim(&mut h, "w").unwrap();
    assert_eq!(t.task_run_id.unwrap().wf_run_id, Some(wf_id("r2")));
    assert!(claim(&mut h, "w").is_none());
    let tr = child_task_run(&h, "r");
    assert_eq!(tr.attempts.len(), 1);
    assert_eq!(tr.attempts[0].status(), TaskStatus::TaskScheduled);
    assert_eq!(tr.attempts[0].task_worker_id, "");
}

#[test]
fn an_attempt_running_when_its_wf_run_ends_finishes_but_is_not_retried() {
    let mut h = Harness::new();
    abandoning(&mut h, charge(2, 5));
    run_abandoning(&mut h, "r");
    let first = claim(&mut h, "w").unwrap();
    h.advance_ms(3_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Error);
    // The attempt times out after the WfRun ended: no retry, though two were left.
    h.advance_ms(2_000);
    assert_eq!(h.fire_due(), 1);
    let tr = child_task_run(&h, "r");
    assert_eq!(tr.attempts.len(), 1);
    assert_eq!(tr.status(), TaskStatus::TaskTimeout);
    assert!(claim(&mut h, "w").is_none());
    assert!(matches!(
        h.rejected(Kind::ReportTask(report(
            &first,
            TaskStatus::TaskSuccess,
            None
        ))),
        Rejection::FailedPrecondition(_)
    ));

    // One still running when the WfRun ends is recorded when its worker reports it.
    run_abandoning(&mut h, "r2");
    let t = claim(&mut h, "w").unwrap();
    h.advance_ms(3_000);
    h.fire_due();
    assert_eq!(h.status("r2"), LhStatus::Error);
    h.ok(Kind::ReportTask(report(
        &t,
        TaskStatus::TaskSuccess,
        output(values::str("done")),
    )));
    assert_eq!(child_task_run(&h, "r2").status(), TaskStatus::TaskSuccess);
    assert_eq!(h.status("r2"), LhStatus::Error);
}

#[test]
fn a_retry_backing_off_when_its_wf_run_ends_is_never_queued() {
    let mut h = Harness::new();
    let mut task = charge(2, 0);
    task.exponential_backoff = Some(ExponentialBackoffRetryPolicy {
        base_interval_ms: 5_000,
        max_delay_ms: 10_000,
        multiplier: 2.0,
    });
    abandoning(&mut h, task);
    run_abandoning(&mut h, "r");
    let t = claim(&mut h, "w").unwrap();
    h.ok(Kind::ReportTask(report(&t, TaskStatus::TaskFailed, None)));
    assert_eq!(child_task_run(&h, "r").status(), TaskStatus::TaskPending);
    h.advance_ms(3_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Error);
    h.advance_ms(2_000);
    assert_eq!(
        h.fire_due(),
        0,
        "the WfRun's end cancelled the retry's timer"
    );
    assert!(claim(&mut h, "w").is_none());
    let tr = child_task_run(&h, "r");
    assert_eq!(tr.attempts.len(), 2);
    assert_eq!(tr.attempts[1].status(), TaskStatus::TaskPending);
}

#[test]
fn a_task_under_a_thread_halted_for_good_is_never_handed_out_while_the_wf_run_goes_on() {
    // Thread 0 starts "outer" and "quick" and waits for ANY of them, then for "end". "outer"
    // starts "worker" (the task) and waits for "never"; "quick" waits for "b". When "b" comes,
    // WAIT_FOR_ANY decides without "outer", which is halted for good, and "worker" is halted
    // under it: the WfRun is still RUNNING, but nothing will ever use the task's outcome.
    let mut h = Harness::new();
    put_task_def(&mut h, "charge", Some(VariableType::Str));
    for def in ["end", "never", "b"] {
        h.put_def(def);
    }
    let mut req = spec(
        "nested",
        vec![
            ("0-entrypoint-ENTRYPOINT", entry("1-outer-START_THREAD")),
            (
                "1-outer-START_THREAD",
                start_thread("outer", "2-quick-START_THREAD", "o"),
            ),
            (
                "2-quick-START_THREAD",
                start_thread("quick", "3-any-WAIT_FOR_THREADS", "q"),
            ),
            (
                "3-any-WAIT_FOR_THREADS",
                wait_threads(
                    &["o", "q"],
                    WaitForThreadsStrategy::WaitForAny,
                    vec![],
                    "4-end-EXTERNAL_EVENT",
                ),
            ),
            (
                "4-end-EXTERNAL_EVENT",
                wait("end", None, vec![edge("5-exit-EXIT")]),
            ),
            ("5-exit-EXIT", exit()),
        ],
        vec![
            var_def("amount", VariableType::Int, false),
            var_def("o", VariableType::Int, false),
            var_def("q", VariableType::Int, false),
            var_def("w", VariableType::Int, false),
        ],
    );
    let waiting = |def: &str| {
        thread(
            vec![
                ("0-entrypoint-ENTRYPOINT", entry("1-wait-EXTERNAL_EVENT")),
                (
                    "1-wait-EXTERNAL_EVENT",
                    wait(def, None, vec![edge("2-exit-EXIT")]),
                ),
                ("2-exit-EXIT", exit()),
            ],
            vec![],
        )
    };
    let mut outer = waiting("never");
    outer.nodes.insert(
        "0-entrypoint-ENTRYPOINT".into(),
        entry("1-worker-START_THREAD"),
    );
    outer.nodes.insert(
        "1-worker-START_THREAD".into(),
        start_thread("worker", "1-wait-EXTERNAL_EVENT", "w"),
    );
    req.thread_specs.insert("outer".into(), outer);
    req.thread_specs.insert("quick".into(), waiting("b"));
    req.thread_specs
        .insert("worker".into(), task_thread(charge_node(charge(0, 10))));
    h.put_spec(req);
    h.run_with(
        "nested",
        "r",
        [("amount".to_string(), values::int(30))].into(),
    );
    assert!(h.read(|t| query::task_queued(t, "charge").unwrap()));
    h.post("r", "b", values::null());
    assert_eq!(h.status("r"), LhStatus::Running);
    let worker = h.variable("r", "w");
    let Some(Value::Int(worker)) = worker.value else {
        panic!("the worker thread's number: {worker:?}")
    };
    assert_eq!(h.thread_run("r", worker as i32).status(), LhStatus::Halted);
    assert!(claim(&mut h, "w").is_none());
    assert!(!h.read(|t| query::task_queued(t, "charge").unwrap()));
}

#[test]
fn reports_for_unknown_task_runs_or_attempts_are_refused() {
    let mut h = Harness::new();
    start(&mut h, charge(0, 0), vec![]);
    let t = claim(&mut h, "w").unwrap();
    let mut unknown = report(&t, TaskStatus::TaskSuccess, output(values::str("x")));
    unknown.task_run_id = Some(TaskRunId {
        wf_run_id: Some(wf_id("nope")),
        task_guid: "0-1".into(),
    });
    assert!(matches!(
        h.rejected(Kind::ReportTask(unknown)),
        Rejection::NotFound(_)
    ));
    let mut bad_attempt = report(&t, TaskStatus::TaskSuccess, output(values::str("x")));
    bad_attempt.attempt_number = 7;
    assert!(matches!(
        h.rejected(Kind::ReportTask(bad_attempt)),
        Rejection::InvalidArgument(_)
    ));
    assert!(matches!(
        h.rejected(Kind::ReportTask(report(&t, TaskStatus::TaskTimeout, None))),
        Rejection::InvalidArgument(_)
    ));
}

#[test]
fn deleting_a_wf_run_removes_its_task_runs_and_queue() {
    let mut h = Harness::new();
    start(&mut h, charge(0, 0), vec![]);
    h.ok(Kind::DeleteWfRun(DeleteWfRunRequest {
        id: Some(wf_id("r")),
    }));
    assert!(claim(&mut h, "w").is_none());
    assert_eq!(h.pending_timers(), 0);
    let missing = h.read(|t| {
        query::get_task_run(
            t,
            &TaskRunId {
                wf_run_id: Some(wf_id("r")),
                task_guid: "0-1".into(),
            },
        )
        .is_err()
    });
    assert!(missing);
}

#[test]
fn backoff_grows_by_the_multiplier_up_to_the_maximum_and_never_overflows() {
    use halter_state_machine::task::backoff_ms;
    let b = ExponentialBackoffRetryPolicy {
        base_interval_ms: 1_000,
        max_delay_ms: 10_000,
        multiplier: 2.0,
    };
    let got: Vec<i64> = (1..=6).map(|n| backoff_ms(&b, n)).collect();
    assert_eq!(got, [1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
    let huge = ExponentialBackoffRetryPolicy {
        base_interval_ms: i32::MAX,
        max_delay_ms: i64::MAX,
        multiplier: f32::MAX,
    };
    assert!(backoff_ms(&huge, 1000) > 0);
}

#[test]
fn a_spec_asking_for_absurd_retries_or_backoff_is_invalid() {
    let mut h = Harness::new();
    put_task_def(&mut h, "charge", Some(VariableType::Str));
    let mut many = charge(0, 0);
    many.retries = i32::MAX;
    assert!(matches!(
        h.rejected(Kind::PutWfSpec(task_spec("pay", many, vec![]))),
        Rejection::InvalidArgument(_)
    ));
    let mut nan = charge(1, 0);
    nan.exponential_backoff = Some(ExponentialBackoffRetryPolicy {
        base_interval_ms: 10,
        max_delay_ms: 100,
        multiplier: f32::NAN,
    });
    assert!(matches!(
        h.rejected(Kind::PutWfSpec(task_spec("pay", nan, vec![]))),
        Rejection::InvalidArgument(_)
    ));
}

/// The TaskRuns SearchTaskRun finds for "charge" (in `status`, if given), in order.
fn search_task_runs(h: &Harness, status: Option<TaskStatus>, limit: Option<i32>) -> Vec<String> {
    let mut req = SearchTaskRunRequest {
        task_def_name: "charge".into(),
        status: status.map(|s| s as i32),
        limit,
        ..Default::default()
    };
    let mut out = Vec::new();
    loop {
        let page = h.read(|t| query::search_task_runs(t, &req).unwrap());
        if let Some(l) = limit {
            assert!(page.results.len() <= l as usize);
        }
        out.extend(page.results.into_iter().map(|id| id.wf_run_id.unwrap().id));
        match page.bookmark {
            Some(b) => req.bookmark = Some(b),
            None => return out,
        }
    }
}

fn assert_task_indexes_agree(h: &Harness) {
    let problems = h.read(|t| halter_state_machine::task_run_index::audit(t).unwrap());
    assert!(problems.is_empty(), "{problems:?}");
}

/// Invariant: SearchTaskRun finds every TaskRun of its TaskDef, oldest first, and by status
/// exactly those in that status now: a status row moves with each attempt, and a deleted
/// WfRun's TaskRuns are found no more.
#[test]
fn search_task_runs_follows_status_changes_and_deletes() {
    let mut h = Harness::new();
    put_task_def(&mut h, "charge", Some(VariableType::Str));
    h.put_spec(task_spec("pay", charge(0, 0), vec![]));
    for id in ["r1", "r2", "r3"] {
        h.run_with("pay", id, [("amount".to_string(), values::int(30))].into());
        h.advance_ms(1);
    }
    assert_eq!(search_task_runs(&h, None, None), ["r1", "r2", "r3"]);
    assert_eq!(search_task_runs(&h, None, Some(1)), ["r1", "r2", "r3"]);
    assert_eq!(
        search_task_runs(&h, Some(TaskStatus::TaskScheduled), Some(2)),
        ["r1", "r2", "r3"]
    );
    assert_task_indexes_agree(&h);

    // r1's attempt is handed out, then done.
    let t = claim(&mut h, "w").unwrap();
    assert_eq!(
        t.task_run_id
            .as_ref()
            .unwrap()
            .wf_run_id
            .as_ref()
            .unwrap()
            .id,
        "r1"
    );
    assert_eq!(
        search_task_runs(&h, Some(TaskStatus::TaskRunning), None),
        ["r1"]
    );
    assert_eq!(
        search_task_runs(&h, Some(TaskStatus::TaskScheduled), None),
        ["r2", "r3"]
    );
    h.ok(Kind::ReportTask(report(
        &t,
        TaskStatus::TaskSuccess,
        output(values::str("ok")),
    )));
    assert!(search_task_runs(&h, Some(TaskStatus::TaskRunning), None).is_empty());
    assert_eq!(
        search_task_runs(&h, Some(TaskStatus::TaskSuccess), None),
        ["r1"]
    );
    assert_task_indexes_agree(&h);

    h.ok(Kind::DeleteWfRun(DeleteWfRunRequest {
        id: Some(wf_id("r2")),
    }));
    assert_eq!(search_task_runs(&h, None, None), ["r1", "r3"]);
    assert_eq!(
        search_task_runs(&h, Some(TaskStatus::TaskScheduled), None),
        ["r3"]
    );
    assert_task_indexes_agree(&h);

    // Only those scheduled within the window.
    let mut req = SearchTaskRunRequest {
        task_def_name: "charge".into(),
        earliest_start: Some(halter_state_machine::time::ts(h.now + 1 - 3)),
        ..Default::default()
    };
    let later = h.read(|t| query::search_task_runs(t, &req).unwrap());
    assert_eq!(later.results.len(), 1, "{later:?}");
    req.earliest_start = None;
    req.status = Some(99);
    assert!(h.read(|t| query::search_task_runs(t, &req)).is_err());
}

fn rescue(wf: &str, thread: i32, skip: bool) -> Kind {
    Kind::RescueThreadRun(RescueThreadRunRequest {
        wf_run_id: Some(wf_id(wf)),
        thread_run_number: thread,
        skip_current_node: skip,
    })
}

#[test]
fn rescue_runs_a_failed_task_node_again_and_the_wf_run_completes() {
    let mut h = Harness::new();
    start(&mut h, charge(0, 30), vec![]);
    let t = claim(&mut h, "w1").unwrap();
    h.ok(Kind::ReportTask(report(&t, TaskStatus::TaskFailed, None)));
    assert_eq!(h.status("r"), LhStatus::Error);
    assert!(claim(&mut h, "w1").is_none(), "no retries left");

    let answered = match h.ok(rescue("r", 0, false)) {
        Response::WfRun(w) => w,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(answered.status(), LhStatus::Running);
    assert_eq!(h.status("r"), LhStatus::Running);
    assert!(h.wf_run("r").end_time.is_none());
    let th = h.thread_run("r", 0);
    assert_eq!(th.status(), LhStatus::Running);
    assert_eq!(
        th.current_node_position, 2,
        "a new NodeRun for the same node"
    );
    let again = h.node_run("r", 0, 2);
    assert_eq!(again.node_name, TASK);
    assert_eq!(again.status(), LhStatus::Running);
    assert_eq!(
        h.node_run("r", 0, 1).status(),
        LhStatus::Error,
        "history kept"
    );

    // A new TaskRun, with the same input, is handed out and its success completes the run.
    let t2 = claim(&mut h, "w2").unwrap();
    assert_ne!(t2.task_run_id, t.task_run_id);
    assert_eq!(t2.variables, t.variables);
    h.ok(Kind::ReportTask(report(
        &t2,
        TaskStatus::TaskSuccess,
        output(values::str("receipt-2")),
    )));
    assert_eq!(h.status("r"), LhStatus::Completed);
    assert_eq!(h.variable("r", "receipt"), values::str("receipt-2"));

    // A completed WfRun has nothing to rescue.
    match h.rejected(rescue("r", 0, false)) {
        Rejection::FailedPrecondition(m) => assert!(m.contains("COMPLETED"), "{m}"),
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }
}

#[test]
fn rescue_with_skip_takes_the_failed_nodes_edges_with_their_mutations() {
    let mut h = Harness::new();
    start(&mut h, charge(0, 30), vec![]);
    let t = claim(&mut h, "w1").unwrap();
    h.ok(Kind::ReportTask(report(&t, TaskStatus::TaskFailed, None)));
    assert_eq!(h.status("r"), LhStatus::Error);
    h.ok(rescue("r", 0, true));
    // The edge assigns the node's output, null for a failed task.
    assert_eq!(h.status("r"), LhStatus::Completed);
    assert_eq!(h.variable("r", "receipt"), values::null());
    assert!(claim(&mut h, "w1").is_none(), "the task is not run again");
}

#[test]
fn rescue_requests_that_cannot_apply_are_refused_and_change_nothing() {
    let mut h = Harness::new();
    match h.rejected(rescue("nope", 0, false)) {
        Rejection::NotFound(m) => assert!(m.contains("nope"), "{m}"),
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
    start(&mut h, charge(0, 30), vec![]);
    match h.rejected(rescue("r", 0, false)) {
        Rejection::FailedPrecondition(m) => assert!(m.contains("RUNNING, not ERROR"), "{m}"),
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }
    let t = claim(&mut h, "w1").unwrap();
    h.ok(Kind::ReportTask(report(&t, TaskStatus::TaskFailed, None)));
    match h.rejected(rescue("r", 7, false)) {
        Rejection::InvalidArgument(m) => assert!(m.contains("non-existent thread"), "{m}"),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    assert!(matches!(
        h.rejected(Kind::RescueThreadRun(RescueThreadRunRequest::default())),
        Rejection::InvalidArgument(_)
    ));
    assert_eq!(h.status("r"), LhStatus::Error);
}

#[test]
fn rescue_gives_back_the_queued_task_of_a_child_the_failure_stopped() {
    // The entrypoint starts a child that runs the task, then waits 5 s for "a" and times out:
    // the WfRun fails, the child halts under it and its queued attempt leaves the queue.
    let mut h = Harness::new();
    put_task_def(&mut h, "charge", Some(VariableType::Str));
    h.put_def("a");
    let mut req = spec(
        "pay",
        vec![
            ("0-entrypoint-ENTRYPOINT", entry("1-charger-START_THREAD")),
            (
                "1-charger-START_THREAD",
                start_thread("charger", "2-wait-EXTERNAL_EVENT", "n"),
            ),
            (
                "2-wait-EXTERNAL_EVENT",
                wait("a", Some(5), vec![edge("3-exit-EXIT")]),
            ),
            ("3-exit-EXIT", exit()),
        ],
        vec![
            var_def("amount", VariableType::Int, false),
            var_def("receipt", VariableType::Str, false),
            var_def("n", VariableType::Int, false),
        ],
    );
    let mut out = edge("2-exit-EXIT");
    out.variable_mutations = vec![assign_output("receipt")];
    req.thread_specs.insert(
        "charger".into(),
        task_thread(node(node::Node::Task(charge(0, 30)), vec![out])),
    );
    h.put_spec(req);
    h.run_with("pay", "r", [("amount".to_string(), values::int(30))].into());
    h.advance_ms(5_000);
    h.fire_due();
    assert_eq!(h.status("r"), LhStatus::Error);
    assert_eq!(h.thread_run("r", 1).status(), LhStatus::Halted);
    assert!(
        claim(&mut h, "w1").is_none(),
        "the ended WfRun's task is not handed out"
    );

    // Skipping the timed-out wait reaches the EXIT, which waits for the resumed child.
    h.ok(rescue("r", 0, true));
    assert_eq!(h.thread_run("r", 1).status(), LhStatus::Running);
    assert_eq!(h.status("r"), LhStatus::Running);
    let t = claim(&mut h, "w1").expect("the child's task is queued again");
    h.ok(Kind::ReportTask(report(
        &t,
        TaskStatus::TaskSuccess,
        output(values::str("paid")),
    )));
    assert_eq!(h.status("r"), LhStatus::Completed);
    assert_eq!(h.variable("r", "receipt"), values::str("paid"));
}

fn put_checkpoint(t: &ScheduledTask, attempt: i32, value: VariableValue) -> Kind {
    Kind::PutCheckpoint(PutCheckpointRequest {
        task_run_id: t.task_run_id.clone(),
        task_attempt: attempt,
        value: Some(value),
        logs: Some(format!("attempt {attempt}")),
    })
}

fn checkpointed(h: &mut Harness, kind: Kind) -> PutCheckpointResponse {
    match h.ok(kind) {
        Response::PutCheckpoint(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

fn get_checkpoint(h: &Harness, n: i32) -> Result<Checkpoint, Rejection> {
    h.query(|t| {
        query::get_checkpoint(
            t,
            &CheckpointId {
                task_run: Some(TaskRunId {
                    wf_run_id: Some(wf_id("r")),
                    task_guid: "0-1".into(),
                }),
                checkpoint_number: n,
            },
        )
    })
}

const STOP: i32 = put_checkpoint_response::FlowControlContinue::StopTask as i32;
const CONTINUE: i32 = put_checkpoint_response::FlowControlContinue::ContinueTask as i32;

/// Invariant: checkpoints of a TaskRun are numbered 0, 1, ... in commit order, only the
/// latest running attempt may save one (a zombie is told to stop and nothing changes), each
/// restarts that attempt's timeout, and the next attempt is told how many there are and
/// reads them back.
#[test]
fn checkpoints_are_numbered_fenced_restart_the_timeout_and_reach_the_next_attempt() {
    let mut h = Harness::new();
    start(&mut h, charge(1, 5), vec![]);
    let first = claim(&mut h, "slow").unwrap();
    assert_eq!(first.total_observed_checkpoints, 0);
    let c0 = checkpointed(&mut h, put_checkpoint(&first, 0, values::int(1)));
    assert_eq!(c0.flow_control_continue_type, CONTINUE);
    let saved = c0.created_checkpoint.unwrap();
    assert_eq!(saved.id.as_ref().unwrap().checkpoint_number, 0);
    h.advance_ms(4_000);
    let c1 = checkpointed(&mut h, put_checkpoint(&first, 0, values::int(2)));
    assert_eq!(
        c1.created_checkpoint.unwrap().id.unwrap().checkpoint_number,
        1
    );
    // 8 s after the claim, 4 s after the last checkpoint: the 5 s timeout was restarted.
    h.advance_ms(4_000);
    assert_eq!(h.fire_due(), 0);
    assert_eq!(task_run(&h).attempts[0].status(), TaskStatus::TaskRunning);
    h.advance_ms(1_000);
    assert_eq!(h.fire_due(), 1);
    assert_eq!(task_run(&h).attempts[0].status(), TaskStatus::TaskTimeout);

    // The timed-out worker is a zombie now: told to stop, and nothing is saved.
    let before = h.digest();
    let zombie = checkpointed(&mut h, put_checkpoint(&first, 0, values::int(3)));
    assert_eq!(zombie.flow_control_continue_type, STOP);
    assert!(zombie.created_checkpoint.is_none());
    assert_eq!(before, h.digest());

    let second = claim(&mut h, "fast").unwrap();
    assert_eq!(second.attempt_number, 1);
    assert_eq!(second.total_observed_checkpoints, 2);
    let read0 = get_checkpoint(&h, 0).unwrap();
    assert_eq!(read0, saved);
    assert_eq!(read0.logs.as_deref(), Some("attempt 0"));
    assert_eq!(get_checkpoint(&h, 1).unwrap().value, Some(values::int(2)));
    assert!(matches!(get_checkpoint(&h, 2), Err(Rejection::NotFound(_))));
    assert!(matches!(
        get_checkpoint(&h, -1),
        Err(Rejection::InvalidArgument(_))
    ));
    // An attempt number that is not the latest is fenced too.
    let wrong = checkpointed(&mut h, put_checkpoint(&second, 0, values::int(4)));
    assert_eq!(wrong.flow_control_continue_type, STOP);

    let c2 = checkpointed(&mut h, put_checkpoint(&second, 1, values::int(5)));
    assert_eq!(
        c2.created_checkpoint.unwrap().id.unwrap().checkpoint_number,
        2
    );
    h.ok(Kind::ReportTask(report(
        &second,
        TaskStatus::TaskSuccess,
        output(values::str("done")),
    )));
    assert_eq!(h.status("r"), LhStatus::Completed);
    let tr = task_run(&h);
    assert_eq!(tr.total_checkpoints, 3);
    // A finished attempt may not save more.
    let late = checkpointed(&mut h, put_checkpoint(&second, 1, values::int(6)));
    assert_eq!(late.flow_control_continue_type, STOP);
    assert_eq!(task_run(&h).total_checkpoints, 3);
}

/// Invariant: a checkpoint for a TaskRun that does not exist, or a malformed one, is refused
/// and changes nothing; deleting the WfRun deletes its checkpoints.
#[test]
fn checkpoints_of_unknown_task_runs_are_refused_and_go_with_their_wf_run() {
    let mut h = Harness::new();
    start(&mut h, charge(0, 0), vec![]);
    let t = claim(&mut h, "w").unwrap();
    let mut unknown = t.clone();
    unknown.task_run_id = Some(TaskRunId {
        wf_run_id: Some(wf_id("nope")),
        task_guid: "0-1".into(),
    });
    assert!(matches!(
        h.rejected(put_checkpoint(&unknown, 0, values::int(1))),
        Rejection::InvalidArgument(_)
    ));
    let mut no_id = t.clone();
    no_id.task_run_id = None;
    assert!(matches!(
        h.rejected(put_checkpoint(&no_id, 0, values::int(1))),
        Rejection::InvalidArgument(_)
    ));
    checkpointed(&mut h, put_checkpoint(&t, 0, values::int(1)));
    checkpointed(&mut h, put_checkpoint(&t, 0, values::int(2)));
    assert!(get_checkpoint(&h, 1).is_ok());
    h.ok(Kind::DeleteWfRun(DeleteWfRunRequest {
        id: Some(wf_id("r")),
    }));
    assert!(matches!(get_checkpoint(&h, 0), Err(Rejection::NotFound(_))));
    assert!(matches!(get_checkpoint(&h, 1), Err(Rejection::NotFound(_))));
    let rows = h.read(|t| {
        use redb::ReadableTableMetadata;
        t.checkpoints().unwrap().len().unwrap()
    });
    assert_eq!(rows, 0);
    assert_eq!(h.pending_timers(), 0);
}

fn heartbeat(def: &str, worker: &str) -> Kind {
    Kind::TaskWorkerHeartbeat(halter_api::halter::TaskWorkerHeartbeat {
        task_def_name: def.into(),
        worker_id: worker.into(),
        hosts: vec![LhHostInfo {
            host: "127.0.0.1".into(),
            port: 2023,
        }],
    })
}

fn worker_group(h: &Harness, def: &str) -> Result<TaskWorkerGroup, Rejection> {
    h.query(|t| query::get_task_worker_group(t, &TaskDefId { name: def.into() }))
}

fn workers(h: &Harness, def: &str) -> Vec<(String, i64)> {
    worker_group(h, def)
        .unwrap()
        .task_workers
        .into_iter()
        .map(|(id, w)| {
            (
                id,
                halter_state_machine::time::ms(&w.latest_heartbeat.unwrap()),
            )
        })
        .collect()
}

/// Invariant: a heartbeat stamps its worker with the entry's time and hosts; a worker silent
/// for 90 s or more leaves its group at the next heartbeat; the group goes with its TaskDef;
/// heartbeats for unknown TaskDefs or without a worker id are refused and change nothing.
#[test]
fn heartbeats_keep_a_task_worker_group_and_drop_workers_silent_for_90_s() {
    let mut h = Harness::new();
    put_task_def(&mut h, "charge", None);
    let t0 = h.now;
    assert!(matches!(
        worker_group(&h, "charge"),
        Err(Rejection::NotFound(_))
    ));
    h.ok(heartbeat("charge", "w1"));
    let g = worker_group(&h, "charge").unwrap();
    assert_eq!(
        g.created_at.as_ref().map(halter_state_machine::time::ms),
        Some(t0)
    );
    assert_eq!(g.task_workers["w1"].hosts.len(), 1);
    h.advance_ms(60_000);
    h.ok(heartbeat("charge", "w2"));
    assert_eq!(
        workers(&h, "charge"),
        vec![("w1".into(), t0), ("w2".into(), t0 + 60_000)]
    );
    h.advance_ms(30_000);
    h.ok(heartbeat("charge", "w2"));
    assert_eq!(workers(&h, "charge"), vec![("w2".into(), t0 + 90_000)]);

    assert!(matches!(
        h.rejected(heartbeat("refund", "w1")),
        Rejection::NotFound(_)
    ));
    assert!(matches!(
        h.rejected(heartbeat("charge", "")),
        Rejection::InvalidArgument(_)
    ));
    h.ok(Kind::DeleteTaskDef(DeleteTaskDefRequest {
        id: Some(TaskDefId {
            name: "charge".into(),
        }),
    }));
    assert!(matches!(
        worker_group(&h, "charge"),
        Err(Rejection::NotFound(_))
    ));
}

/// Invariant: a group keeps at most `MAX_WORKERS`; past it the worker silent longest leaves,
/// the same one on every replica.
#[test]
fn a_task_worker_group_is_bounded_and_drops_the_longest_silent_first() {
    use halter_state_machine::task_worker_group::MAX_WORKERS;
    let mut h = Harness::new();
    put_task_def(&mut h, "charge", None);
    h.ok(heartbeat("charge", "old"));
    h.advance_ms(1);
    for i in 0..MAX_WORKERS {
        h.ok(heartbeat("charge", &format!("w{i:04}")));
    }
    let ids: Vec<String> = workers(&h, "charge")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len(), MAX_WORKERS);
    assert!(!ids.contains(&"old".to_string()));
    assert!(ids.contains(&"w0000".to_string()));
}
