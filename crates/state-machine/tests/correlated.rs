#![allow(clippy::unwrap_used)]
//! Scenarios for correlated events (semantics §7), one per rule. Every rejection is also checked
//! to change nothing (`Harness::rejected`).

mod support;

use halter_api::halter::command::Kind;
use halter_api::littlehorse::{node_run::NodeType, *};
use halter_api::values;
use halter_state_machine::{query, Rejection, Response};
use support::*;

const WAIT: &str = "1-wait-EXTERNAL_EVENT";

fn put_def(h: &mut Harness, name: &str, ttl: Option<i64>, delete_after_first: bool) {
    h.ok(Kind::PutExternalEventDef(PutExternalEventDefRequest {
        name: name.into(),
        correlated_event_config: Some(CorrelatedEventConfig {
            ttl_seconds: ttl,
            delete_after_first_correlation: delete_after_first,
        }),
        ..Default::default()
    }));
}

/// Waits for `def` correlated by the STR variable `key` (with `timeout`).
fn keyed_spec(name: &str, def: &str, timeout: Option<i64>, masked: bool) -> PutWfSpecRequest {
    let mut w = wait(def, timeout, vec![edge("2-exit-EXIT")]);
    if let Some(node::Node::ExternalEvent(ee)) = &mut w.node {
        ee.correlation_key = Some(var("key"));
        ee.mask_correlation_key = masked;
    }
    spec(
        name,
        vec![
            ("0-entrypoint-ENTRYPOINT", entry(WAIT)),
            (WAIT, w),
            ("2-exit-EXIT", exit()),
        ],
        vec![var_def("key", VariableType::Str, false)],
    )
}

fn run_keyed(h: &mut Harness, spec: &str, id: &str, key: VariableValue) {
    h.run_with(spec, id, [("key".to_string(), key)].into());
}

fn put_correlated(
    h: &mut Harness,
    def: &str,
    key: &str,
    content: VariableValue,
) -> CorrelatedEvent {
    match h.ok(Kind::PutCorrelatedEvent(PutCorrelatedEventRequest {
        key: key.into(),
        external_event_def_id: Some(ExternalEventDefId { name: def.into() }),
        content: Some(content),
    })) {
        Response::CorrelatedEvent(e) => e,
        other => panic!("unexpected {other:?}"),
    }
}

fn correlated(h: &Harness, def: &str, key: &str) -> Result<CorrelatedEvent, String> {
    h.read(|t| {
        query::get_correlated_event(
            t,
            &CorrelatedEventId {
                key: key.into(),
                external_event_def_id: Some(ExternalEventDefId { name: def.into() }),
            },
        )
        .map_err(|e| format!("{e:?}"))
    })
}

