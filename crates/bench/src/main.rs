//! `halter-bench`: the load generator behind `docs/benchmarks.md`.
//!
//! Closed-loop workloads with a warm-up and bounded runs (a count and a time limit), latency
//! histograms, and one JSON line per measured point on stdout (and appended to `--out`).
//! Workloads: W1 durable writes (Halter or etcd), W2 deliver-to-resume, W3 timers, W4 failover,
//! W5 scale; `smoke` is the short self-check CI runs. See `crates/bench/compare.sh` for how
//! they are run against the peers.

#[cfg(not(madsim))]
mod driver;
#[cfg(all(not(madsim), feature = "etcd"))]
mod etcd;
#[cfg(not(madsim))]
mod halter;
#[cfg(not(madsim))]
mod sys;
#[cfg(not(madsim))]
mod workloads;

#[cfg(madsim)]
fn main() {
    // The benchmarks drive real processes over real sockets; there is nothing to simulate.
}

#[cfg(not(madsim))]
fn main() -> anyhow::Result<()> {
    use clap::Parser;
    let cli = workloads::Cli::parse();
    let rt = match cli.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b.enable_all().build()?
        }
    };
    rt.block_on(workloads::run(cli))
}
