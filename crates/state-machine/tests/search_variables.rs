#![allow(clippy::unwrap_used)]
//! SearchVariable (semantics §9) and the index behind it (`variable_index`): a search finds
//! the WfRuns whose `searchable` variable holds a value, follows every change of the value,
//! forgets deleted WfRuns, and refuses what LittleHorse refuses. After each scenario the
//! index is audited against the variables.

mod support;

use std::collections::BTreeMap;

use halter_api::halter::command::Kind;
use halter_api::littlehorse::*;
use halter_api::values;
use halter_state_machine::{query, variable_index, Rejection};
use support::*;

/// entrypoint -> wait for `e` (its content goes into `order`) -> exit; `order` is a
/// searchable STR, `note` a STR that is not searchable.
fn order_spec(name: &str) -> PutWfSpecRequest {
    let mut to_exit = edge("2-exit");
    to_exit.variable_mutations = vec![assign_output("order")];
    let mut order = var_def("order", VariableType::Str, false);
    order.searchable = true;
    spec(
        name,
        vec![
            ("0-entry", entry("1-wait")),
            ("1-wait", wait("e", None, vec![to_exit])),
            ("2-exit", exit()),
        ],
        vec![order, var_def("note", VariableType::Str, false)],
    )
}

fn search_req(spec: &str, var: &str, value: VariableValue) -> SearchVariableRequest {
    SearchVariableRequest {
        wf_spec_name: spec.into(),
        var_name: var.into(),
        value: Some(value),
        ..Default::default()
    }
}

fn search(h: &Harness, req: SearchVariableRequest) -> Result<VariableIdList, Rejection> {
    h.query(|t| query::search_variables(t, &req))
}

/// The WfRun ids a search finds, in the order it gives them.
fn found(h: &Harness, spec: &str, value: &str) -> Vec<String> {
    search(h, search_req(spec, "order", values::str(value)))
        .unwrap()
        .results
        .into_iter()
        .map(|v| {
            assert_eq!(v.name, "order");
            assert_eq!(v.thread_run_number, 0);
            v.wf_run_id.unwrap().id
        })
        .collect()
}

fn assert_index_agrees(h: &Harness) {
    let problems = h.read(|t| variable_index::audit(t).unwrap());
    assert!(problems.is_empty(), "{problems:?}");
}

fn run_order(h: &mut Harness, spec: &str, id: &str, order: &str) {
    h.run_with(
        spec,
        id,
        BTreeMap::from([
            ("order".to_string(), values::str(order)),
            ("note".to_string(), values::str(order)),
        ]),
    );
}

/// Invariant: a search lists exactly the WfRuns whose variable holds the value now, oldest
/// first: a mutation moves a WfRun from its old value to its new one, and a deleted WfRun is
/// found no more.
#[test]
fn a_search_follows_runs_mutations_and_deletes() {
    let mut h = Harness::new();
    h.put_def("e");
    h.put_spec(order_spec("orders"));
    run_order(&mut h, "orders", "wf-a", "42");
    h.advance_ms(5);
    run_order(&mut h, "orders", "wf-b", "42");
    run_order(&mut h, "orders", "wf-c", "7");
    assert_eq!(found(&h, "orders", "42"), ["wf-a", "wf-b"]);
    assert_eq!(found(&h, "orders", "7"), ["wf-c"]);
    assert!(found(&h, "orders", "8").is_empty());
    assert_index_agrees(&h);

    // The event's content becomes wf-a's order.
    h.post("wf-a", "e", values::str("8"));
    assert_eq!(h.status("wf-a"), LhStatus::Completed);
    assert_eq!(found(&h, "orders", "42"), ["wf-b"]);
    assert_eq!(found(&h, "orders", "8"), ["wf-a"]);
    assert_index_agrees(&h);

    h.ok(Kind::DeleteWfRun(DeleteWfRunRequest {
        id: Some(wf_id("wf-b")),
    }));
    assert!(found(&h, "orders", "42").is_empty());
    assert_index_agrees(&h);
}

/// Invariant: a mutation that fails puts every variable back, and its index row with it.
#[test]
fn a_failed_mutation_leaves_the_index_at_the_old_value() {
    let mut h = Harness::new();
    h.put_def("e");
    let mut s = order_spec("orders");
    // order = the event's content, then n /= 0 fails the edge.
    let edge = &mut s
        .thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .nodes
        .get_mut("1-wait")
        .unwrap()
        .outgoing_edges[0];
    edge.variable_mutations.push(VariableMutation {
        lhs_name: "n".into(),
        operation: VariableMutationType::Divide as i32,
        rhs_value: Some(variable_mutation::RhsValue::LiteralValue(values::int(0))),
        ..Default::default()
    });
    s.thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .variable_defs
        .push(var_def("n", VariableType::Int, false));
    h.put_spec(s);
    h.run_with(
        "orders",
        "wf-a",
        BTreeMap::from([
            ("order".to_string(), values::str("42")),
            ("n".to_string(), values::int(1)),
        ]),
    );
    h.post("wf-a", "e", values::str("8"));
    assert_eq!(h.status("wf-a"), LhStatus::Error);
    assert_eq!(h.variable("wf-a", "order"), values::str("42"));
    assert_eq!(found(&h, "orders", "42"), ["wf-a"]);
    assert!(found(&h, "orders", "8").is_empty());
    assert_index_agrees(&h);
}

