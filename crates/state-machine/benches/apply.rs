//! What the deterministic core costs per command, without Raft, gRPC or fsync: W1's
//! PutExternalEvent and W2's RunWf + PutExternalEvent, applied in batches of 64 commands per
//! transaction (as a node applies a busy log), on a redb file whose commits are not synced.
//! Ids are spread as `halter-bench` spreads them: 256 W1 clients, 64 W2 clients, each with
//! its own id prefix, so every batch touches as many places in each table as in the cluster.
//!
//! Every replica pays this for every command, so on a 3-node cluster on one machine it counts
//! three times. It also times a `GetWfRun` as a node serves it (a read transaction, the tables,
//! the query) over the W2 runs just applied. Run with
//! `cargo bench -p halter-state-machine --bench apply`; `HALTER_APPLY_N` sets the commands per
//! repetition (default 20,000), `HALTER_APPLY_DIR` where the file goes.

use std::time::Instant;

use halter_api::build::wait_once_spec;
use halter_api::halter::command::Kind;
use halter_api::littlehorse::{
    variable_value, ExternalEventDefId, LhStatus, PutExternalEventDefRequest,
    PutExternalEventRequest, RunWfRequest, VariableValue, WfRunId,
};
use halter_state_machine::{apply, command, query};
use halter_storage::{ReadTables, Store, Tables};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REPS: usize = 5;

fn payload() -> VariableValue {
    let mut s = String::from("{\"order\":\"bench\",\"note\":\"");
    while s.len() + 2 < 200 {
        s.push('x');
    }
    s.push_str("\"}");
    VariableValue {
        value: Some(variable_value::Value::JsonObj(s)),
    }
}

fn put_event(wf_run_id: String, def: &str, guid: String) -> Kind {
    Kind::PutExternalEvent(PutExternalEventRequest {
        wf_run_id: Some(WfRunId {
            id: wf_run_id,
            parent_wf_run_id: None,
        }),
        external_event_def_id: Some(ExternalEventDefId { name: def.into() }),
        guid: Some(guid),
        content: Some(payload()),
        thread_run_number: None,
        node_run_position: None,
    })
}

struct Bench {
    store: Store,
    now: i64,
}

impl Bench {
    fn new(path: &std::path::Path) -> Self {
        let _ = std::fs::remove_file(path);
        let store = Store::open(path).expect("open the state file");
        let mut b = Bench {
            store,
            now: 1_700_000_000_000,
        };
        b.apply_batch(vec![
            Kind::PutExternalEventDef(PutExternalEventDefRequest {
                name: "w1".into(),
                ..Default::default()
            }),
            Kind::PutExternalEventDef(PutExternalEventDefRequest {
                name: "w2-go".into(),
                ..Default::default()
            }),
            Kind::PutWfSpec(wait_once_spec("w2", "w2-go", None)),
        ]);
        b
    }

    /// Applies `kinds` in one unsynced transaction; panics on any rejection (a benchmark of
    /// rejected commands would measure nothing).
    fn apply_batch(&mut self, kinds: Vec<Kind>) {
        self.now += 1;
        let mut txn = self.store.begin_write().expect("begin");
        txn.set_durability(redb::Durability::None)
            .expect("durability");
        {
            let mut tables = Tables::new(&txn);
            for kind in kinds {
                let applied = apply(&mut tables, &command(kind, self.now)).expect("apply");
                if let Err(r) = applied.response {
                    panic!("rejected: {r:?}");
                }
            }
        }
        txn.commit().expect("commit");
    }
}

/// Runs `n` units of `unit` (each a list of commands applied in order; the i-th commands of 64
/// units share a transaction) and returns microseconds per unit.
// The clock times the benchmark around `apply`; nothing applied ever reads it.
#[allow(clippy::disallowed_methods)]
fn measure(b: &mut Bench, n: usize, unit: impl Fn(usize) -> Vec<Kind>) -> f64 {
    let batch = batch();
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let units: Vec<Vec<Kind>> = (i..(i + batch).min(n)).map(&unit).collect();
        let phases = units.first().map_or(0, Vec::len);
        for phase in 0..phases {
            b.apply_batch(units.iter().map(|u| u[phase].clone()).collect());
        }
        i += batch;
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Commands per transaction (`HALTER_APPLY_BATCH`, default 64).
fn batch() -> usize {
    std::env::var("HALTER_APPLY_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

/// Reads each of `ids` as `GetWfRun` does on a node, each in its own read transaction, and
/// returns microseconds per read; panics unless each is COMPLETED.
#[allow(clippy::disallowed_methods)]
fn measure_reads(b: &Bench, ids: &[String]) -> f64 {
    let started = Instant::now();
    for id in ids {
        let txn = b.store.begin_read().expect("begin read");
        let tables = ReadTables::new(&txn);
        let run = query::get_wf_run(
            &tables,
            &WfRunId {
                id: id.clone(),
                parent_wf_run_id: None,
            },
        )
        .expect("get_wf_run");
        assert_eq!(run.status(), LhStatus::Completed, "{id}");
    }
    started.elapsed().as_secs_f64() * 1e6 / ids.len() as f64
}

/// The WfRun id of W2's `i`-th workflow in repetition `rep`: 64 clients, each its own prefix.
fn w2_id(rep: usize, i: usize) -> String {
    format!("w2-{rep}-{}-{}", i % 64, i / 64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Test runners (`cargo nextest --all-targets`) list a bench's tests first: it has none.
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes `--bench`; run any other way (`cargo test --all-targets`, a debug
    // build) it applies a few commands once, to show the program works, and measures nothing.
    let benching = args.iter().any(|a| a == "--bench");
    let (n, reps) = if benching {
        let n = std::env::var("HALTER_APPLY_N")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20_000);
        (n, REPS)
    } else {
        (64, 1)
    };
    let dir = std::env::var_os("HALTER_APPLY_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("halter-apply-bench-{}.redb", std::process::id()));
    let mut w1 = Vec::new();
    let mut w2 = Vec::new();
    let mut reads = Vec::new();
    for rep in 0..reps {
        let mut b = Bench::new(&path);
        w1.push(measure(&mut b, n, |i| {
            vec![put_event(
                format!("w1-{rep}-{}-{}", i % 256, i / 256),
                "w1",
                format!("{rep:08x}{i:024x}"),
            )]
        }));
        w2.push(measure(&mut b, n, |i| {
            let id = w2_id(rep, i);
            vec![
                Kind::RunWf(RunWfRequest {
                    wf_spec_name: "w2".into(),
                    id: Some(id.clone()),
                    ..Default::default()
                }),
                put_event(id, "w2-go", format!("{rep:08x}{i:024x}")),
            ]
        }));
        let ids: Vec<String> = (0..n).map(|i| w2_id(rep, i)).collect();
        reads.push(measure_reads(&b, &ids));
    }
    let _ = std::fs::remove_file(&path);
    println!(
        "apply w1 PutExternalEvent: {:.1} us/event (median of {reps}, {n} each: {:?})",
        median(w1.clone()),
        w1.iter().map(|v| v.round()).collect::<Vec<_>>()
    );
    println!(
        "apply w2 RunWf+PutExternalEvent: {:.1} us/workflow (median of {reps}, {n} each: {:?})",
        median(w2.clone()),
        w2.iter().map(|v| v.round()).collect::<Vec<_>>()
    );
    println!(
        "read GetWfRun: {:.1} us/read (median of {reps}, {n} each: {:?})",
        median(reads.clone()),
        reads.iter().map(|v| v.round()).collect::<Vec<_>>()
    );
}
