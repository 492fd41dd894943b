#![allow(clippy::unwrap_used)]
//! UserTaskDefs, USER_TASK nodes and UserTaskRuns: versions of a def, what arrival creates,
//! assigning, saving, completing (the results become the node's output) and cancelling,
//! comments, action triggers as replicated timers, search, and deletion with the WfRun.
//! Every refusal is checked to change nothing (`Harness::rejected` compares digests).

mod support;

use std::collections::BTreeMap;

use halter_api::halter::command::Kind;
use halter_api::littlehorse::*;
use halter_api::values;
use halter_state_machine::{query, Rejection, Response};
use support::*;

fn field(name: &str, ty: VariableType, required: bool) -> UserTaskField {
    UserTaskField {
        name: name.into(),
        r#type: ty as i32,
        display_name: name.into(),
        required,
        ..Default::default()
    }
}

fn put_ut_def(h: &mut Harness, name: &str, fields: Vec<UserTaskField>) -> UserTaskDef {
    match h.ok(Kind::PutUserTaskDef(PutUserTaskDefRequest {
        name: name.into(),
        fields,
        description: None,
    })) {
        Response::UserTaskDef(d) => d,
        other => panic!("unexpected {other:?}"),
    }
}

fn approval_fields() -> Vec<UserTaskField> {
    vec![
        field("approved", VariableType::Bool, true),
        field("comment", VariableType::Str, false),
    ]
}

fn user_task(
    def: &str,
    user_id: Option<VariableAssignment>,
    user_group: Option<VariableAssignment>,
    actions: Vec<UtActionTrigger>,
    edges: Vec<Edge>,
) -> Node {
    node(
        node::Node::UserTask(UserTaskNode {
            user_task_def_name: def.into(),
            user_group,
            user_id,
            actions,
            user_task_def_version: None,
            notes: Some(lit(values::str("please look at this"))),
            on_cancellation_exception_name: None,
        }),
        edges,
    )
}

/// entrypoint -> the user task (its results into `answer`) -> exit.
fn approval_spec(
    name: &str,
    user_id: Option<VariableAssignment>,
    group: Option<VariableAssignment>,
    actions: Vec<UtActionTrigger>,
) -> PutWfSpecRequest {
    let mut to_exit = edge("2-exit");
    to_exit.variable_mutations = vec![assign_output("answer")];
    spec(
        name,
        vec![
            ("0-entry", entry("1-approve")),
            (
                "1-approve",
                user_task("approval", user_id, group, actions, vec![to_exit]),
            ),
            ("2-exit", exit()),
        ],
        vec![var_def("answer", VariableType::JsonObj, false)],
    )
}

fn ut_id(wf: &str) -> UserTaskRunId {
    UserTaskRunId {
        wf_run_id: Some(wf_id(wf)),
        user_task_guid: "0-1".into(),
    }
}

fn ut_run(h: &Harness, wf: &str) -> UserTaskRun {
    h.read(|t| query::get_user_task_run(t, &ut_id(wf)).unwrap())
}

fn assign(wf: &str, user: Option<&str>, group: Option<&str>, over: bool) -> Kind {
    Kind::AssignUserTaskRun(AssignUserTaskRunRequest {
        user_task_run_id: Some(ut_id(wf)),
        override_claim: over,
        user_group: group.map(Into::into),
        user_id: user.map(Into::into),
    })
}

fn complete(wf: &str, user: &str, results: Vec<(&str, VariableValue)>) -> Kind {
    Kind::CompleteUserTaskRun(CompleteUserTaskRunRequest {
        user_task_run_id: Some(ut_id(wf)),
        results: results
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
        user_id: user.into(),
    })
}

fn cancel(wf: &str) -> Kind {
    Kind::CancelUserTaskRun(CancelUserTaskRunRequest {
        user_task_run_id: Some(ut_id(wf)),
    })
}

fn trigger(
    action: ut_action_trigger::Action,
    delay: i64,
    hook: ut_action_trigger::UtHook,
) -> UtActionTrigger {
    UtActionTrigger {
        action: Some(action),
        delay_seconds: Some(lit(values::int(delay))),
        hook: hook as i32,
    }
}

