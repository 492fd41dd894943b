#![allow(clippy::unwrap_used)]
//! Property tests over random interleavings of RunWf, PutExternalEvent (duplicates, retries,
//! before and after the node), time passing, timer firings, stop/resume and deletes.
//!
//! Invariants checked after every step (each is written next to its check below):
//! * no event is claimed twice, and every claim is recorded on both sides;
//! * the oldest matching unclaimed event is the one claimed;
//! * a timed-out NodeRun never completes, and a completed one never timed out;
//! * a rejected command changes nothing;
//! * the same entries applied to two fresh stores give byte-identical state.

mod support;

use std::collections::BTreeMap;

use halter_api::halter::{command::Kind, FireTimers, StoredExternalEvent, TimerKey};
use halter_api::littlehorse::*;
use halter_api::values;
use halter_state_machine::{apply, command, timers};
use halter_storage::{codec, digest::digest, ReadTables, Store, Tables};
use proptest::prelude::*;
use redb::{ReadableTable, ReadableTableMetadata};
use support::*;

#[derive(Debug, Clone)]
enum Op {
    Run(u8),
    Put {
        wf: u8,
        def: u8,
        guid: u8,
        content: u8,
        thread: Option<u8>,
        pos: Option<u8>,
    },
    Tick(u16),
    Fire,
    Stop(u8),
    Resume(u8),
    Delete(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..4).prop_map(Op::Run),
        6 => (0u8..5, 0u8..2, 0u8..6, 0u8..3, proptest::option::weighted(0.2, 0u8..2), proptest::option::weighted(0.2, 0u8..4))
            .prop_map(|(wf, def, guid, content, thread, pos)| Op::Put { wf, def, guid, content, thread, pos }),
        3 => (0u16..4000).prop_map(Op::Tick),
        2 => Just(Op::Fire),
        1 => (0u8..4).prop_map(Op::Stop),
        1 => (0u8..4).prop_map(Op::Resume),
        1 => (0u8..4).prop_map(Op::Delete),
    ]
}

const DEFS: [&str; 2] = ["a", "b"];

/// entry -> wait a (5 s) -> wait a (3 s) -> wait b -> exit
fn the_spec() -> PutWfSpecRequest {
    spec(
        "w",
        vec![
            ("0-entry", entry("1-a")),
            ("1-a", wait("a", Some(5), vec![edge("2-a")])),
            ("2-a", wait("a", Some(3), vec![edge("3-b")])),
            ("3-b", wait("b", None, vec![edge("4-exit")])),
            ("4-exit", exit()),
        ],
        vec![],
    )
}

/// Turns an op into the command a leader would propose at `now` (None: nothing to propose).
fn to_kind(op: &Op, store: &Store, now: i64) -> Option<Kind> {
    let wf = |i: u8| format!("wf{i}");
    Some(match op {
        Op::Run(i) => Kind::RunWf(RunWfRequest {
            wf_spec_name: "w".into(),
            id: Some(wf(*i)),
            ..Default::default()
        }),
        Op::Put {
            wf: w,
            def,
            guid,
            content,
            thread,
            pos,
        } => Kind::PutExternalEvent(PutExternalEventRequest {
            wf_run_id: Some(wf_id(&wf(*w))),
            external_event_def_id: Some(ExternalEventDefId {
                name: DEFS[*def as usize].into(),
            }),
            guid: Some(format!("g{guid}")),
            content: Some(values::int(*content as i64)),
            thread_run_number: thread.map(i32::from),
            node_run_position: pos.map(i32::from),
        }),
        Op::Fire => {
            let txn = store.begin_read().unwrap();
            let t = ReadTables::new(&txn);
            let due = timers::due(t.timers().unwrap(), now, 1000).unwrap();
            if due.is_empty() {
                return None;
            }
            Kind::FireTimers(FireTimers {
                timers: due
                    .into_iter()
                    .map(|(due_ms, id)| TimerKey { due_ms, id })
                    .collect(),
            })
        }
        Op::Stop(i) => Kind::StopWfRun(StopWfRunRequest {
            wf_run_id: Some(wf_id(&wf(*i))),
            thread_run_number: 0,
        }),
        Op::Resume(i) => Kind::ResumeWfRun(ResumeWfRunRequest {
            wf_run_id: Some(wf_id(&wf(*i))),
            thread_run_number: 0,
        }),
        Op::Delete(i) => Kind::DeleteWfRun(DeleteWfRunRequest {
            id: Some(wf_id(&wf(*i))),
        }),
        Op::Tick(_) => return None,
    })
}

