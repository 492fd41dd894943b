#![allow(clippy::unwrap_used)]
//! One scenario per rule of docs/semantics (shared/reference/semantics.md §§1-4, 8-10), named
//! after the rule. Every rejection is also checked to change nothing (see `Harness::rejected`).

mod support;

use std::collections::BTreeMap;

use halter_api::halter::command::Kind;
use halter_api::littlehorse::*;
use halter_api::values;
use halter_state_machine::{query, Rejection, Response};
use support::*;

fn invalid_containing(r: Rejection, needle: &str) {
    match r {
        Rejection::InvalidArgument(m) => {
            assert!(m.contains(needle), "message '{m}' lacks '{needle}'")
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

// §1 Objects and ids

#[test]
fn s1_names_outside_the_pattern_are_invalid_argument_naming_the_value() {
    let mut h = Harness::new();
    let r = h.rejected(Kind::PutExternalEventDef(PutExternalEventDefRequest {
        name: "bad name!".into(),
        ..Default::default()
    }));
    invalid_containing(r, "'bad name!'");
    let r = h.rejected(Kind::PutExternalEventDef(PutExternalEventDefRequest {
        name: "x".repeat(200),
        ..Default::default()
    }));
    invalid_containing(r, "longer than");
}

#[test]
fn s1_commands_without_generated_ids_are_refused() {
    let mut h = Harness::new();
    h.put_def("paid");
    h.put_spec(wait_spec("pay", "paid", None));
    let mut req = h.event_req("wf1", "paid", values::int(1));
    req.guid = None;
    invalid_containing(h.rejected(Kind::PutExternalEvent(req)), "guid");
    let r = h.rejected(Kind::RunWf(RunWfRequest {
        wf_spec_name: "pay".into(),
        ..Default::default()
    }));
    invalid_containing(r, "id");
}

// §2 ExternalEventDef

#[test]
fn s2_put_external_event_def_is_an_upsert_returning_the_stored_def() {
    let mut h = Harness::new();
    let first = h.put_def("signed");
    h.advance_ms(5_000);
    let typed = PutExternalEventDefRequest {
        name: "signed".into(),
        content_type: Some(ReturnType {
            return_type: Some(TypeDefinition {
                defined_type: Some(type_definition::DefinedType::PrimitiveType(
                    VariableType::Str as i32,
                )),
                masked: false,
            }),
        }),
        ..Default::default()
    };
    let second = match h.ok(Kind::PutExternalEventDef(typed.clone())) {
        Response::ExternalEventDef(d) => d,
        o => panic!("{o:?}"),
    };
    assert_eq!(
        second.created_at, first.created_at,
        "upsert keeps creation time"
    );
    assert_eq!(second.type_information, typed.content_type);
    let stored = h.read(|t| {
        query::get_external_event_def(
            t,
            &ExternalEventDefId {
                name: "signed".into(),
            },
        )
        .unwrap()
    });
    assert_eq!(stored, second);
}

#[test]
fn s2_get_and_delete_external_event_def() {
    let mut h = Harness::new();
    h.put_def("gone");
    h.ok(Kind::DeleteExternalEventDef(
        DeleteExternalEventDefRequest {
            id: Some(ExternalEventDefId {
                name: "gone".into(),
            }),
        },
    ));
    let r = h.read(|t| {
        query::get_external_event_def(
            t,
            &ExternalEventDefId {
                name: "gone".into(),
            },
        )
    });
    assert!(matches!(
        r,
        Err(halter_state_machine::error::Outcome::Rejected(
            Rejection::NotFound(_)
        ))
    ));
    // Deleting again is idempotent.
    h.ok(Kind::DeleteExternalEventDef(
        DeleteExternalEventDefRequest {
            id: Some(ExternalEventDefId {
                name: "gone".into(),
            }),
        },
    ));
}

#[test]
fn s2_search_external_event_defs_pages_by_prefix_with_bookmarks() {
    let mut h = Harness::new();
    for n in ["doc-a", "doc-b", "doc-c", "pay-a"] {
        h.put_def(n);
    }
    let mut seen = Vec::new();
    let mut bookmark = None;
    loop {
        let page = h.read(|t| {
            query::search_external_event_defs(
                t,
                &SearchExternalEventDefRequest {
                    bookmark: bookmark.clone(),
                    limit: Some(2),
                    prefix: Some("doc".into()),
                },
            )
            .unwrap()
        });
        seen.extend(page.results.into_iter().map(|i| i.name));
        bookmark = page.bookmark;
        if bookmark.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["doc-a", "doc-b", "doc-c"]);
    let bad = h.read(|t| {
        query::search_external_event_defs(
            t,
            &SearchExternalEventDefRequest {
                bookmark: Some(vec![0xff, 0x01]),
                limit: None,
                prefix: None,
            },
        )
    });
    assert!(matches!(
        bad,
        Err(halter_state_machine::error::Outcome::Rejected(
            Rejection::InvalidArgument(_)
        ))
    ));
}

#[test]
fn s2_retention_deletes_events_still_unclaimed_and_keeps_claimed_ones() {
    let mut h = Harness::new();
    h.ok(Kind::PutExternalEventDef(PutExternalEventDefRequest {
        name: "ping".into(),
        retention_policy: Some(ExternalEventRetentionPolicy {
            ext_evt_gc_policy: Some(
                external_event_retention_policy::ExtEvtGcPolicy::SecondsAfterPut(10),
            ),
        }),
        ..Default::default()
    }));
    h.put_spec(wait_spec("once", "ping", None));
    h.run("once", "wf1");
    let claimed = h.post("wf1", "ping", values::int(1));
    let orphan = h.post("nobody", "ping", values::int(2));
    assert!(claimed.claimed && !orphan.claimed);
    h.advance_ms(9_999);
    assert_eq!(h.fire_due(), 0);
    h.advance_ms(1);
    assert_eq!(
        h.fire_due(),
        1,
        "only the unclaimed event's retention is still armed"
    );
    assert_eq!(h.events_of("nobody").len(), 0);
    assert_eq!(h.events_of("wf1").len(), 1);
}

// §3 PutExternalEvent

#[test]
fn s3_1_unknown_def_is_invalid_argument() {
    let mut h = Harness::new();
    let req = h.event_req("wf1", "nope", values::int(1));
    invalid_containing(
        h.rejected(Kind::PutExternalEvent(req)),
        "No ExternalEventDef named 'nope'",
    );
}

#[test]
fn s3_3_an_identical_retry_returns_the_stored_event() {
    let mut h = Harness::new();
    h.put_def("paid");
    h.put_spec(wait_spec("pay", "paid", None));
    h.run("pay", "wf1");
    let req = h.event_req("wf1", "paid", values::str("ok"));
    let first = h.put_event(req.clone());
    assert!(first.claimed);
    h.advance_ms(1000);
    let retry = h.put_event(req.clone());
    assert_eq!(retry, first, "the retry answers with the stored event");
    assert_eq!(h.events_of("wf1").len(), 1, "no duplicate");
    // The run is unaffected by the retry.
    assert_eq!(h.status("wf1"), LhStatus::Completed);
}

#[test]
fn s3_3_same_guid_with_different_content_is_already_exists() {
    let mut h = Harness::new();
    h.put_def("paid");
    let req = h.event_req("wf1", "paid", values::str("ok"));
    h.put_event(req.clone());
    let mut other = req.clone();
    other.content = Some(values::str("different"));
    assert!(matches!(
        h.rejected(Kind::PutExternalEvent(other)),
        Rejection::AlreadyExists(_)
    ));
    let mut targeted = req;
    targeted.thread_run_number = Some(0);
    assert!(matches!(
        h.rejected(Kind::PutExternalEvent(targeted)),
        Rejection::AlreadyExists(_)
    ));
}

#[test]
fn s3_4_content_must_match_the_defs_type_and_null_always_passes() {
    let mut h = Harness::new();
    h.ok(Kind::PutExternalEventDef(PutExternalEventDefRequest {
        name: "amount".into(),
        content_type: Some(ReturnType {
            return_type: Some(TypeDefinition {
                defined_type: Some(type_definition::DefinedType::PrimitiveType(
                    VariableType::Int as i32,
                )),
                masked: false,
            }),
        }),
        ..Default::default()
    }));
    let bad = h.event_req("wf1", "amount", values::str("ten"));
    invalid_containing(h.rejected(Kind::PutExternalEvent(bad)), "INT");
    h.post("wf1", "amount", values::int(10));
    h.post("wf1", "amount", values::null());
}

#[test]
fn s3_oversized_content_is_resource_exhausted() {
    let mut h = Harness::new();
    h.put_def("big");
    let req = h.event_req(
        "wf1",
        "big",
        values::str("x".repeat(halter_api::limits::MAX_VALUE_BYTES + 1)),
    );
    assert!(matches!(
        h.rejected(Kind::PutExternalEvent(req)),
        Rejection::ResourceExhausted(_)
    ));
}

#[test]
fn s3_7_an_event_before_its_wf_run_is_kept_and_claimed_on_arrival() {
    let mut h = Harness::new();
    h.put_def("early");
    h.put_spec(wait_spec("w", "early", Some(60)));
    let ev = h.post("later", "early", values::str("hi"));
    assert!(!ev.claimed, "nobody waits yet");
    let run = h.run("w", "later");
    assert_eq!(
        run.status(),
        LhStatus::Completed,
        "the entrypoint thread claimed it on arrival"
    );
    let ev = h.event("later", "early", &ev.id.unwrap().guid);
    assert!(ev.claimed);
    assert_eq!(
        (ev.thread_run_number, ev.node_run_position),
        (Some(0), Some(1))
    );
    assert_eq!(
        h.pending_timers(),
        0,
        "no timeout armed for a node that never waited"
    );
}

#[test]
fn s3_8_the_response_shows_whether_the_event_was_consumed() {
    let mut h = Harness::new();
    h.put_def("paid");
    h.put_spec(wait_spec("pay", "paid", None));
    h.run("pay", "wf1");
    let ev = h.post("wf1", "paid", values::int(5));
    assert!(ev.claimed);
    assert_eq!(ev.thread_run_number, Some(0));
    assert_eq!(ev.node_run_position, Some(1));
    let nr = h.node_run("wf1", 0, 1);
    let Some(node_run::NodeType::ExternalEvent(ee)) = &nr.node_type else {
        panic!()
    };
    assert_eq!(ee.external_event_id, ev.id.clone());
    assert_eq!(ee.event_time, ev.created_at);
    assert_eq!(nr.status(), LhStatus::Completed);
}

// §4 EXTERNAL_EVENT nodes and claiming

#[test]
fn s4_put_wf_spec_rejects_a_node_whose_def_does_not_exist() {
    let mut h = Harness::new();
    invalid_containing(
        h.rejected(Kind::PutWfSpec(wait_spec("w", "missing", None))),
        "No ExternalEventDef named 'missing'",
    );
}

#[test]
fn s4_the_oldest_unclaimed_event_is_claimed_first() {
    let mut h = Harness::new();
    h.put_def("e");
    let twice = spec(
        "twice",
        vec![
            ("0-entry", entry("1-a")),
            ("1-a", wait("e", None, vec![edge("2-b")])),
            ("2-b", wait("e", None, vec![edge("3-exit")])),
            ("3-exit", exit()),
        ],
        vec![],
    );
    h.put_spec(twice);
    let e1 = h.post("wf1", "e", values::int(1));
    let e2 = h.post("wf1", "e", values::int(2)); // same millisecond: commit order decides
    h.advance_ms(1);
    let e3 = h.post("wf1", "e", values::int(3));
    h.run("twice", "wf1");
    assert_eq!(h.status("wf1"), LhStatus::Completed);
    let claimed: Vec<bool> = [&e1, &e2, &e3]
        .iter()
        .map(|e| h.event("wf1", "e", &e.id.as_ref().unwrap().guid).claimed)
        .collect();
    assert_eq!(claimed, [true, true, false]);
    assert_eq!(
        h.event("wf1", "e", &e1.id.unwrap().guid).node_run_position,
        Some(1)
    );
    assert_eq!(
        h.event("wf1", "e", &e2.id.unwrap().guid).node_run_position,
        Some(2)
    );
}

#[test]
fn s4_targeting_restricts_which_node_run_may_claim() {
    let mut h = Harness::new();
    h.put_def("e");
    h.put_spec(wait_spec("w", "e", None));
    h.run("w", "wf1");
    let mut wrong_thread = h.event_req("wf1", "e", values::int(1));
    wrong_thread.thread_run_number = Some(3);
    assert!(!h.put_event(wrong_thread).claimed);
    let mut wrong_pos = h.event_req("wf1", "e", values::int(2));
    wrong_pos.node_run_position = Some(7);
    assert!(!h.put_event(wrong_pos).claimed);
    assert_eq!(h.status("wf1"), LhStatus::Running);
    let mut right = h.event_req("wf1", "e", values::int(3));
    right.thread_run_number = Some(0);
    right.node_run_position = Some(1);
    assert!(h.put_event(right).claimed);
    assert_eq!(h.status("wf1"), LhStatus::Completed);
}

#[test]
fn s4_a_timeout_fails_the_node_with_timeout_and_a_late_event_stays_unclaimed() {
    let mut h = Harness::new();
    h.put_def("e");
    h.put_spec(wait_spec("w", "e", Some(30)));
    h.run("w", "wf1");
    h.advance_ms(29_999);
    assert_eq!(h.fire_due(), 0);
    h.advance_ms(1);
    assert_eq!(h.fire_due(), 1);
    let nr = h.node_run("wf1", 0, 1);
    assert_eq!(nr.status(), LhStatus::Error);
    assert_eq!(nr.failures[0].failure_name, "TIMEOUT");
    assert_eq!(
        nr.failures[0].message,
        "ExternalEvent did not arrive in time"
    );
    let Some(node_run::NodeType::ExternalEvent(ee)) = &nr.node_type else {
        panic!()
    };
    assert!(ee.timed_out && ee.external_event_id.is_none());
    assert_eq!(h.status("wf1"), LhStatus::Error);
    let late = h.post("wf1", "e", values::int(1));
    assert!(!late.claimed, "a timed-out NodeRun never completes");
}

#[test]
fn s4_a_timer_that_fires_after_the_node_completed_is_ignored() {
    let mut h = Harness::new();
    h.put_def("e");
    h.put_spec(wait_spec("w", "e", Some(30)));
    h.run("w", "wf1");
    h.post("wf1", "e", values::int(1));
    assert_eq!(
        h.pending_timers(),
        0,
        "completing the node cancels its timer"
    );
    // A stale proposal for the old timer is harmless.
    let id = halter_state_machine::timers::node_run_timer_id("wf1", 0, 1);
    h.advance_ms(60_000);
    let r = h.ok(Kind::FireTimers(halter_api::halter::FireTimers {
        timers: vec![halter_api::halter::TimerKey {
            due_ms: h.now - 30_000,
            id,
        }],
    }));
    assert_eq!(r, Response::TimersFired(0));
    assert_eq!(h.status("wf1"), LhStatus::Completed);
    assert_eq!(h.node_run("wf1", 0, 1).status(), LhStatus::Completed);
}

#[test]
fn s4_a_timeout_that_is_not_an_int_fails_with_var_error() {
    let mut h = Harness::new();
    h.put_def("e");
    let mut s = wait_spec("w", "e", None);
    if let Some(node::Node::ExternalEvent(ee)) = &mut s
        .thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .nodes
        .get_mut("1-wait-EXTERNAL_EVENT")
        .unwrap()
        .node
    {
        ee.timeout_seconds = Some(lit(values::str("soon")));
    }
    h.put_spec(s);
    h.run("w", "wf1");
    assert_eq!(
        h.node_run("wf1", 0, 1).failures[0].failure_name,
        "VAR_ERROR"
    );
    assert_eq!(h.status("wf1"), LhStatus::Error);
}

#[test]
fn s4_the_event_content_is_the_node_output_for_mutations_with_json_path() {
    let mut h = Harness::new();
    h.put_def("order");
    let mut to_exit = edge("2-exit");
    to_exit.variable_mutations = vec![VariableMutation {
        lhs_name: "total".into(),
        operation: VariableMutationType::Assign as i32,
        rhs_value: Some(variable_mutation::RhsValue::NodeOutput(
            variable_mutation::NodeOutputSource {
                path: Some(variable_mutation::node_output_source::Path::Jsonpath(
                    "$.total".into(),
                )),
            },
        )),
        ..Default::default()
    }];
    let s = spec(
        "orders",
        vec![
            ("0-entry", entry("1-wait")),
            ("1-wait", wait("order", None, vec![to_exit])),
            ("2-exit", exit()),
        ],
        vec![var_def("total", VariableType::Int, false)],
    );
    h.put_spec(s);
    h.run("orders", "wf1");
    h.post("wf1", "order", values::json_obj(r#"{"total": 42}"#));
    assert_eq!(h.variable("wf1", "total"), values::int(42));
    assert_eq!(h.status("wf1"), LhStatus::Completed);
}

// §8 Workflows

#[test]
fn s8_unsupported_features_are_refused_by_name() {
    let mut h = Harness::new();
    h.put_def("e");
    let mut with_many = wait_spec("t", "e", None);
    with_many
        .thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .nodes
        .insert(
            "9-sleep".into(),
            node(
                node::Node::Sleep(SleepNode {
                    sleep_length: Some(sleep_node::SleepLength::RawSeconds(VariableAssignment {
                        source: Some(variable_assignment::Source::SizeOf(Box::new(
                            variable_assignment::SizeOf {
                                operand: Some(Box::new(lit(values::str("abc")))),
                            },
                        ))),
                        ..Default::default()
                    })),
                }),
                vec![],
            ),
        );
    invalid_containing(
        h.rejected(Kind::PutWfSpec(with_many)),
        "size_of is not supported yet",
    );
    let mut with_task = wait_spec("t", "e", None);
    with_task
        .thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .nodes
        .insert(
            "9-task".into(),
            node(node::Node::Task(TaskNode::default()), vec![]),
        );
    invalid_containing(
        h.rejected(Kind::PutWfSpec(with_task)),
        "a TASK node without a task",
    );
}

#[test]
fn s8_put_wf_spec_validates_structure() {
    let mut h = Harness::new();
    h.put_def("e");
    let mut no_entry = wait_spec("a", "e", None);
    no_entry.entrypoint_thread_name = "main".into();
    invalid_containing(
        h.rejected(Kind::PutWfSpec(no_entry)),
        "entrypoint_thread_name",
    );
    let dangling = spec("b", vec![("0-entry", entry("nowhere"))], vec![]);
    invalid_containing(
        h.rejected(Kind::PutWfSpec(dangling)),
        "unknown node 'nowhere'",
    );
    let mut bad_var = wait_spec("c", "e", None);
    bad_var
        .thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .nodes
        .get_mut("0-entrypoint-ENTRYPOINT")
        .unwrap()
        .outgoing_edges[0]
        .variable_mutations = vec![VariableMutation {
        lhs_name: "ghost".into(),
        rhs_value: Some(variable_mutation::RhsValue::LiteralValue(values::int(1))),
        ..Default::default()
    }];
    invalid_containing(
        h.rejected(Kind::PutWfSpec(bad_var)),
        "undeclared variable 'ghost'",
    );
}

#[test]
fn s8_put_wf_spec_versions_identical_compatible_and_breaking_changes() {
    let mut h = Harness::new();
    h.put_def("e");
    let v1 = h.put_spec(wait_spec("w", "e", Some(10)));
    let again = h.put_spec(wait_spec("w", "e", Some(10)));
    assert_eq!(again.id, v1.id, "identical spec: same version");
    let rev = h.put_spec(wait_spec("w", "e", Some(20)));
    assert_eq!(
        rev.id.as_ref().map(|i| (i.major_version, i.revision)),
        Some((0, 1))
    );
    let mut breaking = wait_spec("w", "e", Some(20));
    breaking
        .thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .variable_defs = vec![var_def("x", VariableType::Int, true)];
    let mut refused = breaking.clone();
    refused.allowed_updates = AllowedUpdateType::MinorRevisionUpdates as i32;
    assert!(matches!(
        h.rejected(Kind::PutWfSpec(refused)),
        Rejection::FailedPrecondition(_)
    ));
    let major = h.put_spec(breaking);
    assert_eq!(
        major.id.as_ref().map(|i| (i.major_version, i.revision)),
        Some((1, 0))
    );
    let latest = h.read(|t| {
        query::get_latest_wf_spec(
            t,
            &GetLatestWfSpecRequest {
                name: "w".into(),
                major_version: Some(0),
            },
        )
        .unwrap()
    });
    assert_eq!(latest.id, rev.id);
}

#[test]
fn s8_run_wf_checks_spec_id_and_variables() {
    let mut h = Harness::new();
    h.put_def("e");
    let mut s = wait_spec("w", "e", None);
    s.thread_specs.get_mut("entrypoint").unwrap().variable_defs = vec![
        var_def("amount", VariableType::Int, true),
        var_def("note", VariableType::Str, false),
    ];
    h.put_spec(s);
    let r = h.rejected(Kind::RunWf(RunWfRequest {
        wf_spec_name: "nope".into(),
        id: Some("a".into()),
        ..Default::default()
    }));
    assert!(matches!(r, Rejection::NotFound(_)));
    let missing = RunWfRequest {
        wf_spec_name: "w".into(),
        id: Some("a".into()),
        ..Default::default()
    };
    invalid_containing(
        h.rejected(Kind::RunWf(missing)),
        "required variable 'amount'",
    );
    let wrong = RunWfRequest {
        wf_spec_name: "w".into(),
        id: Some("a".into()),
        variables: BTreeMap::from([("amount".into(), values::str("1"))]),
        ..Default::default()
    };
    invalid_containing(h.rejected(Kind::RunWf(wrong)), "must be INT");
    let unknown = RunWfRequest {
        wf_spec_name: "w".into(),
        id: Some("a".into()),
        variables: BTreeMap::from([
            ("amount".into(), values::int(1)),
            ("zzz".into(), values::int(1)),
        ]),
        ..Default::default()
    };
    invalid_containing(h.rejected(Kind::RunWf(unknown)), "'zzz'");
    let run = h.run_with(
        "w",
        "a",
        BTreeMap::from([("amount".into(), values::int(1))]),
    );
    assert_eq!(run.status(), LhStatus::Running);
    assert_eq!(h.variable("a", "note"), values::null());
    let dup = RunWfRequest {
        wf_spec_name: "w".into(),
        id: Some("a".into()),
        variables: BTreeMap::from([("amount".into(), values::int(1))]),
        ..Default::default()
    };
    assert!(matches!(
        h.rejected(Kind::RunWf(dup)),
        Rejection::AlreadyExists(_)
    ));
}

/// `NodeOutput` of a node name is the output of its latest NodeRun, whether that NodeRun was
/// stored by an earlier command or written by this one: the command's NodeRuns reach the table
/// only when it succeeds (`Ctx::flush_nodes`), so both places must be read, and at the same
/// position the one this command wrote wins.
#[test]
fn s8_node_output_is_the_latest_run_of_the_node_in_this_command_or_before() {
    fn output_of(node: &str) -> VariableAssignment {
        VariableAssignment {
            source: Some(variable_assignment::Source::NodeOutput(
                variable_assignment::NodeOutputReference {
                    node_name: node.into(),
                },
            )),
            ..Default::default()
        }
    }
    fn assign(var: &str, node: &str) -> VariableMutation {
        VariableMutation {
            lhs_name: var.into(),
            operation: VariableMutationType::Assign as i32,
            rhs_value: Some(variable_mutation::RhsValue::RhsAssignment(output_of(node))),
            ..Default::default()
        }
    }
    let mut h = Harness::new();
    h.put_def("step");
    h.put_def("fin");
    // 1-wait loops back to itself while its event says "again".
    let mut again = edge("1-wait");
    again.edge_condition = Some(edge::EdgeCondition::LegacyCondition(LegacyEdgeCondition {
        comparator: Comparator::Equals as i32,
        left: Some(output_of("1-wait")),
        right: Some(lit(values::str("again"))),
    }));
    again.variable_mutations = vec![assign("last", "1-wait")];
    let mut on = edge("2-fin");
    on.variable_mutations = vec![assign("last", "1-wait")];
    let mut out = edge("3-exit");
    out.variable_mutations = vec![assign("seen", "1-wait"), assign("fin", "2-fin")];
    let s = spec(
        "loop",
        vec![
            ("0-entry", entry("1-wait")),
            ("1-wait", wait("step", None, vec![again, on])),
            ("2-fin", wait("fin", None, vec![out])),
            ("3-exit", exit()),
        ],
        vec![
            var_def("last", VariableType::Str, false),
            var_def("seen", VariableType::Str, false),
            var_def("fin", VariableType::Str, false),
        ],
    );
    h.put_spec(s);
    h.run("loop", "wf1");
    // The NodeRun at position 1 is stored waiting and completed by this command.
    h.post("wf1", "step", values::str("again"));
    assert_eq!(h.variable("wf1", "last"), values::str("again"));
    assert_eq!(h.node_run("wf1", 0, 2).node_name, "1-wait");
    // Position 2 is stored waiting; this command completes it, and it is newer than position 1.
    h.post("wf1", "step", values::str("done"));
    assert_eq!(h.variable("wf1", "last"), values::str("done"));
    // Now both runs of 1-wait are stored, and only 2-fin was written by this command.
    h.post("wf1", "fin", values::str("end"));
    assert_eq!(h.variable("wf1", "seen"), values::str("done"));
    assert_eq!(h.variable("wf1", "fin"), values::str("end"));
    assert_eq!(h.status("wf1"), LhStatus::Completed);
}

#[test]
fn s8_edges_with_conditions_choose_the_first_matching_branch() {
    let mut h = Harness::new();
    h.put_def("score");
    let mut high = edge("3-high");
    high.edge_condition = Some(edge::EdgeCondition::LegacyCondition(LegacyEdgeCondition {
        comparator: Comparator::GreaterThanEq as i32,
        left: Some(var("score")),
        right: Some(lit(values::int(50))),
    }));
    let mut set = edge("2-route");
    set.variable_mutations = vec![VariableMutation {
        lhs_name: "score".into(),
        operation: VariableMutationType::Assign as i32,
        rhs_value: Some(variable_mutation::RhsValue::NodeOutput(Default::default())),
        ..Default::default()
    }];
    let mut low_mut = edge("4-low");
    low_mut.variable_mutations = vec![VariableMutation {
        lhs_name: "score".into(),
        operation: VariableMutationType::Multiply as i32,
        rhs_value: Some(variable_mutation::RhsValue::LiteralValue(values::int(10))),
        ..Default::default()
    }];
    let s = spec(
        "route",
        vec![
            ("0-entry", entry("1-wait")),
            ("1-wait", wait("score", None, vec![set])),
            (
                "2-route",
                node(node::Node::Nop(NopNode {}), vec![high, low_mut]),
            ),
            ("3-high", exit()),
            ("4-low", exit()),
        ],
        vec![var_def("score", VariableType::Int, false)],
    );
    h.put_spec(s);
    h.run("route", "hi");
    h.post("hi", "score", values::int(70));
    assert_eq!(h.node_run("hi", 0, 3).node_name, "3-high");
    assert_eq!(h.variable("hi", "score"), values::int(70));
    h.run("route", "lo");
    h.post("lo", "score", values::int(3));
    assert_eq!(h.node_run("lo", 0, 3).node_name, "4-low");
    assert_eq!(h.variable("lo", "score"), values::int(30));
}

#[test]
fn s8_a_failing_mutation_fails_the_thread_with_var_mutation_error() {
    let mut h = Harness::new();
    h.put_def("e");
    let mut bad = edge("2-exit");
    bad.variable_mutations = vec![VariableMutation {
        lhs_name: "n".into(),
        operation: VariableMutationType::Divide as i32,
        rhs_value: Some(variable_mutation::RhsValue::LiteralValue(values::int(0))),
        ..Default::default()
    }];
    let s = spec(
        "div",
        vec![
            ("0-entry", entry("1-wait")),
            ("1-wait", wait("e", None, vec![bad])),
            ("2-exit", exit()),
        ],
        vec![var_def("n", VariableType::Int, false)],
    );
    h.put_spec(s);
    h.run_with("div", "wf1", BTreeMap::from([("n".into(), values::int(4))]));
    h.post("wf1", "e", values::null());
    let run = h.wf_run("wf1");
    assert_eq!(run.status(), LhStatus::Error);
    assert!(run.thread_runs[0]
        .error_message
        .as_deref()
        .unwrap_or_default()
        .starts_with("VAR_MUTATION_ERROR"));
    assert_eq!(
        h.variable("wf1", "n"),
        values::int(4),
        "a failed mutation changes no variable"
    );
}

#[test]
fn s8_sleep_nodes_wait_for_their_timer() {
    let mut h = Harness::new();
    let s = spec(
        "nap",
        vec![
            ("0-entry", entry("1-sleep")),
            (
                "1-sleep",
                node(
                    node::Node::Sleep(SleepNode {
                        sleep_length: Some(sleep_node::SleepLength::RawSeconds(lit(values::int(
                            5,
                        )))),
                    }),
                    vec![edge("2-exit")],
                ),
            ),
            ("2-exit", exit()),
        ],
        vec![],
    );
    h.put_spec(s);
    h.run("nap", "wf1");
    assert_eq!(h.status("wf1"), LhStatus::Running);
    h.advance_ms(5_000);
    assert_eq!(h.fire_due(), 1);
    assert_eq!(h.status("wf1"), LhStatus::Completed);
}

/// `iso_date` names an instant in any zone; LittleHorse parses it with Java's `Instant.parse`.
/// The harness's clock starts at 2023-11-14T22:13:20Z.
#[test]
fn s8_a_sleep_until_an_iso_date_wakes_at_that_instant() {
    let mut h = Harness::new();
    let s = spec(
        "alarm",
        vec![
            ("0-entry", entry("1-sleep")),
            (
                "1-sleep",
                node(
                    node::Node::Sleep(SleepNode {
                        sleep_length: Some(sleep_node::SleepLength::IsoDate(var("until"))),
                    }),
                    vec![edge("2-exit")],
                ),
            ),
            ("2-exit", exit()),
        ],
        vec![var_def("until", VariableType::Str, false)],
    );
    h.put_spec(s);
    let until = |text: &str| BTreeMap::from([("until".to_string(), values::str(text))]);
    h.run_with("alarm", "soon", until("2023-11-14T23:13:25+01:00"));
    assert_eq!(h.status("soon"), LhStatus::Running);
    match h.node_run("soon", 0, 1).node_type {
        Some(node_run::NodeType::Sleep(s)) => {
            assert_eq!(
                s.maturation_time,
                Some(halter_state_machine::time::ts(1_700_000_005_000))
            );
            assert!(!s.matured);
        }
        other => panic!("unexpected {other:?}"),
    }
    h.advance_ms(4_999);
    assert_eq!(h.fire_due(), 0);
    h.advance_ms(1);
    assert_eq!(h.fire_due(), 1);
    assert_eq!(h.status("soon"), LhStatus::Completed);

    h.run_with("alarm", "past", until("2023-11-14T22:13:20.000Z"));
    assert_eq!(h.status("past"), LhStatus::Completed);

    h.run_with("alarm", "bad", until("tomorrow"));
    assert_eq!(h.status("bad"), LhStatus::Error);
    let nr = h.node_run("bad", 0, 1);
    assert_eq!(nr.failures[0].failure_name, "VAR_ERROR");
    assert!(
        nr.failures[0]
            .message
            .contains("'tomorrow' is not an ISO-8601 instant"),
        "{}",
        nr.failures[0].message
    );
}

#[test]
fn s8_stop_halts_the_waiting_node_and_resume_claims_what_arrived_meanwhile() {
    let mut h = Harness::new();
    h.put_def("e");
    h.put_spec(wait_spec("w", "e", None));
    h.run("w", "wf1");
    h.ok(Kind::StopWfRun(StopWfRunRequest {
        wf_run_id: Some(wf_id("wf1")),
        thread_run_number: 0,
    }));
    assert_eq!(h.status("wf1"), LhStatus::Halted);
    assert_eq!(h.node_run("wf1", 0, 1).status(), LhStatus::Halted);
    let ev = h.post("wf1", "e", values::int(1));
    assert!(!ev.claimed, "a halted node does not claim");
    h.ok(Kind::ResumeWfRun(ResumeWfRunRequest {
        wf_run_id: Some(wf_id("wf1")),
        thread_run_number: 0,
    }));
    assert_eq!(h.status("wf1"), LhStatus::Completed);
    assert!(h.event("wf1", "e", &ev.id.unwrap().guid).claimed);
    let r = h.rejected(Kind::StopWfRun(StopWfRunRequest {
        wf_run_id: Some(wf_id("wf1")),
        thread_run_number: 0,
    }));
    assert!(matches!(r, Rejection::FailedPrecondition(_)));
    let r = h.rejected(Kind::StopWfRun(StopWfRunRequest {
        wf_run_id: Some(wf_id("none")),
        thread_run_number: 0,
    }));
    assert!(matches!(r, Rejection::NotFound(_)));
}

#[test]
fn s8_delete_wf_run_removes_its_node_runs_variables_events_and_timers() {
    let mut h = Harness::new();
    h.put_def("e");
    h.put_def("other");
    let mut s = wait_spec("w", "e", Some(100));
    s.thread_specs.get_mut("entrypoint").unwrap().variable_defs =
        vec![var_def("v", VariableType::Int, false)];
    h.put_spec(s);
    h.run("w", "wf1");
    h.post("wf1", "other", values::int(1));
    assert_eq!(h.pending_timers(), 1);
    h.ok(Kind::DeleteWfRun(DeleteWfRunRequest {
        id: Some(wf_id("wf1")),
    }));
    assert!(h.read(|t| query::get_wf_run(t, &wf_id("wf1"))).is_err());
    assert!(h.events_of("wf1").is_empty());
    assert_eq!(h.pending_timers(), 0);
    let nodes = h.read(|t| {
        query::list_node_runs(
            t,
            &ListNodeRunsRequest {
                wf_run_id: Some(wf_id("wf1")),
                ..Default::default()
            },
        )
        .unwrap()
    });
    assert!(nodes.results.is_empty());
    let vars = h.read(|t| {
        query::list_variables(
            t,
            &ListVariablesRequest {
                wf_run_id: Some(wf_id("wf1")),
                ..Default::default()
            },
        )
        .unwrap()
    });
    assert!(vars.results.is_empty());
    h.ok(Kind::DeleteWfRun(DeleteWfRunRequest {
        id: Some(wf_id("wf1")),
    }));
}

#[test]
fn s8_wf_spec_retention_deletes_terminated_runs() {
    let mut h = Harness::new();
    h.put_def("e");
    let mut s = wait_spec("w", "e", None);
    s.retention_policy = Some(WorkflowRetentionPolicy {
        wf_gc_policy: Some(workflow_retention_policy::WfGcPolicy::SecondsAfterWfTermination(60)),
    });
    h.put_spec(s);
    h.run("w", "wf1");
    h.post("wf1", "e", values::int(1));
    h.advance_ms(60_000);
    assert_eq!(h.fire_due(), 1);
    assert!(h.read(|t| query::get_wf_run(t, &wf_id("wf1"))).is_err());
}

#[test]
fn s8_delete_wf_spec_refuses_a_version_in_use() {
    let mut h = Harness::new();
    h.put_def("e");
    let s = h.put_spec(wait_spec("w", "e", None));
    h.run("w", "wf1");
    let r = h.rejected(Kind::DeleteWfSpec(DeleteWfSpecRequest { id: s.id.clone() }));
    assert!(matches!(r, Rejection::FailedPrecondition(_)));
    h.post("wf1", "e", values::int(1));
    h.ok(Kind::DeleteWfSpec(DeleteWfSpecRequest { id: s.id.clone() }));
    assert!(h
        .read(|t| query::get_wf_spec(t, s.id.as_ref().unwrap()))
        .is_err());
}

// §9 Reads

#[test]
fn s9_searches_filter_and_page() {
    let mut h = Harness::new();
    h.put_def("e");
    h.put_spec(wait_spec("w", "e", None));
    for i in 0..5 {
        h.run("w", &format!("run{i}"));
        h.advance_ms(1);
    }
    for i in 0..3 {
        h.post(&format!("run{i}"), "e", values::int(i));
    }
    h.post("orphan", "e", values::int(9));
    let claimed = h.read(|t| {
        query::search_external_events(
            t,
            &SearchExternalEventRequest {
                external_event_def_id: Some(ExternalEventDefId { name: "e".into() }),
                is_claimed: Some(true),
                ..Default::default()
            },
        )
        .unwrap()
    });
    assert_eq!(claimed.results.len(), 3);
    let mut all = Vec::new();
    let mut bookmark = None;
    loop {
        let page = h.read(|t| {
            query::search_external_events(
                t,
                &SearchExternalEventRequest {
                    external_event_def_id: Some(ExternalEventDefId { name: "e".into() }),
                    limit: Some(3),
                    bookmark: bookmark.clone(),
                    ..Default::default()
                },
            )
            .unwrap()
        });
        all.extend(page.results);
        bookmark = page.bookmark;
        if bookmark.is_none() {
            break;
        }
    }
    assert_eq!(all.len(), 4);
    let missing_def = h.read(|t| {
        query::search_external_events(
            t,
            &SearchExternalEventRequest {
                external_event_def_id: Some(ExternalEventDefId { name: "zzz".into() }),
                ..Default::default()
            },
        )
    });
    assert!(matches!(
        missing_def,
        Err(halter_state_machine::error::Outcome::Rejected(
            Rejection::InvalidArgument(_)
        ))
    ));
    let running = h.read(|t| {
        query::search_wf_runs(
            t,
            &SearchWfRunRequest {
                wf_spec_name: "w".into(),
                status: Some(LhStatus::Running as i32),
                ..Default::default()
            },
        )
        .unwrap()
    });
    let ids: Vec<_> = running.results.into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["run3", "run4"]);
}

#[test]
fn s9_reads_of_missing_objects_are_not_found() {
    let h = Harness::new();
    let nf = |r: Result<(), halter_state_machine::error::Outcome>| {
        assert!(matches!(
            r,
            Err(halter_state_machine::error::Outcome::Rejected(
                Rejection::NotFound(_)
            ))
        ))
    };
    nf(h.read(|t| query::get_wf_run(t, &wf_id("x")).map(drop)));
    nf(h.read(|t| query::get_external_event(t, &event_id("x", "d", "g")).map(drop)));
    nf(h.read(|t| {
        query::get_wf_spec(
            t,
            &WfSpecId {
                name: "x".into(),
                major_version: 0,
                revision: 0,
            },
        )
        .map(drop)
    }));
    nf(h.read(|t| {
        query::get_node_run(
            t,
            &NodeRunId {
                wf_run_id: Some(wf_id("x")),
                thread_run_number: 0,
                position: 0,
            },
        )
        .map(drop)
    }));
}

// §10 Errors at the edge

#[test]
fn s10_a_newer_log_format_is_refused_not_misread() {
    let h = Harness::new();
    let txn = h.store.begin_write().unwrap();
    let mut tables = halter_storage::Tables::new(&txn);
    let mut cmd = halter_state_machine::command(Kind::FireTimers(Default::default()), 0);
    cmd.format_version = halter_api::LOG_FORMAT_VERSION + 1;
    assert!(matches!(
        halter_state_machine::apply(&mut tables, &cmd),
        Err(halter_state_machine::ApplyError::UnsupportedFormat { .. })
    ));
}
