//! Prometheus metrics: how many LittleHorse API calls a node answered (by method and gRPC
//! status) and how long they took, and where this node's Raft stands (term, leader, log and
//! apply positions, each follower's lag on the leader), and the work its replica holds waiting
//! (timers and how overdue the oldest is, queued task attempts, unclaimed events). Served as
//! text on `GET /metrics` of `metrics_addr`, when configured.
//!
//! The counting wraps the API service rather than each handler, so a new RPC is counted
//! without a line of its own. A call's status is the `grpc-status` of its response headers:
//! tonic sends a failed unary call's status there and a successful one's in the trailers, so a
//! call without it is counted as OK. A stream (PollTask) is counted once, when it opens.
//!
//! The HTTP side is a few lines over a TCP listener rather than a web framework: one request
//! per connection, read with a size and time limit, so a scraper (or anything else that
//! connects) can neither hold it nor make it allocate without bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::proposer::{wall_clock_ms, NodeCtx};

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// gRPC status codes 0..=16.
const CODES: usize = 17;
/// Distinct method names kept; calls to further (unknown) paths are counted as `other`.
const MAX_METHODS: usize = 256;
/// Largest HTTP request head read from a scraper.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct MethodStats {
    by_code: [AtomicU64; CODES],
    buckets: [AtomicU64; BUCKETS.len()],
    micros_sum: AtomicU64,
}

impl MethodStats {
    /// An out-of-range code counts as UNKNOWN (2).
    fn record(&self, code: i32, took: Duration) {
        let code = usize::try_from(code)
            .ok()
            .filter(|c| *c < CODES)
            .unwrap_or(2);
        self.by_code[code].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.micros_sum.fetch_add(micros, Ordering::Relaxed);
    }
}

/// Counters of the LittleHorse API, shared by the service wrapper and the HTTP endpoint.
#[derive(Default)]
pub struct ApiStats {
    methods: RwLock<BTreeMap<String, Arc<MethodStats>>>,
}

