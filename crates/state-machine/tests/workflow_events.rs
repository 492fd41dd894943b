#![allow(clippy::unwrap_used)]
//! WorkflowEventDefs, THROW_EVENT nodes and the WorkflowEvents they throw: numbering per
//! (WfRun, def), what `AwaitWorkflowEvent` answers (`query::first_workflow_event`), paging,
//! deletion with the WfRun, and every refusal.

mod support;

use halter_api::halter::command::Kind;
use halter_api::littlehorse::*;
use halter_api::values;
use halter_state_machine::{query, Rejection, Response};
use support::*;

fn put_event_def(
    h: &mut Harness,
    name: &str,
    ty: Option<VariableType>,
) -> Result<WorkflowEventDef, Rejection> {
    let req = PutWorkflowEventDefRequest {
        name: name.into(),
        content_type: Some(ReturnType {
            return_type: ty.map(|t| TypeDefinition {
                defined_type: Some(type_definition::DefinedType::PrimitiveType(t as i32)),
                masked: false,
            }),
        }),
    };
    let applied = h.apply(Kind::PutWorkflowEventDef(req));
    applied.response.map(|r| match r {
        Response::WorkflowEventDef(d) => d,
        other => panic!("unexpected {other:?}"),
    })
}

fn throw(def: &str, content: VariableAssignment, to: &str) -> Node {
    node(
        node::Node::ThrowEvent(ThrowEventNode {
            event_def_id: Some(WorkflowEventDefId { name: def.into() }),
            content: Some(content),
        }),
        vec![edge(to)],
    )
}

/// entrypoint -> throw `progress` "a" -> throw `progress` "b" -> wait for `e` (content into
/// `order`) -> throw `done` with `order` -> exit.
fn throwing_spec(name: &str) -> PutWfSpecRequest {
    let mut to_done = edge("4-done");
    to_done.variable_mutations = vec![assign_output("order")];
    spec(
        name,
        vec![
            ("0-entry", entry("1-progress")),
            (
                "1-progress",
                throw("progress", lit(values::str("a")), "2-progress"),
            ),
            (
                "2-progress",
                throw("progress", lit(values::str("b")), "3-wait"),
            ),
            ("3-wait", wait("e", None, vec![to_done])),
            ("4-done", throw("done", var("order"), "5-exit")),
            ("5-exit", exit()),
        ],
        vec![var_def("order", VariableType::Str, false)],
    )
}

fn setup(h: &mut Harness) {
    h.put_def("e");
    put_event_def(h, "progress", None).unwrap();
    put_event_def(h, "done", Some(VariableType::Str)).unwrap();
    h.put_spec(throwing_spec("shop"));
}

fn ev_id(wf: &str, def: &str, number: i32) -> WorkflowEventId {
    WorkflowEventId {
        wf_run_id: Some(wf_id(wf)),
        workflow_event_def_id: Some(WorkflowEventDefId { name: def.into() }),
        number,
    }
}

fn list(h: &Harness, wf: &str) -> Vec<WorkflowEvent> {
    h.read(|t| {
        query::list_workflow_events(
            t,
            &ListWorkflowEventsRequest {
                wf_run_id: Some(wf_id(wf)),
                ..Default::default()
            },
        )
        .unwrap()
        .results
    })
}

fn first(
    h: &Harness,
    wf: &str,
    defs: &[&str],
    ignore: Vec<WorkflowEventId>,
) -> Option<WorkflowEventId> {
    let req = AwaitWorkflowEventRequest {
        wf_run_id: Some(wf_id(wf)),
        event_def_ids: defs
            .iter()
            .map(|d| WorkflowEventDefId { name: (*d).into() })
            .collect(),
        workflow_events_to_ignore: ignore,
    };
    h.read(|t| query::first_workflow_event(t, &req).unwrap())
        .map(|e| e.id.unwrap())
}