/// A reminder trigger: the TaskDef `def` with the user task's assignee as its one input.
fn reminder(def: &str, delay: i64, hook: ut_action_trigger::UtHook) -> UtActionTrigger {
    trigger(
        ut_action_trigger::Action::Task(ut_action_trigger::UtaTask {
            task: Some(TaskNode {
                task_to_execute: Some(task_node::TaskToExecute::TaskDefId(TaskDefId {
                    name: def.into(),
                })),
                variables: vec![lit(values::str("anna"))],
                ..Default::default()
            }),
            mutations: vec![],
        }),
        delay,
        hook,
    )
}

fn put_remind_def(h: &mut Harness) {
    h.ok(Kind::PutTaskDef(PutTaskDefRequest {
        name: "remind".into(),
        input_vars: vec![VariableDef {
            name: "who".into(),
            type_def: Some(TypeDefinition {
                defined_type: Some(type_definition::DefinedType::PrimitiveType(
                    VariableType::Str as i32,
                )),
                masked: false,
            }),
            ..Default::default()
        }],
        return_type: None,
        description: None,
    }));
}

fn claim_reminder(h: &mut Harness) -> Option<ScheduledTask> {
    match h.ok(Kind::ClaimTask(halter_api::halter::ClaimTask {
        task_def_name: "remind".into(),
        worker_id: "w".into(),
        worker_version: None,
    })) {
        Response::ScheduledTask(t) => t,
        other => panic!("unexpected {other:?}"),
    }
}

