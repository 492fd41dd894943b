//! The workloads (W1-W5, smoke) and their command line.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use futures::future::BoxFuture;
use halter_api::littlehorse::VariableValue;
use serde_json::{json, Value};

use crate::driver::{closed_loop, histogram, round1, round3, Bounds};
use crate::halter::{self, Pool};
use crate::sys::{rss_mib, Procs};

#[derive(Parser)]
#[command(name = "halter-bench", about = "Load generator for Halter (and etcd)")]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Worker threads of the generator's runtime: 1 is a single-threaded event loop (as
    /// Restate's W2 client, on node.js, is), 0 one per core.
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Args, Clone)]
pub struct Common {
    /// Client addresses of the nodes (host:port), comma-separated; workers spread over them.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2023")]
    pub endpoints: Vec<String>,
    /// HTTP/2 connections per endpoint.
    #[arg(long, default_value_t = 4)]
    pub conns: usize,
    /// Server pids to account CPU and RSS to, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// A free-form label copied into every JSON line.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Also append every JSON line to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct Load {
    /// Concurrency levels (closed-loop workers), comma-separated; one point each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub conc: Vec<usize>,
    /// Most operations measured per point.
    #[arg(long, default_value_t = 20_000)]
    pub total: u64,
    /// Longest measured time per point, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Unmeasured load before each point, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Event payload size in bytes.
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
}