fn apply_one(store: &Store, kind: Kind, now: i64) -> bool {
    let txn = store.begin_write().unwrap();
    let ok = {
        let mut tables = Tables::new(&txn);
        apply(&mut tables, &command(kind, now))
            .unwrap()
            .response
            .is_ok()
    };
    txn.commit().unwrap();
    ok
}

fn events(t: &ReadTables) -> Vec<StoredExternalEvent> {
    t.external_events()
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| codec::decode(r.unwrap().1.value()).unwrap())
        .collect()
}

fn node_runs(t: &ReadTables) -> Vec<NodeRun> {
    t.node_runs()
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| codec::decode(r.unwrap().1.value()).unwrap())
        .collect()
}

fn check_invariants(store: &Store) -> Result<(), TestCaseError> {
    let txn = store.begin_read().unwrap();
    let t = ReadTables::new(&txn);
    let events = events(&t);
    let nodes = node_runs(&t);
    let mut claims: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for nr in &nodes {
        let Some(node_run::NodeType::ExternalEvent(ee)) = &nr.node_type else {
            continue;
        };
        // A timed-out NodeRun never completes; a completed one never timed out.
        if ee.timed_out {
            prop_assert_eq!(nr.status(), LhStatus::Error);
            prop_assert!(ee.external_event_id.is_none());
        }
        if nr.status() == LhStatus::Completed {
            prop_assert!(!ee.timed_out);
            prop_assert!(ee.external_event_id.is_some());
        }
        if let Some(id) = &ee.external_event_id {
            let key = (
                id.wf_run_id.as_ref().unwrap().id.clone(),
                id.external_event_def_id.as_ref().unwrap().name.clone(),
                id.guid.clone(),
            );
            *claims.entry(key).or_default() += 1;
        }
    }
    // No event is claimed twice, and a claim is recorded on both the event and the NodeRun.
    for (key, n) in &claims {
        prop_assert_eq!(*n, 1, "event {:?} claimed by {} NodeRuns", key, n);
    }
    for s in &events {
        let e = s.event.as_ref().unwrap();
        let id = e.id.as_ref().unwrap();
        let key = (
            id.wf_run_id.as_ref().unwrap().id.clone(),
            id.external_event_def_id.as_ref().unwrap().name.clone(),
            id.guid.clone(),
        );
        prop_assert_eq!(
            e.claimed,
            claims.contains_key(&key),
            "event {:?} claimed flag disagrees with NodeRuns",
            key
        );
    }
    // The oldest matching unclaimed event is the one claimed: no event still unclaimed now is
    // older than a claimed one and would have matched its NodeRun.
    let order = |s: &StoredExternalEvent| {
        (
            halter_state_machine::time::ms(s.event.as_ref().unwrap().created_at.as_ref().unwrap()),
            s.seq,
        )
    };
    for c in events.iter().filter(|s| s.event.as_ref().unwrap().claimed) {
        let ce = c.event.as_ref().unwrap();
        let cid = ce.id.as_ref().unwrap();
        let (thread, pos) = (ce.thread_run_number.unwrap(), ce.node_run_position.unwrap());
        for u in events.iter().filter(|s| !s.event.as_ref().unwrap().claimed) {
            let uid = u.event.as_ref().unwrap().id.as_ref().unwrap();
            let same_stream = uid.wf_run_id == cid.wf_run_id
                && uid.external_event_def_id == cid.external_event_def_id;
            let matches = u.target_thread_run_number.is_none_or(|t| t == thread)
                && u.target_node_run_position.is_none_or(|p| p == pos);
            prop_assert!(
                !(same_stream && matches && order(u) < order(c)),
                "older unclaimed event {:?} was passed over for {:?}",
                uid,
                cid
            );
        }
    }
    // Every unclaimed event is in the unclaimed index, and nothing else is.
    prop_assert_eq!(
        t.unclaimed_events().unwrap().len().unwrap() as usize,
        events
            .iter()
            .filter(|s| !s.event.as_ref().unwrap().claimed)
            .count()
    );
    prop_assert_eq!(
        t.events_by_def().unwrap().len().unwrap() as usize,
        events.len()
    );
    Ok(())
}