#[test]
fn throw_event_numbers_events_per_def_and_completes_the_node() {
    let mut h = Harness::new();
    setup(&mut h);
    h.run("shop", "w1");
    // Both progress events are thrown by RunWf's own command, numbered 0 and 1; the run waits.
    let events = list(&h, "w1");
    let ids: Vec<_> = events.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(
        ids,
        vec![ev_id("w1", "progress", 0), ev_id("w1", "progress", 1)]
    );
    assert_eq!(events[1].content, Some(values::str("b")));
    let nr = h.node_run("w1", 0, 2);
    assert_eq!(nr.status, LhStatus::Completed as i32);
    assert_eq!(
        nr.node_type,
        Some(node_run::NodeType::ThrowEvent(ThrowEventNodeRun {
            workflow_event_id: Some(ev_id("w1", "progress", 1)),
        }))
    );
    assert_eq!(events[1].node_run_id, nr.id);
    assert_eq!(h.status("w1"), LhStatus::Running);

    h.advance_ms(10);
    h.post("w1", "e", values::str("order-42"));
    assert_eq!(h.status("w1"), LhStatus::Completed);
    let done = h.read(|t| query::get_workflow_event(t, &ev_id("w1", "done", 0)).unwrap());
    assert_eq!(done.content, Some(values::str("order-42")));

    // Another WfRun numbers its own events from 0.
    h.run("shop", "w2");
    assert_eq!(list(&h, "w2")[0].id, Some(ev_id("w2", "progress", 0)));
    assert_eq!(list(&h, "w1").len(), 3);
}

#[test]
fn await_answers_the_first_thrown_matching_event_not_ignored() {
    let mut h = Harness::new();
    setup(&mut h);
    assert_eq!(first(&h, "w1", &[], vec![]), None, "no WfRun yet");
    h.run("shop", "w1");
    assert_eq!(first(&h, "w1", &["done"], vec![]), None, "not thrown yet");
    h.advance_ms(10);
    h.post("w1", "e", values::str("x"));

    // Any def: the oldest, though "done" sorts before "progress".
    assert_eq!(
        first(&h, "w1", &[], vec![]),
        Some(ev_id("w1", "progress", 0))
    );
    assert_eq!(
        first(&h, "w1", &[], vec![ev_id("w1", "progress", 0)]),
        Some(ev_id("w1", "progress", 1))
    );
    assert_eq!(
        first(
            &h,
            "w1",
            &["progress", "done"],
            vec![ev_id("w1", "progress", 0), ev_id("w1", "progress", 1)]
        ),
        Some(ev_id("w1", "done", 0))
    );
    assert_eq!(
        first(&h, "w1", &["done"], vec![]),
        Some(ev_id("w1", "done", 0))
    );
    assert_eq!(
        first(&h, "w1", &["done"], vec![ev_id("w1", "done", 0)]),
        None
    );
    assert_eq!(first(&h, "w1", &["other"], vec![]), None);
    // "w" is a prefix of "w1": a scan that did not stop at its own WfRun would find w1's.
    assert_eq!(first(&h, "w", &[], vec![]), None);
    // An ignored id of another WfRun ignores nothing here.
    assert_eq!(
        first(&h, "w1", &["done"], vec![ev_id("w2", "done", 0)]),
        Some(ev_id("w1", "done", 0))
    );
}