impl Load {
    pub fn bounds(&self, conc: usize) -> Bounds {
        Bounds {
            conc,
            total: self.total,
            duration: Duration::from_secs_f64(self.duration),
            warmup: Duration::from_secs_f64(self.warmup),
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// W1: durable replicated writes (PutExternalEvent, or etcd Put with --target etcd).
    W1 {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: Load,
        /// halter or etcd (etcd needs the `etcd` feature).
        #[arg(long, default_value = "halter")]
        target: String,
    },
    /// W2: RunWf of a spec that waits for an event, PutExternalEvent, GetWfRun = COMPLETED.
    W2 {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: Load,
    },
    /// W3: many WfRuns parked on timeouts, then the lateness of timeouts fired under W1 load.
    W3(W3Args),
    /// W4: kill -9 the leader under W1 load; time until writes succeed again.
    W4(W4Args),
    /// W5: W1 latency and RSS as the number of stored events grows.
    W5(W5Args),
    /// A short run of W1, W2 and W3 that fails unless every operation succeeds (CI).
    Smoke {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
struct W3Args {
    #[command(flatten)]
    common: Common,
    /// WfRuns left waiting on a timeout far in the future (pending timers).
    #[arg(long, default_value_t = 100_000)]
    pending: u64,
    /// Workers creating the pending WfRuns.
    #[arg(long, default_value_t = 64)]
    fill_conc: usize,
    /// WfRuns whose timeout is measured.
    #[arg(long, default_value_t = 1000)]
    probes: u64,
    /// The probes' timeout, seconds.
    #[arg(long, default_value_t = 2)]
    probe_timeout: i64,
    /// Seconds over which the probes are started.
    #[arg(long, default_value_t = 20.0)]
    probe_window: f64,
    /// W1 workers running while the probes wait (0: no load).
    #[arg(long, default_value_t = 64)]
    load_conc: usize,
}

#[derive(Args)]
struct W4Args {
    /// The cluster's state directory made by deploy/local-cluster.sh (cluster.env, node*.pid).
    #[arg(long)]
    cluster_dir: PathBuf,
    /// deploy/local-cluster.sh, to restart the killed node.
    #[arg(long, default_value = "deploy/local-cluster.sh")]
    script: PathBuf,
    #[arg(long, default_value_t = 5)]
    trials: usize,
    /// W1 workers writing through the kill.
    #[arg(long, default_value_t = 16)]
    conc: usize,
    #[arg(long, default_value = "")]
    pub label: String,
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
struct W5Args {
    #[command(flatten)]
    common: Common,
    /// Stored-event counts at which to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    steps: Vec<u64>,
    /// Workers filling the store between steps.
    #[arg(long, default_value_t = 128)]
    fill_conc: usize,
    /// Concurrency of the measured W1 points at each step.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub conc: Vec<usize>,
    /// Seconds measured per point.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
}

/// Prints a JSON line and appends it to `out`.
pub fn emit(out: &Option<PathBuf>, v: &Value) -> anyhow::Result<()> {
    let line = serde_json::to_string(v)?;
    println!("{line}");
    if let Some(path) = out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}

pub fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// A short random tag so that runs against the same cluster never reuse ids.
pub fn run_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::W1 {
            common,
            load,
            target,
        } => match target.as_str() {
            "halter" => w1_halter(&common, &load).await.map(|_| ()),
            "etcd" => w1_etcd(&common, &load).await,
            other => bail!("unknown target {other}: halter or etcd"),
        },
        Cmd::W2 { common, load } => w2(&common, &load).await.map(|_| ()),
        Cmd::W3(a) => w3(&a).await.map(|_| ()),
        Cmd::W4(a) => w4(&a).await,
        Cmd::W5(a) => w5(&a).await,
        Cmd::Smoke { common } => smoke(&common).await,
    }
}

const W1_DEF: &str = "bench-w1";

/// W1's operation: PutExternalEvent of `content` for a WfRun id `{prefix}-{worker}-{i}` that
/// nobody else uses, counting each success into `done`.
fn put_events(
    pool: Pool,
    prefix: String,
    content: VariableValue,
    done: Arc<AtomicU64>,
) -> impl Fn(usize, u64) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync + 'static {
    move |w, i| {
        let mut c = pool.client(w);
        let req = halter::put_event(format!("{prefix}-{w}-{i}"), W1_DEF, content.clone());
        let done = done.clone();
        Box::pin(async move {
            c.put_external_event(req).await?;
            done.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    }
}

async fn w1_halter(common: &Common, load: &Load) -> anyhow::Result<Vec<Value>> {
    let pool = Pool::connect(&common.endpoints, common.conns).await?;
    halter::ensure_def(&mut pool.client(0), W1_DEF).await?;
    let procs = Procs::new(common.pids.clone());
    let content = halter::payload(load.payload);
    let mut lines = Vec::new();
    for &conc in &load.conc {
        let tag = run_tag();
        let op = put_events(
            pool.clone(),
            format!("w1-{tag}"),
            content.clone(),
            Arc::default(),
        );
        let out = closed_loop(&load.bounds(conc), &procs, op).await;
        let line = merge(
            json!({"workload": "w1", "target": "halter", "label": common.label,
                   "endpoints": common.endpoints.len(), "conc": conc, "payload": load.payload}),
            out.json(),
        );
        emit(&common.out, &line)?;
        lines.push(line);
    }
    Ok(lines)
}

#[cfg(feature = "etcd")]
async fn w1_etcd(common: &Common, load: &Load) -> anyhow::Result<()> {
    crate::etcd::w1(common, load).await
}

#[cfg(not(feature = "etcd"))]
async fn w1_etcd(_: &Common, _: &Load) -> anyhow::Result<()> {
    bail!("this halter-bench was built without the `etcd` feature (cargo build --features etcd)")
}

#[cfg(feature = "etcd")]
pub mod etcd_support {
    //! What the etcd target shares with the Halter one.
    pub use super::{emit, merge, run_tag, Common, Load};
}

const W2_SPEC: &str = "bench-w2";
const W2_DEF: &str = "bench-w2-go";

async fn w2(common: &Common, load: &Load) -> anyhow::Result<Vec<Value>> {
    let pool = Pool::connect(&common.endpoints, common.conns).await?;
    halter::ensure_wait_spec(&mut pool.client(0), W2_SPEC, W2_DEF, None).await?;
    let procs = Procs::new(common.pids.clone());
    let content = halter::payload(load.payload);
    let mut lines = Vec::new();
    for &conc in &load.conc {
        let tag = run_tag();
        let (pool, content) = (pool.clone(), content.clone());
        let out = closed_loop(&load.bounds(conc), &procs, move |w, i| {
            let mut c = pool.client(w);
            let id = format!("w2-{tag}-{w}-{i}");
            let content = content.clone();
            async move { halter::deliver_to_resume(&mut c, W2_SPEC, W2_DEF, id, content).await }
        })
        .await;
        let line = merge(
            json!({"workload": "w2", "target": "halter", "label": common.label,
                   "endpoints": common.endpoints.len(), "conc": conc}),
            out.json(),
        );
        emit(&common.out, &line)?;
        lines.push(line);
    }
    Ok(lines)
}

const W3_PARK_SPEC: &str = "bench-w3-park";
const W3_PROBE_SPEC_PREFIX: &str = "bench-w3-probe";
const W3_DEF: &str = "bench-w3-never";
/// Parked WfRuns wait a day: their timers stay pending for the whole benchmark.
const PARK_TIMEOUT_S: i64 = 86_400;

async fn w3(a: &W3Args) -> anyhow::Result<Value> {
    let common = &a.common;
    let pool = Pool::connect(&common.endpoints, common.conns).await?;
    let probe_spec = format!("{W3_PROBE_SPEC_PREFIX}-{}s", a.probe_timeout);
    {
        let mut c = pool.client(0);
        halter::ensure_wait_spec(&mut c, W3_PARK_SPEC, W3_DEF, Some(PARK_TIMEOUT_S)).await?;
        halter::ensure_wait_spec(&mut c, &probe_spec, W3_DEF, Some(a.probe_timeout)).await?;
        halter::ensure_def(&mut c, W1_DEF).await?;
    }
    let procs = Procs::new(common.pids.clone());
    let tag = run_tag();

    // Phase 1: park `pending` WfRuns on far-away timeouts.
    let rss_before = procs.rss_mib();
    let fill_started = Instant::now();
    if a.pending > 0 {
        let p = pool.clone();
        let t = tag.clone();
        let out = closed_loop(
            &Bounds {
                conc: a.fill_conc,
                total: a.pending,
                duration: Duration::from_secs(24 * 3600),
                warmup: Duration::ZERO,
            },
            &procs,
            move |w, i| {
                let mut c = p.client(w);
                let req = halter::run_wf(W3_PARK_SPEC, format!("w3p-{t}-{w}-{i}"));
                async move {
                    c.run_wf(req).await?;
                    Ok(())
                }
            },
        )
        .await;
        if out.errors > 0 {
            eprintln!(
                "w3: {} errors while parking, first: {:?}",
                out.errors, out.first_error
            );
        }
    }
    let fill_s = fill_started.elapsed().as_secs_f64();
    let rss_parked = procs.rss_mib();

    // Phase 2: probes with a short timeout, started over a window while W1 load runs.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load_ops = Arc::new(AtomicU64::new(0));
    let mut loaders = Vec::new();
    let content = halter::payload(200);
    for w in 0..a.load_conc {
        let (p, stop, n, t, content) = (
            pool.clone(),
            stop.clone(),
            load_ops.clone(),
            tag.clone(),
            content.clone(),
        );
        loaders.push(tokio::spawn(async move {
            let mut c = p.client(w);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let req = halter::put_event(format!("w3l-{t}-{w}-{i}"), W1_DEF, content.clone());
                i += 1;
                if c.put_external_event(req).await.is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let load_started = Instant::now();
    let gap = Duration::from_secs_f64(a.probe_window / a.probes.max(1) as f64);
    let mut ids = Vec::new();
    let mut create_errors = 0u64;
    for i in 0..a.probes {
        let id = format!("w3t-{tag}-{i}");
        let mut c = pool.client(i as usize);
        match c.run_wf(halter::run_wf(&probe_spec, id.clone())).await {
            Ok(_) => ids.push(id),
            Err(_) => create_errors += 1,
        }
        tokio::time::sleep(gap).await;
    }
    // Wait until every probe is due, with room for the last commit.
    tokio::time::sleep(Duration::from_secs(a.probe_timeout as u64 + 2)).await;
    let rss_under_load = procs.rss_mib();
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        let _ = l.await;
    }
    let load_rate = load_ops.load(Ordering::Relaxed) as f64 / load_started.elapsed().as_secs_f64();

    let mut late = histogram();
    let mut not_fired = 0u64;
    let mut early = 0u64;
    let mut c = pool.client(0);
    for id in &ids {
        let nr = halter::wait_node_run(&mut c, id).await?;
        match (nr.arrival_time.as_ref(), nr.end_time.as_ref()) {
            (Some(arr), Some(end)) => {
                let lateness = halter::ts_ms(end) - halter::ts_ms(arr) - a.probe_timeout * 1000;
                if lateness < 0 {
                    early += 1;
                }
                let _ = late.record(lateness.max(0) as u64 * 1000 + 1);
            }
            _ => not_fired += 1,
        }
    }
    let ms = |q: f64| round3(late.value_at_quantile(q) as f64 / 1000.0);
    let line = json!({
        "workload": "w3", "target": "halter", "label": common.label,
        "endpoints": common.endpoints.len(),
        "pending": a.pending, "fill_s": round1(fill_s),
        "fill_wf_per_s": round1(a.pending as f64 / fill_s.max(1e-9)),
        "rss_mib_before": rss_before, "rss_mib_parked": rss_parked,
        "rss_mib_under_load": rss_under_load,
        "probes": ids.len(), "probe_create_errors": create_errors, "probe_timeout_s": a.probe_timeout,
        "not_fired": not_fired, "early": early,
        "load_conc": a.load_conc, "load_ops_per_s": round1(load_rate),
        "late_p50_ms": ms(0.5), "late_p90_ms": ms(0.9), "late_p99_ms": ms(0.99),
        "late_max_ms": round3(late.max() as f64 / 1000.0),
    });
    emit(&common.out, &line)?;
    Ok(line)
}

/// `KEY=VALUE` lines of cluster.env.
fn read_env(path: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(s.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

async fn find_leader(peers: &[String]) -> Option<u64> {
    for p in peers {
        if let Ok(s) = halter::cluster_status(p).await {
            if s.state == "Leader" || s.leader_id == Some(s.node_id) {
                return Some(s.node_id);
            }
        }
    }
    None
}

async fn w4(a: &W4Args) -> anyhow::Result<()> {
    let env = read_env(&a.cluster_dir.join("cluster.env"))?;
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let clients: Vec<String> = (1..=3)
        .filter_map(|i| get(&format!("CLIENT_{i}")))
        .collect();
    let peers: Vec<String> = (1..=3).filter_map(|i| get(&format!("PEER_{i}"))).collect();
    if clients.len() != 3 || peers.len() != 3 {
        bail!("{} does not describe three nodes", a.cluster_dir.display());
    }
    let content = halter::payload(200);
    let mut recoveries = Vec::new();
    for trial in 0..a.trials {
        // A leader that has been leading for a while.
        let mut leader = None;
        for _ in 0..100 {
            leader = find_leader(&peers).await;
            if leader.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let leader = leader.context("no leader")?;
        let pool = Pool::connect(&clients, 1).await?;
        halter::ensure_def(&mut pool.client(0), W1_DEF).await?;

        // Writers: on error, move to the next node. Each success records (start, end) since t0.
        let t0 = Instant::now();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let successes: Arc<Mutex<Vec<(Duration, Duration)>>> = Arc::new(Mutex::new(Vec::new()));
        let tag = run_tag();
        let mut writers = Vec::new();
        for w in 0..a.conc {
            let (pool, stop, succ, tag, content) = (
                pool.clone(),
                stop.clone(),
                successes.clone(),
                tag.clone(),
                content.clone(),
            );
            writers.push(tokio::spawn(async move {
                let mut node = w;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut c = pool.client(node);
                    let req =
                        halter::put_event(format!("w4-{tag}-{w}-{i}"), W1_DEF, content.clone());
                    i += 1;
                    let s = t0.elapsed();
                    let res =
                        tokio::time::timeout(Duration::from_secs(5), c.put_external_event(req))
                            .await;
                    let e = t0.elapsed();
                    match res {
                        Ok(Ok(_)) => succ.lock().unwrap_or_else(|e| e.into_inner()).push((s, e)),
                        _ => {
                            node += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid_file = a.cluster_dir.join(format!("node{leader}.pid"));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?
            .trim()
            .parse()?;
        let killed_at = t0.elapsed();
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -9 {pid} failed");
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            let _ = w.await;
        }
        let succ = successes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Recovery: the first write that began after the kill and succeeded.
        let first_after = succ
            .iter()
            .filter(|(s, _)| *s >= killed_at)
            .map(|(_, e)| *e)
            .min();
        // The longest stretch with no write completing, around the kill.
        let mut ends: Vec<Duration> = succ.iter().map(|(_, e)| *e).collect();
        ends.sort();
        let gap = ends
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .max()
            .unwrap_or_default();
        let recovery_ms = first_after.map(|e| (e.saturating_sub(killed_at)).as_secs_f64() * 1000.0);
        if let Some(r) = recovery_ms {
            recoveries.push(r);
        }
        let line = json!({
            "workload": "w4", "target": "halter", "label": a.label, "trial": trial,
            "killed_node": leader, "conc": a.conc,
            "recovery_ms": recovery_ms.map(round1), "longest_gap_ms": round1(gap.as_secs_f64() * 1000.0),
            "writes": succ.len(),
        });
        emit(&a.out, &line)?;
        // Bring the node back and let it catch up before the next trial.
        let st = std::process::Command::new("bash")
            .arg(&a.script)
            .arg("up")
            .env("HALTER_CLUSTER_DIR", &a.cluster_dir)
            .stdout(std::process::Stdio::null())
            .status()?;
        if !st.success() {
            bail!("restarting the cluster failed");
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    recoveries.sort_by(|a, b| a.total_cmp(b));
    let median = recoveries.get(recoveries.len() / 2).copied();
    emit(
        &a.out,
        &json!({"workload": "w4", "target": "halter", "label": a.label, "summary": true,
                "trials": a.trials, "recovered": recoveries.len(),
                "recovery_ms_median": median.map(round1),
                "recovery_ms_all": recoveries.iter().map(|v| round1(*v)).collect::<Vec<_>>()}),
    )
}

async fn w5(a: &W5Args) -> anyhow::Result<()> {
    let common = &a.common;
    let pool = Pool::connect(&common.endpoints, common.conns).await?;
    halter::ensure_def(&mut pool.client(0), W1_DEF).await?;
    let procs = Procs::new(common.pids.clone());
    let content = halter::payload(200);
    let tag = run_tag();
    let stored = Arc::new(AtomicU64::new(0));
    for &step in &a.steps {
        let have = stored.load(Ordering::Relaxed);
        if step > have {
            let fill = closed_loop(
                &Bounds {
                    conc: a.fill_conc,
                    total: step - have,
                    duration: Duration::from_secs(24 * 3600),
                    warmup: Duration::ZERO,
                },
                &procs,
                put_events(
                    pool.clone(),
                    format!("w5f-{tag}-{step}"),
                    content.clone(),
                    stored.clone(),
                ),
            )
            .await;
            eprintln!(
                "w5: filled to {} stored events ({:.0}/s)",
                stored.load(Ordering::Relaxed),
                fill.ops_per_s()
            );
        }
        for &conc in &a.conc {
            let out = closed_loop(
                &Bounds {
                    conc,
                    total: u64::MAX,
                    duration: Duration::from_secs_f64(a.duration),
                    warmup: Duration::from_secs(1),
                },
                &procs,
                put_events(
                    pool.clone(),
                    format!("w5m-{tag}-{step}-{conc}"),
                    content.clone(),
                    stored.clone(),
                ),
            )
            .await;
            let line = merge(
                json!({"workload": "w5", "target": "halter", "label": common.label,
                       "endpoints": common.endpoints.len(), "step": step,
                       "stored_events": stored.load(Ordering::Relaxed), "conc": conc}),
                out.json(),
            );
            emit(&common.out, &line)?;
        }
    }
    Ok(())
}

/// Runs each workload briefly and fails unless every operation succeeded and every measured
/// figure is present: proof the generator works, not a measurement.
async fn smoke(common: &Common) -> anyhow::Result<()> {
    let load = Load {
        conc: vec![1, 8],
        total: 200,
        duration: 30.0,
        warmup: 0.2,
        payload: 200,
    };
    for line in w1_halter(common, &load).await? {
        check_point(&line, load.total)?;
    }
    let load2 = Load { total: 50, ..load };
    for line in w2(common, &load2).await? {
        check_point(&line, load2.total)?;
    }
    let w3 = w3(&W3Args {
        common: common.clone(),
        pending: 200,
        fill_conc: 8,
        probes: 10,
        probe_timeout: 1,
        probe_window: 1.0,
        load_conc: 4,
    })
    .await?;
    if w3["probes"] != 10 || w3["not_fired"] != 0 || w3["early"] != 0 {
        bail!("w3 smoke: every probe must time out, none early: {w3}");
    }
    if !common.pids.is_empty() && common.pids.iter().any(|p| rss_mib(*p).is_none()) {
        bail!("smoke: a server pid has no RSS (gone?)");
    }
    eprintln!("halter-bench smoke: ok");
    Ok(())
}

fn check_point(line: &Value, total: u64) -> anyhow::Result<()> {
    if line["errors"] != 0 || line["ops"] != total {
        bail!("smoke point failed: {line}");
    }
    if !(line["p50_ms"].as_f64().unwrap_or(0.0) > 0.0
        && line["ops_per_s"].as_f64().unwrap_or(0.0) > 0.0
        && line["client_cpu_pct"].as_f64().is_some())
    {
        bail!("smoke point without figures: {line}");
    }
    Ok(())
}
