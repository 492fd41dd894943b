//! The closed-loop driver: `conc` workers each issue one operation after another; operations
//! that finish inside the measured window (after the warm-up, until `total` operations or
//! `duration`, whichever comes first) count. Each worker keeps its own histogram, merged at the
//! end, so recording a latency never contends.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::sys::{own_ticks, HostCpu, Procs};

#[derive(Clone, Debug)]
pub struct Bounds {
    pub conc: usize,
    pub total: u64,
    pub duration: Duration,
    pub warmup: Duration,
}

/// Latencies in microseconds, 1 µs to 100 s, three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

pub struct Outcome {
    pub hist: Histogram<u64>,
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub host_cpu_pct: f64,
    pub server_cpu_pct: Vec<f64>,
    pub server_rss_mib: Vec<f64>,
    /// The load generator's own CPU (it shares the machine with the servers).
    pub client_cpu_pct: f64,
}

impl Outcome {
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The figures every workload reports, in the key names `../shared/bench/peers` uses.
    pub fn json(&self) -> Value {
        let ms = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        json!({
            "ops": self.ops,
            "errors": self.errors,
            "first_error": self.first_error,
            "elapsed_s": round3(self.elapsed.as_secs_f64()),
            "ops_per_s": round1(self.ops_per_s()),
            "p50_ms": round3(ms(0.50)),
            "p90_ms": round3(ms(0.90)),
            "p99_ms": round3(ms(0.99)),
            "max_ms": round3(self.hist.max() as f64 / 1000.0),
            "mean_ms": round3(self.hist.mean() / 1000.0),
            "host_cpu_pct_of_all_cores": round1(self.host_cpu_pct),
            "server_cpu_pct": self.server_cpu_pct.iter().map(|v| round1(*v)).collect::<Vec<_>>(),
            "server_rss_mib": self.server_rss_mib.iter().map(|v| round1(*v)).collect::<Vec<_>>(),
            "client_cpu_pct": round1(self.client_cpu_pct),
        })
    }
}

pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Runs `op(worker, i)` in a closed loop on `b.conc` workers and measures it.
pub async fn closed_loop<F, Fut>(b: &Bounds, procs: &Procs, op: F) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let measure_from = start + b.warmup;
    let stop = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let end_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));

    let mut workers = Vec::with_capacity(b.conc);
    for w in 0..b.conc {
        let (op, stop, counted, errors, first_error, end_at) = (
            op.clone(),
            stop.clone(),
            counted.clone(),
            errors.clone(),
            first_error.clone(),
            end_at.clone(),
        );
        let total = b.total;
        let measure_until = measure_from + b.duration;
        workers.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let res = op(w, i).await;
                i += 1;
                let t1 = Instant::now();
                if t0 < measure_from {
                    continue;
                }
                match res {
                    Ok(()) => {
                        // Only operations that finish inside the window count, at most `total`.
                        if t1 > measure_until {
                            break;
                        }
                        let n = counted.fetch_add(1, Ordering::Relaxed);
                        if n >= total {
                            break;
                        }
                        let _ = hist.record((t1 - t0).as_micros().max(1) as u64);
                        if n + 1 == total {
                            stop.store(true, Ordering::Relaxed);
                            end_at
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(t1);
                        }
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            hist
        }));
    }

    tokio::time::sleep_until(measure_from.into()).await;
    let cpu0 = HostCpu::read();
    let p0 = procs.cpu_ticks();
    let own0 = own_ticks();
    let measured_start = Instant::now();
    {
        let stop = stop.clone();
        let deadline = measure_from + b.duration;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::Relaxed);
    }
    let stopped = Instant::now();
    let cpu1 = HostCpu::read();
    let p1 = procs.cpu_ticks();
    let own1 = own_ticks();
    let rss = procs.rss_mib();

    let mut hist = histogram();
    for w in workers {
        if let Ok(h) = w.await {
            let _ = hist.add(&h);
        }
    }
    let end = end_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(stopped)
        .min(stopped);
    let elapsed = end.saturating_duration_since(measured_start);
    let ops = hist.len();
    Outcome {
        hist,
        ops,
        errors: errors.load(Ordering::Relaxed),
        first_error: take_first(&first_error),
        elapsed,
        host_cpu_pct: HostCpu::busy_pct(&cpu0, &cpu1),
        server_cpu_pct: Procs::cpu_pct(&p0, &p1, stopped - measured_start),
        server_rss_mib: rss,
        client_cpu_pct: Procs::cpu_pct(&[own0], &[own1], stopped - measured_start)
            .first()
            .copied()
            .unwrap_or(0.0),
    }
}

fn take_first(e: &Mutex<Option<String>>) -> Option<String> {
    e.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