/// Invariant: pages follow each other without loss or repeat, and a version narrows the search
/// to the WfRuns of that version.
#[test]
fn pages_and_versions() {
    let mut h = Harness::new();
    h.put_def("e");
    h.put_spec(order_spec("orders"));
    for i in 0..5 {
        run_order(&mut h, "orders", &format!("wf-{i}"), "x");
        h.advance_ms(1);
    }
    // A new entrypoint variable is a new major version.
    let mut v1 = order_spec("orders");
    v1.thread_specs
        .get_mut("entrypoint")
        .unwrap()
        .variable_defs
        .push(var_def("extra", VariableType::Int, false));
    let new_id = h.put_spec(v1).id.unwrap();
    assert_eq!((new_id.major_version, new_id.revision), (1, 0));
    run_order(&mut h, "orders", "wf-new", "x");

    let mut seen = Vec::new();
    let mut req = search_req("orders", "order", values::str("x"));
    req.limit = Some(2);
    loop {
        let page = search(&h, req.clone()).unwrap();
        assert!(page.results.len() <= 2);
        seen.extend(page.results.into_iter().map(|v| v.wf_run_id.unwrap().id));
        match page.bookmark {
            Some(b) => req.bookmark = Some(b),
            None => break,
        }
    }
    assert_eq!(seen, ["wf-0", "wf-1", "wf-2", "wf-3", "wf-4", "wf-new"]);

    let mut only_v1 = search_req("orders", "order", values::str("x"));
    only_v1.wf_spec_major_version = Some(1);
    only_v1.wf_spec_revision = Some(0);
    let ids: Vec<_> = search(&h, only_v1)
        .unwrap()
        .results
        .into_iter()
        .map(|v| v.wf_run_id.unwrap().id)
        .collect();
    assert_eq!(ids, ["wf-new"]);
    assert_index_agrees(&h);
}

fn invalid_containing(r: Result<VariableIdList, Rejection>, needle: &str) {
    match r {
        Err(Rejection::InvalidArgument(m)) => {
            assert!(m.contains(needle), "message '{m}' lacks '{needle}'")
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

/// What LittleHorse refuses is INVALID_ARGUMENT naming the problem.
#[test]
fn searches_lh_refuses_are_invalid_argument() {
    let mut h = Harness::new();
    h.put_def("e");
    h.put_spec(order_spec("orders"));
    run_order(&mut h, "orders", "wf-a", "42");
    invalid_containing(
        search(&h, search_req("nope", "order", values::str("42"))),
        "WfSpec 'nope' not found",
    );
    invalid_containing(
        search(&h, search_req("orders", "nope", values::str("42"))),
        "declares no variable 'nope'",
    );
    invalid_containing(
        search(&h, search_req("orders", "note", values::str("42"))),
        "not searchable",
    );
    invalid_containing(
        search(&h, search_req("orders", "order", values::int(42))),
        "variable 'order' is STR, the value is INT",
    );
    invalid_containing(
        search(&h, search_req("orders", "order", values::null())),
        "not supported",
    );
    let mut half = search_req("orders", "order", values::str("42"));
    half.wf_spec_major_version = Some(0);
    invalid_containing(search(&h, half), "needs wf_spec_revision");
    // A revision alone is ignored, as LittleHorse ignores it.
    let mut revision_only = search_req("orders", "order", values::str("42"));
    revision_only.wf_spec_revision = Some(3);
    assert_eq!(search(&h, revision_only).unwrap().results.len(), 1);
    let mut bad_bookmark = search_req("orders", "order", values::str("42"));
    bad_bookmark.bookmark = Some(vec![0xff, 0x01]);
    invalid_containing(search(&h, bad_bookmark), "bookmark");
}

/// A spec asking for what Halter does not index is refused by name, not silently ignored.
#[test]
fn json_indexes_are_refused_by_name() {
    let mut h = Harness::new();
    h.put_def("e");
    let mut s = order_spec("orders");
    s.thread_specs.get_mut("entrypoint").unwrap().variable_defs[0]
        .json_indexes
        .push(JsonIndex {
            field_path: "$.a".into(),
            field_type: VariableType::Str as i32,
        });
    match h.rejected(Kind::PutWfSpec(s)) {
        Rejection::InvalidArgument(m) => assert!(m.contains("json_indexes"), "{m}"),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

/// Invariant: a state from a build older than the index (variables, no index rows, no marker)
/// gets exactly the rows its searchable variables call for, once; a state that has the marker
/// is left alone.
#[test]
fn an_index_missing_from_an_older_state_is_built_once() {
    let mut h = Harness::new();
    h.put_def("e");
    h.put_spec(order_spec("orders"));
    run_order(&mut h, "orders", "wf-a", "42");
    run_order(&mut h, "orders", "wf-b", "7");
    let with_index = h.digest();
    // What an older build left: the same variables, an empty index.
    let txn = h.store.begin_write().unwrap();
    {
        let mut t = halter_storage::Tables::new(&txn);
        t.variables_by_value
            .open_mut()
            .unwrap()
            .retain(|_, _| false)
            .unwrap();
    }
    txn.commit().unwrap();
    assert!(found(&h, "orders", "42").is_empty());
    assert!(!h.read(|t| variable_index::audit(t).unwrap()).is_empty());

    assert!(h.build_missing_indexes());
    assert_eq!(found(&h, "orders", "42"), ["wf-a"]);
    assert_eq!(found(&h, "orders", "7"), ["wf-b"]);
    assert_index_agrees(&h);
    assert_ne!(h.digest(), with_index, "the marker is part of the state");
    // Built once: a later open finds the marker and changes nothing.
    let after = h.digest();
    assert!(!h.build_missing_indexes());
    assert_eq!(h.digest(), after);
}
