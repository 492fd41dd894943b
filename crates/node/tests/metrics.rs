//! The Prometheus page (`metrics_addr`): one node in this process, real gRPC calls, then
//! scrapes over plain TCP as Prometheus would.
//!
//! Invariants checked here (`docs/operations.md`, "Metrics"):
//! - every answered API call is counted once under its method and gRPC status, failures
//!   included, and its latency lands in the histogram;
//! - the page shows this node's Raft position (a single node leads, term >= 1);
//! - and its replica's counts (an event for a WfRun not yet started is one unclaimed event);
//! - anything but `GET /metrics` is refused without disturbing later scrapes.
#![cfg(not(madsim))]
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use halter_api::littlehorse::little_horse_client::LittleHorseClient;
use halter_api::littlehorse::*;
use halter_node::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The value of the sample whose line starts with `series ` (labels included).
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_page_counts_calls_by_method_and_status_and_shows_raft() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        metrics_addr: Some("127.0.0.1:0".into()),
        ..Config::dev(
            dir.path().join("data"),
            "127.0.0.1:0".into(),
            "127.0.0.1:0".into(),
        )
    };
    let node = halter_node::server::start(cfg).await.unwrap();
    let metrics = node.metrics_addr.expect("metrics address bound");
    let mut lh = LittleHorseClient::connect(format!("http://{}", node.client_addr))
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let put = lh
            .put_external_event_def(PutExternalEventDefRequest {
                name: "metered".into(),
                ..Default::default()
            })
            .await;
        match put {
            Ok(_) => break,
            Err(s) if Instant::now() < deadline => {
                assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("no leader in time: {s:?}"),
        }
    }
    for _ in 0..2 {
        let missing = lh
            .get_external_event_def(ExternalEventDefId {
                name: "absent".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }

    // An event for a WfRun that does not exist yet waits, unclaimed, for the run.
    lh.put_external_event(PutExternalEventRequest {
        wf_run_id: Some(WfRunId {
            id: "later".into(),
            parent_wf_run_id: None,
        }),
        external_event_def_id: Some(ExternalEventDefId {
            name: "metered".into(),
        }),
        guid: Some("g1".into()),
        content: Some(VariableValue {
            value: Some(variable_value::Value::Int(1)),
        }),
        ..Default::default()
    })
    .await
    .unwrap();

    // Something that is not HTTP, then a wrong path and a wrong verb: each refused alone.
    let junk = http(metrics, b"\x16\x03\x01 not http at all\r\n\r\n").await;
    assert!(junk.starts_with("HTTP/1.1 405"), "{junk}");
    let wrong_path = http(metrics, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(wrong_path.starts_with("HTTP/1.1 404"), "{wrong_path}");
    let wrong_verb = http(metrics, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(wrong_verb.starts_with("HTTP/1.1 405"), "{wrong_verb}");

    let page = http(metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(
        page.contains("Content-Type: text/plain; version=0.0.4"),
        "{page}"
    );
    let put = "halter_grpc_requests_total{method=\"PutExternalEventDef\",code=\"OK\"}";
    assert_eq!(sample(&page, put), Some(1.0), "{page}");
    let get = "halter_grpc_requests_total{method=\"GetExternalEventDef\",code=\"NotFound\"}";
    assert_eq!(sample(&page, get), Some(2.0), "{page}");
    let count = "halter_grpc_request_seconds_count{method=\"GetExternalEventDef\"}";
    assert_eq!(sample(&page, count), Some(2.0), "{page}");
    let inf = "halter_grpc_request_seconds_bucket{method=\"GetExternalEventDef\",le=\"+Inf\"}";
    assert_eq!(sample(&page, inf), Some(2.0), "{page}");
    assert_eq!(sample(&page, "halter_raft_is_leader"), Some(1.0), "{page}");
    assert_eq!(sample(&page, "halter_raft_leader_id"), Some(1.0), "{page}");
    assert!(
        sample(&page, "halter_raft_term").is_some_and(|t| t >= 1.0),
        "{page}"
    );
    assert!(
        sample(&page, "halter_raft_last_applied_index").is_some_and(|i| i >= 1.0),
        "{page}"
    );
    // The replica's own counts.
    assert_eq!(
        sample(&page, "halter_external_events_unclaimed"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(sample(&page, "halter_wf_runs"), Some(0.0), "{page}");
    assert_eq!(
        sample(&page, "halter_task_attempts_queued"),
        Some(0.0),
        "{page}"
    );
    assert!(sample(&page, "halter_timers_pending").is_some(), "{page}");
    assert_eq!(
        sample(&page, "halter_timer_overdue_seconds"),
        Some(0.0),
        "{page}"
    );
    node.shutdown().await;
}