fn claimed_event(h: &Harness, wf: &str) -> ExternalEvent {
    match h.node_run(wf, 0, 1).node_type {
        Some(NodeType::ExternalEvent(ee)) => {
            let id = ee.external_event_id.expect("claimed");
            h.event(wf, "paid", &id.guid)
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn s7_every_waiting_node_run_gets_its_own_event_when_the_correlated_event_is_put() {
    let mut h = Harness::new();
    put_def(&mut h, "paid", None, false);
    h.put_spec(keyed_spec("pay", "paid", None, false));
    run_keyed(&mut h, "pay", "a", values::str("order-7"));
    run_keyed(&mut h, "pay", "b", values::str("order-7"));
    run_keyed(&mut h, "pay", "c", values::str("order-8"));
    let ev = put_correlated(&mut h, "paid", "order-7", values::int(42));
    assert_eq!(ev.external_events.len(), 2);
    for wf in ["a", "b"] {
        assert_eq!(h.status(wf), LhStatus::Completed, "{wf}");
        let e = claimed_event(&h, wf);
        assert!(e.claimed);
        assert_eq!(e.content, Some(values::int(42)));
        assert_eq!(e.thread_run_number, Some(0));
        assert_eq!(e.node_run_position, Some(1));
        assert!(ev.external_events.contains(&e.id.unwrap()));
    }
    assert_eq!(h.status("c"), LhStatus::Running, "another key");
    // Kept (no delete_after_first_correlation): a later arrival with the key matches at once.
    run_keyed(&mut h, "pay", "d", values::str("order-7"));
    assert_eq!(h.status("d"), LhStatus::Completed);
    assert_eq!(
        correlated(&h, "paid", "order-7")
            .unwrap()
            .external_events
            .len(),
        3
    );
    match h.node_run("d", 0, 1).node_type {
        Some(NodeType::ExternalEvent(ee)) => {
            assert_eq!(ee.correlation_key.as_deref(), Some("order-7"))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn s7_delete_after_first_correlation_serves_the_waiters_of_that_moment_then_goes() {
    let mut h = Harness::new();
    put_def(&mut h, "paid", None, true);
    h.put_spec(keyed_spec("pay", "paid", None, false));
    run_keyed(&mut h, "pay", "a", values::str("k"));
    run_keyed(&mut h, "pay", "b", values::str("k"));
    let ev = put_correlated(&mut h, "paid", "k", values::null());
    assert_eq!(ev.external_events.len(), 2, "answered as it stood");
    assert!(correlated(&h, "paid", "k")
        .unwrap_err()
        .contains("NotFound"));
    assert_eq!(h.status("a"), LhStatus::Completed);
    assert_eq!(h.status("b"), LhStatus::Completed);
    // Put before anyone waits: the first arrival takes it, the next waits.
    put_correlated(&mut h, "paid", "early", values::null());
    run_keyed(&mut h, "pay", "c", values::str("early"));
    run_keyed(&mut h, "pay", "d", values::str("early"));
    assert_eq!(h.status("c"), LhStatus::Completed);
    assert_eq!(h.status("d"), LhStatus::Running);
    assert!(correlated(&h, "paid", "early").is_err());
}

#[test]
fn s7_ttl_deletes_the_correlated_event_and_a_timed_out_waiter_is_not_matched() {
    let mut h = Harness::new();
    put_def(&mut h, "paid", Some(30), false);
    h.put_spec(keyed_spec("pay", "paid", Some(5), false));
    put_correlated(&mut h, "paid", "gone", values::null());
    h.advance_ms(30_000);
    h.fire_due();
    assert!(correlated(&h, "paid", "gone").is_err(), "ttl ran out");
    run_keyed(&mut h, "pay", "a", values::str("late"));
    h.advance_ms(5_000);
    h.fire_due();
    assert_eq!(h.status("a"), LhStatus::Error);
    let ev = put_correlated(&mut h, "paid", "late", values::null());
    assert!(
        ev.external_events.is_empty(),
        "the timed-out node no longer waits"
    );
    assert!(h.events_of("a").is_empty());
}

#[test]
fn s7_a_plain_put_still_completes_a_keyed_node_and_ends_its_wait() {
    let mut h = Harness::new();
    put_def(&mut h, "paid", None, false);
    h.put_spec(keyed_spec("pay", "paid", None, false));
    run_keyed(&mut h, "pay", "a", values::str("k"));
    h.post("a", "paid", values::str("direct"));
    assert_eq!(h.status("a"), LhStatus::Completed);
    let ev = put_correlated(&mut h, "paid", "k", values::null());
    assert!(ev.external_events.is_empty());
    assert_eq!(
        h.events_of("a").len(),
        1,
        "no orphan event for the finished node"
    );
}

#[test]
fn s7_a_key_that_is_not_a_str_fails_the_node_with_var_error_and_masked_keys_are_hidden() {
    let mut h = Harness::new();
    put_def(&mut h, "paid", None, false);
    h.put_spec(keyed_spec("pay", "paid", None, false));
    h.run("pay", "nokey");
    assert_eq!(h.status("nokey"), LhStatus::Error);
    assert_eq!(
        h.node_run("nokey", 0, 1).failures[0].failure_name,
        "VAR_ERROR"
    );
    h.put_spec(keyed_spec("secret", "paid", None, true));
    run_keyed(&mut h, "secret", "s", values::str("card-1234"));
    match h.node_run("s", 0, 1).node_type {
        Some(NodeType::ExternalEvent(ee)) => {
            assert_eq!(ee.correlation_key.as_deref(), Some("*****"));
            assert!(ee.mask_correlation_key);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Masked on reads only: the match still works.
    put_correlated(&mut h, "paid", "card-1234", values::null());
    assert_eq!(h.status("s"), LhStatus::Completed);
}

#[test]
fn s7_put_correlated_event_checks_def_key_and_duplicates() {
    let mut h = Harness::new();
    h.put_def("plain");
    put_def(&mut h, "paid", None, false);
    let req = |def: &str, key: &str, v: VariableValue| {
        Kind::PutCorrelatedEvent(PutCorrelatedEventRequest {
            key: key.into(),
            external_event_def_id: Some(ExternalEventDefId { name: def.into() }),
            content: Some(v),
        })
    };
    let invalid = |r: Rejection, needle: &str| match r {
        Rejection::InvalidArgument(m) => assert!(m.contains(needle), "'{m}' lacks '{needle}'"),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    };
    invalid(
        h.rejected(req("plain", "k", values::null())),
        "correlated events enabled",
    );
    invalid(
        h.rejected(req("nope", "k", values::null())),
        "No ExternalEventDef named 'nope'",
    );
    invalid(h.rejected(req("paid", "a/b", values::null())), "'/' or '~'");
    invalid(h.rejected(req("paid", "", values::null())), "empty");
    let first = put_correlated(&mut h, "paid", "k", values::int(1));
    assert_eq!(
        put_correlated(&mut h, "paid", "k", values::int(1)),
        first,
        "identical retry"
    );
    match h.rejected(req("paid", "k", values::int(2))) {
        Rejection::AlreadyExists(m) => assert!(m.contains("'k'"), "{m}"),
        other => panic!("expected ALREADY_EXISTS, got {other:?}"),
    }
    // Delete is idempotent.
    let del = || {
        Kind::DeleteCorrelatedEvent(DeleteCorrelatedEventRequest {
            id: Some(CorrelatedEventId {
                key: "k".into(),
                external_event_def_id: Some(ExternalEventDefId {
                    name: "paid".into(),
                }),
            }),
        })
    };
    h.ok(del());
    h.ok(del());
    assert!(correlated(&h, "paid", "k").is_err());
}

#[test]
fn s7_search_pages_by_creation_and_filters_on_matches() {
    let mut h = Harness::new();
    put_def(&mut h, "paid", None, false);
    h.put_spec(keyed_spec("pay", "paid", None, false));
    run_keyed(&mut h, "pay", "a", values::str("k2"));
    for k in ["k1", "k2", "k3"] {
        put_correlated(&mut h, "paid", k, values::null());
        h.advance_ms(10);
    }
    let search = |has: Option<bool>, limit: i32, bookmark: Option<Vec<u8>>| {
        h.read(|t| {
            query::search_correlated_events(
                t,
                &SearchCorrelatedEventRequest {
                    external_event_def_id: Some(ExternalEventDefId {
                        name: "paid".into(),
                    }),
                    has_external_events: has,
                    limit: Some(limit),
                    bookmark,
                    ..Default::default()
                },
            )
            .unwrap()
        })
    };
    let keys =
        |l: &CorrelatedEventIdList| l.results.iter().map(|i| i.key.clone()).collect::<Vec<_>>();
    let p1 = search(None, 2, None);
    assert_eq!(keys(&p1), ["k1", "k2"]);
    let p2 = search(None, 2, p1.bookmark.clone());
    assert_eq!(keys(&p2), ["k3"]);
    assert_eq!(keys(&search(Some(true), 10, None)), ["k2"]);
    assert_eq!(keys(&search(Some(false), 10, None)), ["k1", "k3"]);
}

#[test]
fn s7_an_event_already_put_for_the_run_is_claimed_before_a_correlation_is_made() {
    let mut h = Harness::new();
    put_def(&mut h, "paid", None, true);
    h.put_spec(keyed_spec("pay", "paid", None, false));
    put_correlated(&mut h, "paid", "k", values::int(1));
    // Pre-emptive plain event for the run id, put before the run exists.
    h.post("a", "paid", values::int(2));
    run_keyed(&mut h, "pay", "a", values::str("k"));
    assert_eq!(h.status("a"), LhStatus::Completed);
    assert_eq!(claimed_event(&h, "a").content, Some(values::int(2)));
    // The correlated event was not spent on a run that did not need it.
    let kept = correlated(&h, "paid", "k").unwrap();
    assert!(kept.external_events.is_empty());
    assert_eq!(h.events_of("a").len(), 1);
}