impl ApiStats {
    /// The counters of `name`, which comes from the client's request path: anything but a
    /// plain identifier is counted as `other`, so no client can write into the page's syntax.
    fn method(&self, name: &str) -> Arc<MethodStats> {
        let plain =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let name = if plain { name } else { "other" };
        if let Some(m) = self
            .methods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return m.clone();
        }
        let mut all = self.methods.write().unwrap_or_else(|e| e.into_inner());
        let name = if all.len() >= MAX_METHODS && !all.contains_key(name) {
            "other"
        } else {
            name
        };
        all.entry(name.to_string()).or_default().clone()
    }

    fn render(&self, out: &mut String) {
        let all = self.methods.read().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP halter_grpc_requests_total LittleHorse API calls answered, by method and gRPC status.\n");
        out.push_str("# TYPE halter_grpc_requests_total counter\n");
        for (name, m) in all.iter() {
            for (code, n) in m.by_code.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    // Named as Go's gRPC names them ("OK", "NotFound"), as most
                    // dashboards for gRPC servers expect.
                    let code = match tonic::Code::from(code as i32) {
                        tonic::Code::Ok => "OK".to_string(),
                        other => format!("{other:?}"),
                    };
                    let _ = writeln!(
                        out,
                        "halter_grpc_requests_total{{method=\"{name}\",code=\"{code}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP halter_grpc_request_seconds Time from a call's arrival to its answer (a stream: to its opening).\n");
        out.push_str("# TYPE halter_grpc_request_seconds histogram\n");
        for (name, m) in all.iter() {
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(&m.buckets) {
                cumulative += n.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "halter_grpc_request_seconds_bucket{{method=\"{name}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let count: u64 = m.by_code.iter().map(|n| n.load(Ordering::Relaxed)).sum();
            let sum = m.micros_sum.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "halter_grpc_request_seconds_bucket{{method=\"{name}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "halter_grpc_request_seconds_sum{{method=\"{name}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "halter_grpc_request_seconds_count{{method=\"{name}\"}} {count}"
            );
        }
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// The whole page: this node's Raft position, then the API's counters.
pub fn render(ctx: &NodeCtx, stats: &ApiStats) -> String {
    let m = ctx.raft.metrics().borrow().clone();
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "# HELP halter_build_info The running version.\n# TYPE halter_build_info gauge\nhalter_build_info{{version=\"{}\",node_id=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        ctx.id
    );
    gauge(
        &mut out,
        "halter_raft_term",
        "This node's current Raft term.",
        m.current_term,
    );
    gauge(
        &mut out,
        "halter_raft_is_leader",
        "1 while this node leads.",
        u8::from(m.current_leader == Some(ctx.id)),
    );
    gauge(
        &mut out,
        "halter_raft_leader_id",
        "The leader this node knows of (0: none).",
        m.current_leader.unwrap_or(0),
    );
    let index = |l: Option<u64>| l.unwrap_or(0);
    gauge(
        &mut out,
        "halter_raft_last_log_index",
        "Index of this node's last log entry.",
        index(m.last_log_index),
    );
    gauge(
        &mut out,
        "halter_raft_last_applied_index",
        "Index of the last entry this node applied.",
        index(m.last_applied.map(|l| l.index)),
    );
    gauge(
        &mut out,
        "halter_raft_snapshot_index",
        "Last index in this node's snapshot.",
        index(m.snapshot.map(|l| l.index)),
    );
    gauge(
        &mut out,
        "halter_raft_purged_index",
        "Last log index this node purged behind its snapshot.",
        index(m.purged.map(|l| l.index)),
    );
    let membership = m.membership_config.membership();
    gauge(
        &mut out,
        "halter_raft_voters",
        "Voters in the membership this node knows.",
        membership.voter_ids().count(),
    );
    if let Some(ms) = m.millis_since_quorum_ack {
        gauge(
            &mut out,
            "halter_raft_millis_since_quorum_ack",
            "On the leader: milliseconds since a quorum last acknowledged it.",
            ms,
        );
    }
    if let Some(replication) = &m.replication {
        out.push_str("# HELP halter_raft_replication_lag_entries On the leader: entries each member's log is behind the leader's.\n");
        out.push_str("# TYPE halter_raft_replication_lag_entries gauge\n");
        let last = index(m.last_log_index);
        for (peer, matched) in replication {
            let lag = last.saturating_sub(index(matched.map(|l| l.index)));
            let _ = writeln!(
                out,
                "halter_raft_replication_lag_entries{{peer=\"{peer}\"}} {lag}"
            );
        }
    }
    render_state(ctx, &mut out);
    stats.render(&mut out);
    out
}

/// This node's replica, as counts an operator alerts on: work waiting (timers, queued task
/// attempts, events no WfRun has claimed) and how late the oldest timer is. Each is a table's
/// length or first row: O(1) in redb, so a scrape costs no more with a large state. A follower
/// shows the leader's state as far as it has applied it.
fn render_state(ctx: &NodeCtx, out: &mut String) {
    use redb::{ReadableTable, ReadableTableMetadata};

    let counts = ctx.read(|t| {
        let timers = t.timers()?;
        let oldest_due = timers.first()?.map(|(k, _)| k.value().0);
        Ok((
            t.wf_runs()?.len()?,
            timers.len()?,
            oldest_due,
            t.task_queue()?.len()?,
            t.unclaimed_events()?.len()?,
        ))
    });
    let Ok((wf_runs, timers, oldest_due, queued, unclaimed)) = counts else {
        return;
    };
    gauge(out, "halter_wf_runs", "WfRuns stored.", wf_runs);
    gauge(
        out,
        "halter_timers_pending",
        "Timers armed and not yet fired (event timeouts, sleeps, task timeouts, retention).",
        timers,
    );
    gauge(
        out,
        "halter_timer_overdue_seconds",
        "How long ago the oldest pending timer came due (0: none is due). Above a second or so, timeouts fire late.",
        overdue_seconds(oldest_due, wall_clock_ms()),
    );
    gauge(
        out,
        "halter_task_attempts_queued",
        "Task attempts waiting for a worker to poll them.",
        queued,
    );
    gauge(
        out,
        "halter_external_events_unclaimed",
        "ExternalEvents stored that no NodeRun has claimed yet.",
        unclaimed,
    );
}

/// Seconds since `oldest_due` (ms), 0 when there is none or it is not due yet.
fn overdue_seconds(oldest_due: Option<i64>, now_ms: i64) -> f64 {
    oldest_due.map_or(0.0, |due| (now_ms - due).max(0) as f64 / 1000.0)
}

pub use serve::{counted, serve};

mod serve {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::watch;
    use tonic::body::Body;
    use tonic::codegen::{http, BoxFuture, Service};
    use tonic::server::NamedService;

    use super::{render, ApiStats, MAX_REQUEST_HEAD, REQUEST_TIMEOUT};
    use crate::proposer::NodeCtx;

    /// Wraps a gRPC service so that each call is counted in `stats`.
    #[derive(Clone)]
    pub struct Counted<S> {
        inner: S,
        stats: Arc<ApiStats>,
    }

    pub fn counted<S>(inner: S, stats: Arc<ApiStats>) -> Counted<S> {
        Counted { inner, stats }
    }

    impl<S: NamedService> NamedService for Counted<S> {
        const NAME: &'static str = S::NAME;
    }

    impl<S> Service<http::Request<Body>> for Counted<S>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Infallible>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, req: http::Request<Body>) -> Self::Future {
            let started = Instant::now();
            let path = req.uri().path();
            let stats = self.stats.method(path.rsplit('/').next().unwrap_or(path));
            let fut = self.inner.call(req);
            Box::pin(async move {
                let resp = fut.await?;
                let code = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(0);
                stats.record(code, started.elapsed());
                Ok(resp)
            })
        }
    }

    /// Serves `GET /metrics` on `listener` until `shutdown` turns true.
    pub async fn serve(
        listener: TcpListener,
        ctx: Arc<NodeCtx>,
        stats: Arc<ApiStats>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match conn {
                Ok((stream, _)) => {
                    let (ctx, stats) = (ctx.clone(), stats.clone());
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &ctx, &stats).await {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener failed to accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn answer(mut stream: TcpStream, ctx: &NodeCtx, stats: &ApiStats) -> std::io::Result<()> {
        let mut head = Vec::with_capacity(512);
        let read = async {
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            std::io::Result::Ok(())
        };
        if tokio::time::timeout(REQUEST_TIMEOUT, read).await.is_err() {
            return Ok(());
        }
        let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
        let mut parts = line.split(|b| *b == b' ');
        let (verb, target) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let (status, body) = match (verb, target) {
            (b"GET", b"/metrics") => ("200 OK", render(ctx, stats)),
            (b"GET", _) => (
                "404 Not Found",
                "only /metrics is served here\n".to_string(),
            ),
            _ => ("405 Method Not Allowed", "only GET /metrics\n".to_string()),
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(resp.as_bytes()).await?;
        stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timer not yet due, or none at all, is not overdue; one due earlier is, by how long.
    #[test]
    fn only_a_timer_past_its_due_time_counts_as_overdue() {
        assert_eq!(overdue_seconds(None, 10_000), 0.0);
        assert_eq!(overdue_seconds(Some(12_000), 10_000), 0.0);
        assert_eq!(overdue_seconds(Some(7_500), 10_000), 2.5);
    }

    #[test]
    fn a_method_name_from_the_client_cannot_break_the_page() {
        let stats = ApiStats::default();
        stats
            .method("PutExternalEvent")
            .record(0, Duration::from_millis(3));
        stats
            .method("Evil\"} 9\nhalter_raft_is_leader 1")
            .record(5, Duration::from_millis(1));
        stats.method("").record(99, Duration::from_secs(60));
        let mut page = String::new();
        stats.render(&mut page);
        assert!(page
            .contains("halter_grpc_requests_total{method=\"PutExternalEvent\",code=\"OK\"} 1\n"));
        assert!(page.contains("halter_grpc_requests_total{method=\"other\",code=\"NotFound\"} 1\n"));
        // 99 is no gRPC status: UNKNOWN. 60 s is past the last bucket: only +Inf has it.
        assert!(page.contains("halter_grpc_requests_total{method=\"other\",code=\"Unknown\"} 1\n"));
        assert!(page.contains("halter_grpc_request_seconds_bucket{method=\"other\",le=\"5\"} 1\n"));
        assert!(
            page.contains("halter_grpc_request_seconds_bucket{method=\"other\",le=\"+Inf\"} 2\n")
        );
        assert!(page.contains(
            "halter_grpc_request_seconds_bucket{method=\"PutExternalEvent\",le=\"0.002\"} 0\n"
        ));
        assert!(page.contains(
            "halter_grpc_request_seconds_bucket{method=\"PutExternalEvent\",le=\"0.005\"} 1\n"
        ));
        assert!(!page.contains("Evil"));
        assert!(!page.lines().any(|l| l.starts_with("halter_raft")));
    }
}