#[test]
fn list_pages_and_delete_wf_run_removes_only_its_events() {
    let mut h = Harness::new();
    setup(&mut h);
    for wf in ["w1", "w10", "w2"] {
        h.run("shop", wf);
        h.post(wf, "e", values::str(wf));
    }
    // Paged one at a time, every event of w1 comes back once, in (def, number) order.
    let mut seen = Vec::new();
    let mut bookmark = None;
    loop {
        let page = h.read(|t| {
            query::list_workflow_events(
                t,
                &ListWorkflowEventsRequest {
                    wf_run_id: Some(wf_id("w1")),
                    bookmark: bookmark.clone(),
                    limit: Some(1),
                },
            )
            .unwrap()
        });
        seen.extend(page.results.into_iter().map(|e| e.id.unwrap()));
        match page.bookmark {
            Some(b) => bookmark = Some(b),
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec![
            ev_id("w1", "done", 0),
            ev_id("w1", "progress", 0),
            ev_id("w1", "progress", 1)
        ]
    );

    h.ok(Kind::DeleteWfRun(DeleteWfRunRequest {
        id: Some(wf_id("w1")),
    }));
    assert!(list(&h, "w1").is_empty());
    assert_eq!(list(&h, "w10").len(), 3);
    assert_eq!(list(&h, "w2").len(), 3);
    let gone = h.read(|t| query::get_workflow_event(t, &ev_id("w1", "done", 0)));
    assert!(matches!(
        gone,
        Err(halter_state_machine::error::Outcome::Rejected(
            Rejection::NotFound(_)
        ))
    ));
}

#[test]
fn a_throw_of_the_wrong_type_or_a_deleted_def_fails_the_node() {
    let mut h = Harness::new();
    h.put_def("e");
    put_event_def(&mut h, "count", Some(VariableType::Int)).unwrap();
    h.put_spec(spec(
        "typed",
        vec![
            ("0-entry", entry("1-throw")),
            (
                "1-throw",
                throw("count", lit(values::str("not a number")), "2-exit"),
            ),
            ("2-exit", exit()),
        ],
        vec![],
    ));
    h.run("typed", "w1");
    let nr = h.node_run("w1", 0, 1);
    assert_eq!(nr.status, LhStatus::Error as i32);
    assert_eq!(nr.failures[0].failure_name, "VAR_SUB_ERROR");
    assert!(
        nr.failures[0].message.contains("INT"),
        "{}",
        nr.failures[0].message
    );
    assert_eq!(h.status("w1"), LhStatus::Error);
    assert!(list(&h, "w1").is_empty());

    // A def deleted after the WfSpec was put: the throw fails the same way.
    put_event_def(&mut h, "note", None).unwrap();
    h.put_spec(spec(
        "untyped",
        vec![
            ("0-entry", entry("1-throw")),
            ("1-throw", throw("note", lit(values::int(1)), "2-exit")),
            ("2-exit", exit()),
        ],
        vec![],
    ));
    h.ok(Kind::DeleteWorkflowEventDef(
        DeleteWorkflowEventDefRequest {
            id: Some(WorkflowEventDefId {
                name: "note".into(),
            }),
        },
    ));
    h.run("untyped", "w2");
    assert_eq!(h.status("w2"), LhStatus::Error);
    assert!(h.node_run("w2", 0, 1).failures[0]
        .message
        .contains("No WorkflowEventDef named 'note'"));
}

#[test]
fn defs_are_idempotent_and_bad_input_is_refused() {
    let mut h = Harness::new();
    let first = put_event_def(&mut h, "done", Some(VariableType::Str)).unwrap();
    h.advance_ms(5);
    assert_eq!(
        put_event_def(&mut h, "done", Some(VariableType::Str)).unwrap(),
        first
    );
    let changed = |ty: VariableType| {
        Kind::PutWorkflowEventDef(PutWorkflowEventDefRequest {
            name: "done".into(),
            content_type: Some(ReturnType {
                return_type: Some(TypeDefinition {
                    defined_type: Some(type_definition::DefinedType::PrimitiveType(ty as i32)),
                    masked: false,
                }),
            }),
        })
    };
    // `rejected` also checks that the state did not change.
    assert!(matches!(
        h.rejected(changed(VariableType::Int)),
        Rejection::AlreadyExists(_)
    ));
    assert!(matches!(
        h.rejected(Kind::PutWorkflowEventDef(PutWorkflowEventDefRequest {
            name: "bad name!".into(),
            content_type: None,
        })),
        Rejection::InvalidArgument(_)
    ));
    let got = h.read(|t| {
        query::get_workflow_event_def(
            t,
            &WorkflowEventDefId {
                name: "done".into(),
            },
        )
        .unwrap()
    });
    assert_eq!(got, first);
    let page = h.read(|t| {
        query::search_workflow_event_defs(
            t,
            &SearchWorkflowEventDefRequest {
                prefix: Some("do".into()),
                ..Default::default()
            },
        )
        .unwrap()
    });
    assert_eq!(
        page.results,
        vec![WorkflowEventDefId {
            name: "done".into()
        }]
    );

    // PutWfSpec: the def must exist, and the node must say what to throw.
    h.put_def("e");
    let r = h.rejected(Kind::PutWfSpec(spec(
        "s",
        vec![
            ("0-entry", entry("1-throw")),
            ("1-throw", throw("missing", lit(values::int(1)), "2-exit")),
            ("2-exit", exit()),
        ],
        vec![],
    )));
    assert!(
        matches!(&r, Rejection::InvalidArgument(m) if m.contains("No WorkflowEventDef named 'missing'")),
        "{r:?}"
    );
    let mut no_content = throw("done", lit(values::int(1)), "2-exit");
    if let Some(node::Node::ThrowEvent(t)) = &mut no_content.node {
        t.content = None;
    }
    let r = h.rejected(Kind::PutWfSpec(spec(
        "s",
        vec![
            ("0-entry", entry("1-throw")),
            ("1-throw", no_content),
            ("2-exit", exit()),
        ],
        vec![],
    )));
    assert!(matches!(r, Rejection::InvalidArgument(_)), "{r:?}");

    // AwaitWorkflowEvent's own checks, made before it waits.
    let bad = AwaitWorkflowEventRequest {
        wf_run_id: None,
        ..Default::default()
    };
    assert!(query::check_await_workflow_event(&bad).is_err());
}

fn search(h: &Harness, def: &str, earliest: Option<i64>, limit: Option<i32>) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    let mut bookmark = None;
    loop {
        let req = SearchWorkflowEventRequest {
            workflow_event_def_id: Some(WorkflowEventDefId { name: def.into() }),
            earliest_start: earliest.map(|ms| prost_types::Timestamp {
                seconds: ms / 1000,
                nanos: ((ms % 1000) * 1_000_000) as i32,
            }),
            limit,
            bookmark: bookmark.clone(),
            ..Default::default()
        };
        let page = h.read(|t| query::search_workflow_events(t, &req).unwrap());
        out.extend(
            page.results
                .into_iter()
                .map(|i| (i.wf_run_id.unwrap().id, i.number)),
        );
        match page.bookmark {
            Some(b) => bookmark = Some(b),
            None => return out,
        }
    }
}

