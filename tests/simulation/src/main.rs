//! `halter-sim`: runs the whole Halter cluster (real node code: gRPC, Raft, storage, state
//! machine, timer service) inside madsim, under crashes that lose unsynced writes, partitions,
//! message loss and delay, with every run reproducible from its seed.
//!
//! Build and run it through `tests/simulation/run.sh` (it sets `--cfg madsim`). For each seed it
//! prints `seed=S digest=HEX ok` or the failure and the command that reproduces it, and ends
//! with `N passed, M failed`.

#[cfg(madsim)]
mod cluster;
#[cfg(madsim)]
mod invariants;
#[cfg(madsim)]
mod oracle;
#[cfg(madsim)]
mod scenario;
#[cfg(madsim)]
mod task_worker;
#[cfg(madsim)]
mod workload;

#[cfg(not(madsim))]
fn main() {
    eprintln!(
        "halter-sim must be built with RUSTFLAGS=\"--cfg madsim\": use tests/simulation/run.sh"
    );
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seeds = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (args[i].as_str(), value) {
            ("--seed", Some(s)) => seeds.push(s),
            ("--seeds", Some(n)) => seeds.extend(1..=n),
            ("--first", Some(f)) => {
                let n = seeds.len() as u64;
                seeds = (f..f + n).collect();
            }
            _ => {
                eprintln!("usage: halter-sim (--seed S)... | --seeds N [--first F]");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    if seeds.is_empty() {
        seeds.push(1);
    }
    let (mut passed, mut failed) = (0, 0);
    for seed in seeds {
        let started = std::time::Instant::now();
        let result = std::panic::catch_unwind(|| scenario::run_seed(seed));
        let wall = started.elapsed();
        match result {
            Ok(Ok(report)) => {
                passed += 1;
                println!(
                    "seed={seed} digest={} ok ({} nodes, {} acked events, {} runs, {} faults, {} purged, {} interrupts, {} handlers, {} tasks done, {} correlated, {} thrown, {} awaited, {} reviews done, {} cancelled, {} rescued, {} scheduled, {} families, {} gathers of {} parts, {} checkpoints ({} read back), {:.1}s wall)",
                    report.digest,
                    report.nodes,
                    report.acked_events,
                    report.runs,
                    report.faults,
                    report.purged_nodes,
                    report.coverage.interrupts,
                    report.coverage.failure_handlers,
                    report.coverage.tasks_succeeded,
                    report.coverage.correlated_events,
                    report.coverage.workflow_events,
                    report.coverage.awaited,
                    report.coverage.reviews_done,
                    report.coverage.reviews_cancelled,
                    report.coverage.rescued,
                    report.coverage.scheduled_runs,
                    report.coverage.families_completed,
                    report.coverage.gathers_completed,
                    report.coverage.gathered_parts,
                    report.coverage.checkpoints,
                    report.coverage.checkpoints_read,
                    wall.as_secs_f64()
                );
            }
            Ok(Err(why)) => {
                failed += 1;
                println!("seed={seed} FAILED: {why}");
                println!("  reproduce: HALTER_SIM_SEED={seed} bash tests/simulation/run.sh");
            }
            Err(panic) => {
                failed += 1;
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                println!("seed={seed} FAILED: panicked: {why}");
                println!("  reproduce: HALTER_SIM_SEED={seed} bash tests/simulation/run.sh");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