/// Reminders (TASK triggers): at its delay a TaskRun of the TaskDef is queued for workers with
/// the trigger's inputs and a `user_task_trigger` source, and the UserTaskRun records it; the
/// task's success or failure changes nothing in the WfRun. A reminder armed on assignment is
/// dropped when the task is assigned again before it is due.
#[test]
fn reminder_tasks_run_for_workers_and_leave_the_user_task_alone() {
    let mut h = Harness::new();
    put_ut_def(&mut h, "approval", approval_fields());
    put_remind_def(&mut h);
    h.put_spec(approval_spec(
        "s",
        Some(lit(values::str("anna"))),
        None,
        vec![
            reminder("remind", 60, ut_action_trigger::UtHook::OnArrival),
            reminder("remind", 120, ut_action_trigger::UtHook::OnTaskAssigned),
        ],
    ));
    h.run("s", "w1");
    h.advance_ms(59_000);
    h.fire_due();
    assert!(
        claim_reminder(&mut h).is_none(),
        "a reminder before its delay"
    );
    h.advance_ms(1_000);
    h.fire_due();
    let task = claim_reminder(&mut h).expect("the reminder is queued at 60 s");
    assert_eq!(
        task.variables,
        vec![VarNameAndVal {
            var_name: "who".into(),
            value: Some(values::str("anna")),
            masked: false,
        }]
    );
    let source = task.source.as_ref().and_then(|s| s.task_run_source.clone());
    let Some(task_run_source::TaskRunSource::UserTaskTrigger(by)) = source else {
        panic!("source {:?}", task.source);
    };
    assert_eq!(by.user_id.as_deref(), Some("anna"));
    assert_eq!(
        by.node_run_id.as_ref().map(|n| n.position),
        Some(1),
        "the USER_TASK NodeRun"
    );
    let executed = |h: &Harness| {
        ut_run(h, "w1")
            .events
            .iter()
            .filter_map(|e| match &e.event {
                Some(user_task_event::Event::TaskExecuted(t)) => t.task_run.clone(),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(executed(&h), vec![task.task_run_id.clone().unwrap()]);

    // The worker fails it: the WfRun and the user task do not notice.
    h.ok(Kind::ReportTask(ReportTaskRun {
        task_run_id: task.task_run_id.clone(),
        time: None,
        status: TaskStatus::TaskFailed as i32,
        result: None,
        log_output: None,
        attempt_number: task.attempt_number,
        total_checkpoints: 0,
    }));
    assert_eq!(h.status("w1"), LhStatus::Running);
    assert_eq!(h.node_run("w1", 0, 1).status(), LhStatus::Running);
    assert_eq!(ut_run(&h, "w1").status(), UserTaskRunStatus::Assigned);

    // The on-assignment reminder (armed at 0 s for anna, due at 120 s) is re-armed for bob
    // when he is assigned at 100 s (same timer): nothing at 120 s, bob's is due at 220 s.
    h.advance_ms(40_000);
    h.ok(assign("w1", Some("bob"), None, true));
    h.advance_ms(20_000);
    h.fire_due();
    assert!(
        claim_reminder(&mut h).is_none(),
        "anna's stale reminder ran"
    );
    h.advance_ms(100_000);
    h.fire_due();
    let bobs = claim_reminder(&mut h).expect("bob's reminder at 220 s");
    assert_eq!(executed(&h).len(), 2);
    assert_ne!(bobs.task_run_id, task.task_run_id);

    h.ok(complete(
        "w1",
        "bob",
        vec![("approved", values::boolean(true))],
    ));
    assert_eq!(h.status("w1"), LhStatus::Completed);

    // A reminder queued but not yet handed out when the task is done is never handed out.
    h.run("s", "w2");
    h.advance_ms(60_000);
    h.fire_due();
    h.ok(complete(
        "w2",
        "anna",
        vec![("approved", values::boolean(true))],
    ));
    assert!(
        claim_reminder(&mut h).is_none(),
        "a reminder of finished work"
    );
}

fn search(h: &Harness, req: SearchUserTaskRunRequest) -> Result<Vec<String>, Rejection> {
    h.query(|t| query::search_user_task_runs(t, &req)).map(|l| {
        l.results
            .into_iter()
            .map(|id| id.wf_run_id.unwrap().id)
            .collect()
    })
}

fn rejected_kind(r: Rejection) -> &'static str {
    match r {
        Rejection::InvalidArgument(_) => "INVALID_ARGUMENT",
        Rejection::NotFound(_) => "NOT_FOUND",
        Rejection::AlreadyExists(_) => "ALREADY_EXISTS",
        Rejection::FailedPrecondition(_) => "FAILED_PRECONDITION",
        Rejection::ResourceExhausted(_) => "RESOURCE_EXHAUSTED",
    }
}

#[test]
fn user_task_defs_are_versioned_and_checked() {
    let mut h = Harness::new();
    let d0 = put_ut_def(&mut h, "approval", approval_fields());
    assert_eq!(d0.version, 0);
    // The same def again is the same version, created when it was.
    h.advance_ms(1_000);
    assert_eq!(put_ut_def(&mut h, "approval", approval_fields()), d0);
    let d1 = put_ut_def(
        &mut h,
        "approval",
        vec![field("approved", VariableType::Bool, true)],
    );
    assert_eq!(d1.version, 1);
    let latest = h.read(|t| {
        query::get_latest_user_task_def(
            t,
            &GetLatestUserTaskDefRequest {
                name: "approval".into(),
            },
        )
        .unwrap()
    });
    assert_eq!(latest, d1);
    let all = h.read(|t| {
        query::search_user_task_defs(
            t,
            &SearchUserTaskDefRequest {
                user_task_def_criteria: Some(
                    search_user_task_def_request::UserTaskDefCriteria::Name("approval".into()),
                ),
                ..Default::default()
            },
        )
        .unwrap()
        .results
    });
    assert_eq!(
        all.iter().map(|i| i.version).collect::<Vec<_>>(),
        vec![0, 1]
    );

    for (fields, what) in [
        (vec![field("a", VariableType::JsonObj, false)], "JSON field"),
        (
            vec![
                field("a", VariableType::Str, false),
                field("a", VariableType::Int, false),
            ],
            "duplicate field",
        ),
        (
            vec![field("", VariableType::Str, false)],
            "empty field name",
        ),
    ] {
        let r = h.rejected(Kind::PutUserTaskDef(PutUserTaskDefRequest {
            name: "bad".into(),
            fields,
            description: None,
        }));
        assert_eq!(rejected_kind(r), "INVALID_ARGUMENT", "{what}");
    }
    let delete = |version| {
        Kind::DeleteUserTaskDef(DeleteUserTaskDefRequest {
            id: Some(UserTaskDefId {
                name: "approval".into(),
                version,
            }),
        })
    };
    h.ok(delete(1));
    // Deleting again (a retry) is OK and changes nothing.
    let before = h.digest();
    h.ok(delete(1));
    assert_eq!(before, h.digest());
    assert_eq!(rejected_kind(h.rejected(delete(-1))), "INVALID_ARGUMENT");
    let latest = h.read(|t| {
        query::get_latest_user_task_def(
            t,
            &GetLatestUserTaskDefRequest {
                name: "approval".into(),
            },
        )
        .unwrap()
    });
    assert_eq!(latest.version, 0);
}

#[test]
fn put_wf_spec_refuses_bad_user_task_nodes_and_pins_the_def_version() {
    let mut h = Harness::new();
    let r = h.rejected(Kind::PutWfSpec(approval_spec(
        "s",
        Some(lit(values::str("anna"))),
        None,
        vec![],
    )));
    assert!(
        r.to_string().contains("No UserTaskDef named 'approval'"),
        "{r}"
    );
    put_ut_def(&mut h, "approval", approval_fields());
    let r = h.rejected(Kind::PutWfSpec(approval_spec("s", None, None, vec![])));
    assert!(r.to_string().contains("user_group or user_id"), "{r}");
    let task_trigger = trigger(
        ut_action_trigger::Action::Task(ut_action_trigger::UtaTask::default()),
        5,
        ut_action_trigger::UtHook::OnArrival,
    );
    let r = h.rejected(Kind::PutWfSpec(approval_spec(
        "s",
        Some(lit(values::str("anna"))),
        None,
        vec![task_trigger],
    )));
    assert!(r.to_string().contains("without a task"), "{r}");
    let r = h.rejected(Kind::PutWfSpec(approval_spec(
        "s",
        Some(lit(values::str("anna"))),
        None,
        vec![reminder(
            "nobody-home",
            5,
            ut_action_trigger::UtHook::OnArrival,
        )],
    )));
    assert!(r.to_string().contains("nonexistent TaskDef"), "{r}");

    let spec = h.put_spec(approval_spec(
        "s",
        Some(lit(values::str("anna"))),
        None,
        vec![],
    ));
    let pinned = |s: &WfSpec| match &s.thread_specs["entrypoint"].nodes["1-approve"].node {
        Some(node::Node::UserTask(u)) => u.user_task_def_version,
        other => panic!("{other:?}"),
    };
    assert_eq!(pinned(&spec), Some(0));
    // A new version of the def does not change what runs of the stored spec use.
    put_ut_def(
        &mut h,
        "approval",
        vec![field("approved", VariableType::Bool, true)],
    );
    h.run("s", "w1");
    assert_eq!(ut_run(&h, "w1").user_task_def_id.unwrap().version, 0);
    // Putting the same spec again pins the new latest version: a new revision.
    let again = h.put_spec(approval_spec(
        "s",
        Some(lit(values::str("anna"))),
        None,
        vec![],
    ));
    assert_eq!(pinned(&again), Some(1));
    assert_eq!(again.id.unwrap().revision, 1);
}

#[test]
fn a_user_task_is_assigned_then_completed_and_its_results_are_the_node_output() {
    let mut h = Harness::new();
    put_ut_def(&mut h, "approval", approval_fields());
    h.put_spec(approval_spec(
        "s",
        None,
        Some(lit(values::str("finance"))),
        vec![],
    ));
    h.run("s", "w1");
    let r = ut_run(&h, "w1");
    assert_eq!(r.status(), UserTaskRunStatus::Unassigned);
    assert_eq!(r.user_group.as_deref(), Some("finance"));
    assert_eq!(r.user_id, None);
    assert_eq!(r.notes.as_deref(), Some("please look at this"));
    assert_eq!(r.epoch, 1);
    assert_eq!(r.events.len(), 1);
    let nr = h.node_run("w1", 0, 1);
    assert_eq!(nr.status(), LhStatus::Running);
    assert_eq!(
        nr.node_type,
        Some(node_run::NodeType::UserTask(UserTaskNodeRun {
            user_task_run_id: Some(ut_id("w1"))
        }))
    );

    h.ok(assign("w1", Some("anna"), Some("finance"), false));
    let r = ut_run(&h, "w1");
    assert_eq!(r.status(), UserTaskRunStatus::Assigned);
    assert_eq!(r.user_id.as_deref(), Some("anna"));
    assert_eq!(r.epoch, 2);
    // Anna holds it: another claim needs override_claim.
    let rej = h.rejected(assign("w1", Some("bob"), None, false));
    assert_eq!(rejected_kind(rej), "FAILED_PRECONDITION");
    let rej = h.rejected(assign("w1", None, None, true));
    assert_eq!(rejected_kind(rej), "INVALID_ARGUMENT");

    // Bad results change nothing.
    let rej = h.rejected(complete("w1", "anna", vec![("comment", values::str("ok"))]));
    assert!(
        rej.to_string().contains("[approved] are mandatory fields"),
        "{rej}"
    );
    let rej = h.rejected(complete(
        "w1",
        "anna",
        vec![("approved", values::str("yes"))],
    ));
    assert_eq!(rejected_kind(rej), "INVALID_ARGUMENT");
    let rej = h.rejected(complete(
        "w1",
        "anna",
        vec![
            ("approved", values::boolean(true)),
            ("color", values::str("red")),
        ],
    ));
    assert_eq!(rejected_kind(rej), "INVALID_ARGUMENT");
    assert_eq!(h.status("w1"), LhStatus::Running);

    // Someone else completes it: recorded as an assignment to them, then DONE.
    h.ok(complete(
        "w1",
        "bob",
        vec![
            ("approved", values::boolean(true)),
            ("comment", values::str("fine")),
        ],
    ));
    let r = ut_run(&h, "w1");
    assert_eq!(r.status(), UserTaskRunStatus::Done);
    assert_eq!(r.user_id.as_deref(), Some("bob"));
    assert!(matches!(
        r.events.last().unwrap().event,
        Some(user_task_event::Event::Completed(_))
    ));
    assert_eq!(h.status("w1"), LhStatus::Completed);
    let answer: serde_json::Value = match h.variable("w1", "answer").value {
        Some(variable_value::Value::JsonObj(s)) => serde_json::from_str(&s).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        answer,
        serde_json::json!({"approved": true, "comment": "fine"})
    );
    // Completing again is a retry: OK, nothing changes. Cancelling a DONE task is refused.
    let before = h.digest();
    h.ok(complete(
        "w1",
        "bob",
        vec![("approved", values::boolean(false))],
    ));
    assert_eq!(before, h.digest());
    let rej = h.rejected(cancel("w1"));
    assert_eq!(rejected_kind(rej), "FAILED_PRECONDITION");
    let rej = h.rejected(assign("w1", Some("carl"), None, true));
    assert_eq!(rejected_kind(rej), "FAILED_PRECONDITION");
}

#[test]
fn cancelling_fails_the_node_with_user_task_cancelled_or_the_nodes_exception() {
    let mut h = Harness::new();
    put_ut_def(&mut h, "approval", approval_fields());
    h.put_spec(approval_spec(
        "s",
        Some(lit(values::str("anna"))),
        None,
        vec![],
    ));
    h.run("s", "w1");
    h.ok(cancel("w1"));
    assert_eq!(ut_run(&h, "w1").status(), UserTaskRunStatus::Cancelled);
    let nr = h.node_run("w1", 0, 1);
    assert_eq!(nr.status(), LhStatus::Error);
    assert_eq!(nr.failures[0].failure_name, "USER_TASK_CANCELLED");
    assert_eq!(h.status("w1"), LhStatus::Error);
    // A retried cancel is OK; completing a cancelled task is refused.
    let before = h.digest();
    h.ok(cancel("w1"));
    assert_eq!(before, h.digest());
    let rej = h.rejected(complete(
        "w1",
        "anna",
        vec![("approved", values::boolean(true))],
    ));
    assert_eq!(rejected_kind(rej), "FAILED_PRECONDITION");

    let mut s = approval_spec("t", Some(lit(values::str("anna"))), None, vec![]);
    if let Some(node::Node::UserTask(u)) = &mut s
        .thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .nodes
        .get_mut("1-approve")
        .unwrap()
        .node
    {
        u.on_cancellation_exception_name = Some(lit(values::str("not-approved")));
    }
    h.put_spec(s);
    h.run("t", "w2");
    h.ok(cancel("w2"));
    let nr = h.node_run("w2", 0, 1);
    assert_eq!(nr.status(), LhStatus::Exception);
    assert_eq!(nr.failures[0].failure_name, "not-approved");
    assert_eq!(h.status("w2"), LhStatus::Exception);
}

#[test]
fn triggers_cancel_on_arrival_and_reassign_only_an_untouched_assignment() {
    let mut h = Harness::new();
    put_ut_def(&mut h, "approval", approval_fields());
    let cancel_after = trigger(
        ut_action_trigger::Action::Cancel(Default::default()),
        3_600,
        ut_action_trigger::UtHook::OnArrival,
    );
    let release_after = trigger(
        ut_action_trigger::Action::Reassign(ut_action_trigger::UtaReassign {
            user_id: None,
            user_group: Some(lit(values::str("finance"))),
        }),
        60,
        ut_action_trigger::UtHook::OnTaskAssigned,
    );
    h.put_spec(approval_spec(
        "s",
        Some(lit(values::str("anna"))),
        None,
        vec![cancel_after, release_after],
    ));
    h.run("s", "w1");
    h.run("s", "w2");
    // w2's task is reassigned by hand before its trigger: the new assignment re-arms the same
    // trigger (same timer id) for bob's epoch, so anna's deadline no longer applies.
    h.advance_ms(30_000);
    h.ok(assign("w2", Some("bob"), None, true));
    h.advance_ms(30_000);
    h.fire_due();
    let r1 = ut_run(&h, "w1");
    assert_eq!(r1.status(), UserTaskRunStatus::Unassigned);
    assert_eq!(r1.user_id, None);
    assert_eq!(r1.user_group.as_deref(), Some("finance"));
    let r2 = ut_run(&h, "w2");
    assert_eq!(r2.user_id.as_deref(), Some("bob"));
    assert_eq!(r2.status(), UserTaskRunStatus::Assigned);
    h.advance_ms(30_000);
    h.fire_due();
    assert_eq!(ut_run(&h, "w2").user_group.as_deref(), Some("finance"));
    assert_eq!(ut_run(&h, "w2").user_id, None);

    // Completed w2 before the hour: its cancel trigger is gone with it.
    h.ok(complete(
        "w2",
        "carl",
        vec![("approved", values::boolean(false))],
    ));
    h.advance_ms(3_600_000);
    h.fire_due();
    assert_eq!(ut_run(&h, "w1").status(), UserTaskRunStatus::Cancelled);
    assert_eq!(h.status("w1"), LhStatus::Error);
    assert_eq!(ut_run(&h, "w2").status(), UserTaskRunStatus::Done);
    assert_eq!(h.status("w2"), LhStatus::Completed);
    assert_eq!(h.pending_timers(), 0);
}

#[test]
fn search_combines_filters_and_pages_oldest_first() {
    let mut h = Harness::new();
    put_ut_def(&mut h, "approval", approval_fields());
    h.put_spec(approval_spec(
        "s",
        None,
        Some(lit(values::str("finance"))),
        vec![],
    ));
    for i in 0..5 {
        h.run("s", &format!("w{i}"));
        h.advance_ms(10);
    }
    h.ok(assign("w1", Some("anna"), Some("finance"), false));
    h.ok(assign("w3", Some("anna"), None, false));
    h.ok(complete(
        "w4",
        "bob",
        vec![("approved", values::boolean(true))],
    ));

    let by = |user: Option<&str>, group: Option<&str>, st: Option<UserTaskRunStatus>| {
        SearchUserTaskRunRequest {
            user_id: user.map(Into::into),
            user_group: group.map(Into::into),
            status: st.map(|s| s as i32),
            ..Default::default()
        }
    };
    assert_eq!(
        search(&h, by(Some("anna"), None, None)).unwrap(),
        ["w1", "w3"]
    );
    assert_eq!(
        search(&h, by(Some("anna"), Some("finance"), None)).unwrap(),
        ["w1"]
    );
    assert_eq!(
        search(
            &h,
            by(None, Some("finance"), Some(UserTaskRunStatus::Unassigned))
        )
        .unwrap(),
        ["w0", "w2"]
    );
    assert_eq!(
        search(&h, by(None, None, Some(UserTaskRunStatus::Done))).unwrap(),
        ["w4"]
    );
    let all = SearchUserTaskRunRequest {
        user_task_def_name: Some("approval".into()),
        ..Default::default()
    };
    assert_eq!(search(&h, all.clone()).unwrap().len(), 5);
    // Pages of two, in creation order, with nothing lost or repeated.
    let mut seen = Vec::new();
    let mut req = SearchUserTaskRunRequest {
        limit: Some(2),
        ..all
    };
    loop {
        let page = h.read(|t| query::search_user_task_runs(t, &req).unwrap());
        seen.extend(page.results.into_iter().map(|i| i.wf_run_id.unwrap().id));
        match page.bookmark {
            Some(b) => req.bookmark = Some(b),
            None => break,
        }
    }
    assert_eq!(seen, ["w0", "w1", "w2", "w3", "w4"]);
    assert_eq!(
        rejected_kind(search(&h, SearchUserTaskRunRequest::default()).unwrap_err()),
        "INVALID_ARGUMENT"
    );

    // Deleting a WfRun takes its UserTaskRun and index rows with it.
    h.ok(Kind::DeleteWfRun(DeleteWfRunRequest {
        id: Some(wf_id("w1")),
    }));
    assert_eq!(search(&h, by(Some("anna"), None, None)).unwrap(), ["w3"]);
    let missing = h.read(|t| query::get_user_task_run(t, &ut_id("w1")).is_err());
    assert!(missing);
}

#[test]
fn saving_progress_respects_the_claim_and_comments_are_numbered_from_one() {
    let mut h = Harness::new();
    put_ut_def(&mut h, "approval", approval_fields());
    h.put_spec(approval_spec(
        "s",
        Some(lit(values::str("anna"))),
        None,
        vec![],
    ));
    h.run("s", "w1");
    let save = |user: &str, policy| {
        Kind::SaveUserTaskRunProgress(SaveUserTaskRunProgressRequest {
            user_task_run_id: Some(ut_id("w1")),
            results: BTreeMap::from([("comment".to_string(), values::str("draft"))]),
            user_id: user.into(),
            policy: policy as i32,
        })
    };
    use save_user_task_run_progress_request::SaveUserTaskRunAssignmentPolicy as Policy;
    let rej = h.rejected(save("bob", Policy::FailIfClaimedByOther));
    assert_eq!(rejected_kind(rej), "FAILED_PRECONDITION");
    let saved = match h.ok(save("bob", Policy::IgnoreClaim)) {
        Response::UserTaskRun(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(saved.user_id.as_deref(), Some("anna"));
    assert_eq!(saved.results["comment"], values::str("draft"));
    assert_eq!(saved.status(), UserTaskRunStatus::Assigned);

    let put = |c: &str| {
        Kind::PutUserTaskRunComment(PutUserTaskRunCommentRequest {
            user_task_run_id: Some(ut_id("w1")),
            user_id: "anna".into(),
            comment: c.into(),
        })
    };
    let ids = |r: Response| match r {
        Response::UserTaskRun(r) => r
            .events
            .iter()
            .filter_map(|e| match &e.event {
                Some(user_task_event::Event::CommentAdded(c)) => Some(c.user_comment_id),
                _ => None,
            })
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    h.ok(put("first"));
    assert_eq!(ids(h.ok(put("second"))), vec![1, 2]);
    let edit = |id: i32| {
        Kind::EditUserTaskRunComment(EditUserTaskRunCommentRequest {
            user_comment_id: id,
            user_task_run_id: Some(ut_id("w1")),
            user_id: "anna".into(),
            comment: "edited".into(),
        })
    };
    let delete = |id: i32| {
        Kind::DeleteUserTaskRunComment(DeleteUserTaskRunCommentRequest {
            user_task_run_id: Some(ut_id("w1")),
            user_comment_id: id,
            user_id: "anna".into(),
        })
    };
    h.ok(edit(1));
    h.ok(delete(1));
    assert_eq!(rejected_kind(h.rejected(edit(1))), "FAILED_PRECONDITION");
    assert_eq!(rejected_kind(h.rejected(delete(1))), "FAILED_PRECONDITION");
    assert_eq!(rejected_kind(h.rejected(edit(9))), "NOT_FOUND");
    assert_eq!(rejected_kind(h.rejected(edit(0))), "FAILED_PRECONDITION");
    assert_eq!(rejected_kind(h.rejected(put(" "))), "INVALID_ARGUMENT");
    let rej = h.rejected(Kind::CancelUserTaskRun(CancelUserTaskRunRequest {
        user_task_run_id: Some(UserTaskRunId {
            wf_run_id: Some(wf_id("nope")),
            user_task_guid: "0-1".into(),
        }),
    }));
    assert_eq!(rejected_kind(rej), "NOT_FOUND");
}

#[test]
fn an_assignment_that_is_not_a_string_is_rendered_and_a_null_one_fails_the_node() {
    let mut h = Harness::new();
    put_ut_def(&mut h, "approval", approval_fields());
    let mut s = approval_spec("s", Some(var("who")), None, vec![]);
    s.thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .variable_defs
        .push(var_def("who", VariableType::Int, false));
    h.put_spec(s);
    h.run_with(
        "s",
        "w1",
        BTreeMap::from([("who".to_string(), values::int(42))]),
    );
    assert_eq!(ut_run(&h, "w1").user_id.as_deref(), Some("42"));
    h.run("s", "w2");
    let nr = h.node_run("w2", 0, 1);
    assert_eq!(nr.status(), LhStatus::Error);
    assert_eq!(nr.failures[0].failure_name, "VAR_ERROR");
    assert_eq!(h.status("w2"), LhStatus::Error);
}

/// A trigger is the task's deadline, not the thread's: it acts while the WfRun is stopped, and
/// the thread meets the cancelled node when it resumes (a skipped trigger would leave the task
/// open for ever; the simulation's liveness check found that with an interrupt).
#[test]
fn a_trigger_due_while_the_thread_is_halted_still_cancels() {
    let mut h = Harness::new();
    put_ut_def(&mut h, "approval", approval_fields());
    let cancel_after = trigger(
        ut_action_trigger::Action::Cancel(Default::default()),
        60,
        ut_action_trigger::UtHook::OnArrival,
    );
    h.put_spec(approval_spec(
        "s",
        Some(lit(values::str("anna"))),
        None,
        vec![cancel_after],
    ));
    h.run("s", "w1");
    h.ok(Kind::StopWfRun(StopWfRunRequest {
        wf_run_id: Some(wf_id("w1")),
        thread_run_number: 0,
    }));
    assert_eq!(h.status("w1"), LhStatus::Halted);
    h.advance_ms(60_000);
    assert_eq!(h.fire_due(), 1);
    assert_eq!(ut_run(&h, "w1").status(), UserTaskRunStatus::Cancelled);
    assert_eq!(h.status("w1"), LhStatus::Halted);
    h.ok(Kind::ResumeWfRun(ResumeWfRunRequest {
        wf_run_id: Some(wf_id("w1")),
        thread_run_number: 0,
    }));
    assert_eq!(h.status("w1"), LhStatus::Error);
}

#[test]
fn a_rescued_wf_run_gets_back_the_trigger_its_end_made_it_miss() {
    // The entrypoint starts a reviewer (a group task cancelled after 10 s), then times out
    // waiting 5 s for "a": the WfRun fails at 5 s and the reviewer halts under it.
    let mut h = Harness::new();
    put_ut_def(&mut h, "approval", approval_fields());
    h.put_def("a");
    let cancel_after = trigger(
        ut_action_trigger::Action::Cancel(Default::default()),
        10,
        ut_action_trigger::UtHook::OnArrival,
    );
    let mut req = spec(
        "s",
        vec![
            ("0-entry", entry("1-reviewer")),
            ("1-reviewer", start_thread("reviewer", "2-wait", "n")),
            ("2-wait", wait("a", Some(5), vec![edge("3-exit")])),
            ("3-exit", exit()),
        ],
        vec![var_def("n", VariableType::Int, false)],
    );
    req.thread_specs.insert(
        "reviewer".into(),
        thread(
            vec![
                ("0-entry", entry("1-approve")),
                (
                    "1-approve",
                    user_task(
                        "approval",
                        None,
                        Some(lit(values::str("ops"))),
                        vec![cancel_after],
                        vec![edge("2-exit")],
                    ),
                ),
                ("2-exit", exit()),
            ],
            vec![],
        ),
    );
    h.put_spec(req);
    h.run("s", "w1");
    h.advance_ms(5_000);
    h.fire_due();
    assert_eq!(h.status("w1"), LhStatus::Error);
    let review = UserTaskRunId {
        wf_run_id: Some(wf_id("w1")),
        user_task_guid: "1-1".into(),
    };
    let review_status =
        |h: &Harness| h.read(|t| query::get_user_task_run(t, &review).unwrap().status());
    // At 10 s the trigger falls due while the WfRun has ended: ignored, and its timer gone.
    h.advance_ms(7_000);
    h.fire_due();
    assert_eq!(review_status(&h), UserTaskRunStatus::Unassigned);
    assert_eq!(h.pending_timers(), 0);

    // Rescued at 12 s past the timed-out wait: the EXIT waits for the reviewer, whose cancel
    // is due again at once, and the run ends instead of waiting for a person for ever.
    h.ok(Kind::RescueThreadRun(RescueThreadRunRequest {
        wf_run_id: Some(wf_id("w1")),
        thread_run_number: 0,
        skip_current_node: true,
    }));
    assert_eq!(h.status("w1"), LhStatus::Running);
    assert_eq!(h.thread_run("w1", 1).status(), LhStatus::Running);
    assert_eq!(h.fire_due(), 1);
    assert_eq!(review_status(&h), UserTaskRunStatus::Cancelled);
    assert_eq!(
        h.status("w1"),
        LhStatus::Error,
        "the cancelled review fails the child"
    );
    assert_eq!(
        h.node_run("w1", 0, 3).failures[0].failure_name,
        "CHILD_FAILURE"
    );
}