fn assert_index_agrees(h: &Harness) {
    let problems = h.read(|t| halter_state_machine::workflow_event::audit(t).unwrap());
    assert!(problems.is_empty(), "{problems:?}");
}

/// SearchWorkflowEvent: a def's events oldest first across WfRuns, paged, within a time
/// window; a deleted WfRun's events leave the index; a state whose index is missing (an older
/// build's) gets it built once.
#[test]
fn search_workflow_events_by_def_and_time_follows_deletes_and_rebuilds() {
    let mut h = Harness::new();
    setup(&mut h);
    h.run("shop", "w2");
    h.advance_ms(100);
    let later = h.now;
    h.run("shop", "w1");
    h.post("w1", "e", values::str("x"));
    let all = vec![
        ("w2".to_string(), 0),
        ("w2".to_string(), 1),
        ("w1".to_string(), 0),
        ("w1".to_string(), 1),
    ];
    assert_eq!(search(&h, "progress", None, None), all);
    assert_eq!(
        search(&h, "progress", None, Some(1)),
        all,
        "paged one at a time"
    );
    assert_eq!(
        search(&h, "progress", Some(later), Some(3)),
        all[2..].to_vec()
    );
    assert_eq!(search(&h, "done", None, None), vec![("w1".to_string(), 0)]);
    assert!(search(&h, "nothing", None, None).is_empty());
    assert_index_agrees(&h);

    h.ok(Kind::DeleteWfRun(DeleteWfRunRequest {
        id: Some(wf_id("w1")),
    }));
    assert_eq!(search(&h, "progress", None, None), all[..2].to_vec());
    assert!(search(&h, "done", None, None).is_empty());
    assert_index_agrees(&h);

    // What a build without the index left: the events, no rows, no marker.
    let txn = h.store.begin_write().unwrap();
    {
        let mut t = halter_storage::Tables::new(&txn);
        t.workflow_events_by_def
            .open_mut()
            .unwrap()
            .retain(|_, _| false)
            .unwrap();
        t.meta
            .open_mut()
            .unwrap()
            .remove(halter_storage::tables::meta::WORKFLOW_EVENT_INDEX)
            .unwrap();
        // The other indexes are there already.
        t.meta
            .open_mut()
            .unwrap()
            .insert(halter_storage::tables::meta::SEARCH_INDEXES, 1)
            .unwrap();
    }
    txn.commit().unwrap();
    assert!(search(&h, "progress", None, None).is_empty());
    assert!(h.build_missing_indexes());
    assert_eq!(search(&h, "progress", None, None), all[..2].to_vec());
    assert_index_agrees(&h);
    assert!(!h.build_missing_indexes(), "built once");
}