fn setup(store: &Store, now: i64) {
    for d in DEFS {
        assert!(apply_one(
            store,
            Kind::PutExternalEventDef(PutExternalEventDefRequest {
                name: d.into(),
                ..Default::default()
            }),
            now
        ));
    }
    assert!(apply_one(store, Kind::PutWfSpec(the_spec()), now));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_every_invariant(ops in proptest::collection::vec(op(), 1..60)) {
        let a = Store::in_memory().unwrap();
        let b = Store::in_memory().unwrap();
        let mut now = 1_700_000_000_000i64;
        setup(&a, now);
        setup(&b, now);
        let mut log = Vec::new();
        for op in &ops {
            if let Op::Tick(ms) = op {
                now += i64::from(*ms);
                continue;
            }
            let Some(kind) = to_kind(op, &a, now) else { continue };
            let before = digest(&a.begin_read().unwrap()).unwrap();
            let accepted = apply_one(&a, kind.clone(), now);
            if !accepted {
                // A rejected command changes nothing.
                prop_assert_eq!(before, digest(&a.begin_read().unwrap()).unwrap());
            }
            log.push((kind, now));
            check_invariants(&a)?;
        }
        // The same entries applied to a second fresh store give byte-identical state.
        for (kind, at) in log {
            apply_one(&b, kind, at);
        }
        prop_assert_eq!(digest(&a.begin_read().unwrap()).unwrap(), digest(&b.begin_read().unwrap()).unwrap());
    }

    /// Arbitrary bytes, decoded as a log entry, never panic the state machine; if the entry is
    /// rejected, nothing changed.
    #[test]
    fn arbitrary_entries_never_panic_and_rejections_change_nothing(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let store = Store::in_memory().unwrap();
        setup(&store, 1_700_000_000_000);
        assert!(apply_one(&store, Kind::RunWf(RunWfRequest { wf_spec_name: "w".into(), id: Some("wf0".into()), ..Default::default() }), 1_700_000_000_000));
        if let Ok(cmd) = <halter_api::halter::Command as prost::Message>::decode(bytes.as_slice()) {
            let before = digest(&store.begin_read().unwrap()).unwrap();
            let txn = store.begin_write().unwrap();
            let out = {
                let mut tables = Tables::new(&txn);
                apply(&mut tables, &cmd)
            };
            txn.commit().unwrap();
            if let Ok(applied) = out {
                if applied.response.is_err() {
                    prop_assert_eq!(before, digest(&store.begin_read().unwrap()).unwrap());
                }
            }
            check_invariants(&store)?;
        }
    }

    /// Structured requests with hostile fields (odd names, negative numbers, wrong types).
    #[test]
    fn hostile_requests_are_rejected_cleanly(
        name in "\\PC{0,12}",
        n in any::<i32>(),
        content in prop_oneof![Just(values::str("x")), Just(values::int(-1)), Just(values::json_obj("{")), Just(values::null())],
    ) {
        let store = Store::in_memory().unwrap();
        let now = 1_700_000_000_000;
        setup(&store, now);
        let kinds = vec![
            Kind::PutExternalEventDef(PutExternalEventDefRequest { name: name.clone(), ..Default::default() }),
            Kind::PutExternalEvent(PutExternalEventRequest {
                wf_run_id: Some(wf_id(&name)),
                external_event_def_id: Some(ExternalEventDefId { name: "a".into() }),
                guid: Some(name.clone()),
                content: Some(content.clone()),
                thread_run_number: Some(n),
                node_run_position: Some(n),
            }),
            Kind::RunWf(RunWfRequest { wf_spec_name: name.clone(), major_version: Some(n), id: Some(name.clone()), ..Default::default() }),
            Kind::StopWfRun(StopWfRunRequest { wf_run_id: Some(wf_id(&name)), thread_run_number: n }),
            Kind::DeleteWfSpec(DeleteWfSpecRequest { id: Some(WfSpecId { name: name.clone(), major_version: n, revision: n }) }),
            Kind::FireTimers(FireTimers { timers: vec![TimerKey { due_ms: i64::from(n), id: name.clone() }] }),
        ];
        for kind in kinds {
            let before = digest(&store.begin_read().unwrap()).unwrap();
            let txn = store.begin_write().unwrap();
            let applied = {
                let mut tables = Tables::new(&txn);
                apply(&mut tables, &command(kind, now)).unwrap()
            };
            txn.commit().unwrap();
            if applied.response.is_err() {
                prop_assert_eq!(before, digest(&store.begin_read().unwrap()).unwrap());
            }
            check_invariants(&store)?;
        }
    }
}
