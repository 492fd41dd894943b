//! Real processes and real sockets: not part of the simulated (`--cfg madsim`) build.
#![cfg(not(madsim))]
#![allow(clippy::unwrap_used)]
//! Real 3-node clusters of `halter` processes on loopback.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Cluster;
use halter_api::halter::{AddLearnerRequest, ChangeMembershipRequest, NodeInfo};
use halter_api::littlehorse::*;
use halter_api::values;
use tonic::Code;

const T: Duration = Duration::from_secs(20);

fn wait_spec(name: &str, def: &str, timeout: i64) -> PutWfSpecRequest {
    let edge = |to: &str| Edge {
        sink_node_name: to.into(),
        ..Default::default()
    };
    let mut to_exit = edge("2-exit");
    to_exit.variable_mutations.push(VariableMutation {
        lhs_name: "payload".into(),
        operation: VariableMutationType::Assign as i32,
        rhs_value: Some(variable_mutation::RhsValue::NodeOutput(Default::default())),
        ..Default::default()
    });
    let nodes = BTreeMap::from([
        (
            "0-entry".to_string(),
            Node {
                outgoing_edges: vec![edge("1-wait")],
                node: Some(node::Node::Entrypoint(EntrypointNode {})),
                ..Default::default()
            },
        ),
        (
            "1-wait".to_string(),
            Node {
                outgoing_edges: vec![to_exit],
                node: Some(node::Node::ExternalEvent(ExternalEventNode {
                    external_event_def_id: Some(ExternalEventDefId { name: def.into() }),
                    timeout_seconds: Some(VariableAssignment {
                        source: Some(variable_assignment::Source::LiteralValue(values::int(
                            timeout,
                        ))),
                        ..Default::default()
                    }),
                    correlation_key: None,
                    mask_correlation_key: false,
                })),
                ..Default::default()
            },
        ),
        (
            "2-exit".to_string(),
            Node {
                node: Some(node::Node::Exit(ExitNode { result: None })),
                ..Default::default()
            },
        ),
    ]);
    let payload = ThreadVarDef {
        var_def: Some(VariableDef {
            name: "payload".into(),
            type_def: Some(TypeDefinition {
                defined_type: Some(type_definition::DefinedType::PrimitiveType(
                    VariableType::Str as i32,
                )),
                masked: false,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    PutWfSpecRequest {
        name: name.into(),
        thread_specs: BTreeMap::from([(
            "entrypoint".to_string(),
            ThreadSpec {
                nodes,
                variable_defs: vec![payload],
                ..Default::default()
            },
        )]),
        entrypoint_thread_name: "entrypoint".into(),
        ..Default::default()
    }
}

fn wf(id: &str) -> WfRunId {
    WfRunId {
        id: id.into(),
        parent_wf_run_id: None,
    }
}

fn def_id(name: &str) -> Option<ExternalEventDefId> {
    Some(ExternalEventDefId { name: name.into() })
}

fn follower_of(leader: usize) -> usize {
    (leader + 1) % 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_run_a_workflow_and_an_event_posted_through_a_follower_completes_it() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T).await;
    let mut any = c.client(leader).await;
    any.put_external_event_def(PutExternalEventDefRequest {
        name: "approved".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let f = follower_of(leader);
    let mut follower = c.client(f).await;
    // Writes through a follower reach the leader transparently.
    follower
        .put_wf_spec(wait_spec("approval", "approved", 60))
        .await
        .unwrap();
    let run = follower
        .run_wf(RunWfRequest {
            wf_spec_name: "approval".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let id = run.id.clone().unwrap();
    assert_eq!(id.id.len(), 32, "the server generated a 32-hex id");
    let ev = follower
        .put_external_event(PutExternalEventRequest {
            wf_run_id: Some(id.clone()),
            external_event_def_id: def_id("approved"),
            content: Some(values::str("yes")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ev.claimed);
    // Every node's (linearizable) reads agree.
    for i in 0..3 {
        let mut cl = c.client(i).await;
        let r = cl.get_wf_run(id.clone()).await.unwrap().into_inner();
        assert_eq!(r.status(), LhStatus::Completed, "node {i}");
        let v = cl
            .get_variable(VariableId {
                wf_run_id: Some(id.clone()),
                thread_run_number: 0,
                name: "payload".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(v.value, Some(values::str("yes")), "node {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_event_and_it_catches_up_after_restart() {
    let mut c = Cluster::start(3, &["--request-deadline-ms", "3000"]);
    let leader = c.wait_leader(T).await;
    c.client(leader)
        .await
        .put_external_event_def(PutExternalEventDefRequest {
            name: "tick".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut acked: BTreeMap<String, i64> = BTreeMap::new();
    let mut killed_at = None;
    let mut recovered_after = None;
    for n in 0..120i64 {
        if n == 40 {
            c.kill(leader);
            killed_at = Some(Instant::now());
        }
        let guid = format!("g{n:04}");
        let req = PutExternalEventRequest {
            wf_run_id: Some(wf("stream")),
            external_event_def_id: def_id("tick"),
            guid: Some(guid.clone()),
            content: Some(values::int(n)),
            ..Default::default()
        };
        // Retry the same guid on the surviving nodes until it is acknowledged.
        let deadline = Instant::now() + T;
        let mut attempt = 0usize;
        loop {
            attempt += 1;
            let alive: Vec<usize> = (0..3).filter(|i| c.nodes[*i].child.is_some()).collect();
            let target = alive[(n as usize + attempt) % alive.len()];
            let mut cl = c.client(target).await;
            match cl.put_external_event(req.clone()).await {
                Ok(r) => {
                    let e = r.into_inner();
                    assert_eq!(e.content, Some(values::int(n)));
                    acked.insert(guid.clone(), n);
                    if killed_at.is_some() && recovered_after.is_none() {
                        recovered_after = killed_at.map(|k| k.elapsed());
                    }
                    break;
                }
                Err(s) => {
                    assert!(
                        matches!(
                            s.code(),
                            Code::Unavailable
                                | Code::DeadlineExceeded
                                | Code::Unknown
                                | Code::Cancelled
                        ),
                        "unexpected status {s:?}"
                    );
                    assert!(
                        Instant::now() < deadline,
                        "event {guid} never acknowledged: {s:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    let recovered = recovered_after.expect("writes resumed after the kill");
    assert!(
        recovered < Duration::from_secs(10),
        "writes resumed only after {recovered:?}"
    );
    eprintln!("writes resumed {recovered:?} after the leader was killed");

    // The killed node restarts from its data directory and catches up.
    c.spawn(leader, true);
    let new_leader = c.wait_leader(T).await;
    let target = c
        .status(new_leader)
        .await
        .unwrap()
        .last_applied_index
        .unwrap();
    c.wait_applied(leader, target, T).await;
    for i in 0..3 {
        let mut cl = c.client(i).await;
        let mut seen = BTreeMap::new();
        let mut bookmark = None;
        loop {
            let page = cl
                .list_external_events(ListExternalEventsRequest {
                    wf_run_id: Some(wf("stream")),
                    bookmark: bookmark.clone(),
                    limit: Some(50),
                })
                .await
                .unwrap()
                .into_inner();
            for e in page.results {
                let g = e.id.unwrap().guid;
                let Some(variable_value::Value::Int(v)) = e.content.and_then(|c| c.value) else {
                    panic!("content is not an INT")
                };
                assert!(seen.insert(g, v).is_none(), "an event appears twice");
            }
            bookmark = page.bookmark;
            if bookmark.is_none() {
                break;
            }
        }
        assert_eq!(
            seen, acked,
            "node {i} has exactly the acknowledged events, each once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_whose_leader_dies_before_it_fires_still_fires_exactly_once() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T).await;
    let mut cl = c.client(leader).await;
    cl.put_external_event_def(PutExternalEventDefRequest {
        name: "late".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    cl.put_wf_spec(wait_spec("short", "late", 2)).await.unwrap();
    cl.run_wf(RunWfRequest {
        wf_spec_name: "short".into(),
        id: Some("t1".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    c.kill(leader);
    let new_leader = c.wait_leader(T).await;
    let mut cl = c.client(new_leader).await;
    let start = Instant::now();
    loop {
        let r = cl.get_wf_run(wf("t1")).await.unwrap().into_inner();
        if r.status() == LhStatus::Error {
            break;
        }
        assert!(start.elapsed() < T, "timeout never fired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nr = cl
        .get_node_run(NodeRunId {
            wf_run_id: Some(wf("t1")),
            thread_run_number: 0,
            position: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(nr.failures.len(), 1, "fired exactly once");
    assert_eq!(nr.failures[0].failure_name, "TIMEOUT");
    // A late event is kept but never claimed.
    let ev = cl
        .put_external_event(PutExternalEventRequest {
            wf_run_id: Some(wf("t1")),
            external_event_def_id: def_id("late"),
            content: Some(values::str("too late")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!ev.claimed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_far_behind_catches_up_by_snapshot() {
    let mut c = Cluster::start(
        3,
        &[
            "--snapshot-after-logs",
            "50",
            "--keep-logs-after-snapshot",
            "5",
        ],
    );
    let leader = c.wait_leader(T).await;
    let lagging = follower_of(leader);
    c.kill(lagging);
    let mut cl = c.client(leader).await;
    cl.put_external_event_def(PutExternalEventDefRequest {
        name: "bulk".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    for n in 0..200i64 {
        cl.put_external_event(PutExternalEventRequest {
            wf_run_id: Some(wf("bulk")),
            external_event_def_id: def_id("bulk"),
            guid: Some(format!("b{n}")),
            content: Some(values::int(n)),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    c.spawn(lagging, true);
    let applied = c.status(leader).await.unwrap().last_applied_index.unwrap();
    c.wait_applied(lagging, applied, T).await;
    assert!(
        c.log(lagging).contains("installed snapshot"),
        "the lagging node caught up by snapshot"
    );
    let mut lc = c.client(lagging).await;
    let list = lc
        .list_external_events(ListExternalEventsRequest {
            wf_run_id: Some(wf("bulk")),
            bookmark: None,
            limit: Some(1000),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.results.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_add_a_learner_promote_it_and_remove_another() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T).await;
    let four = c.add_node();
    c.wait_listening(four, T).await;
    let mut admin = c.admin(follower_of(leader)).await;
    let n4 = &c.nodes[four];
    admin
        .add_learner(AddLearnerRequest {
            node: Some(NodeInfo {
                id: n4.id,
                peer_addr: n4.peer_addr.clone(),
                client_addr: n4.client_addr.clone(),
            }),
        })
        .await
        .unwrap();
    let removed = follower_of(leader);
    let voters: Vec<u64> = c
        .nodes
        .iter()
        .filter(|n| n.id != c.nodes[removed].id)
        .map(|n| n.id)
        .collect();
    let status = admin
        .change_membership(ChangeMembershipRequest {
            voters: voters.clone(),
            remove_learners: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let mut now_voters: Vec<u64> = status.voters.iter().map(|v| v.id).collect();
    now_voters.sort_unstable();
    assert_eq!(now_voters, voters);
    c.kill(removed);
    // The cluster keeps serving, including through the new node.
    let mut cl = c.client(four).await;
    let d = match cl
        .put_external_event_def(PutExternalEventDefRequest {
            name: "after-change".into(),
            ..Default::default()
        })
        .await
    {
        Ok(d) => d.into_inner(),
        Err(s) => panic!("{s}\n{}", c.log_tails(30)),
    };
    assert_eq!(d.id.unwrap().name, "after-change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_over_the_wire_gets_its_status_and_the_node_keeps_serving() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T).await;
    let mut cl = c.client(follower_of(leader)).await;
    let code = |r: Result<tonic::Response<ExternalEventDef>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(
            cl.put_external_event_def(PutExternalEventDefRequest {
                name: "no spaces allowed".into(),
                ..Default::default()
            })
            .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            cl.get_external_event_def(ExternalEventDefId {
                name: "unknown".into()
            })
            .await
        ),
        Code::NotFound
    );
    let e = cl.get_wf_run(wf("missing")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = cl
        .put_external_event(PutExternalEventRequest {
            wf_run_id: Some(wf("x")),
            external_event_def_id: def_id("undefined"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("No ExternalEventDef named"),
        "{}",
        e.message()
    );
    // Larger than the node accepts from a client.
    let e = cl
        .put_external_event_def(PutExternalEventDefRequest {
            name: "x".repeat(5 * 1024 * 1024),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // Malformed protobuf bytes on the wire.
    let raw = raw_call(
        &c.nodes[leader].client_addr,
        "/littlehorse.LittleHorse/GetWfRun",
        &[0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(raw, Code::Internal as i32, "undecodable request bytes");
    // Still serving.
    cl.put_external_event_def(PutExternalEventDefRequest {
        name: "fine".into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Sends raw bytes as a unary gRPC request and returns the grpc-status it gets.
async fn raw_call(addr: &str, path: &'static str, body: &[u8]) -> i32 {
    use tonic::codegen::http;
    let ch = halter_node::raft::network::channel(addr).unwrap();
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_maybe_shared(path).unwrap();
    let r: Result<tonic::Response<Vec<u8>>, _> = grpc
        .unary(tonic::Request::new(body.to_vec()), path, RawCodec)
        .await;
    r.map(|_| 0).unwrap_or_else(|s| s.code() as i32)
}

#[derive(Default, Clone)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_node_answers_unavailable_instead_of_hanging() {
    let mut c = Cluster::start(3, &["--request-deadline-ms", "1500"]);
    let leader = c.wait_leader(T).await;
    let survivor = leader;
    for i in 0..3 {
        if i != survivor {
            c.kill(i);
        }
    }
    let mut cl = c.client(survivor).await;
    let started = Instant::now();
    let e = cl
        .put_external_event_def(PutExternalEventDefRequest {
            name: "lonely".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let e = cl.get_wf_run(wf("any")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered only after {:?}",
        started.elapsed()
    );
}

/// Group commit: concurrent writes through every node share log entries, yet each client gets
/// its own command's outcome. Valid and invalid commands are interleaved, so a batch holds both;
/// a rejection must reach only its own client, change nothing, and not disturb its neighbours.
/// Afterwards every replica holds exactly the accepted events and the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_sharing_log_entries_each_get_their_own_outcome() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T).await;
    c.client(leader)
        .await
        .put_external_event_def(PutExternalEventDefRequest {
            name: "batched".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..48usize {
        let mut cl = c.client(w % 3).await;
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..10usize {
                // Every third command names a def that does not exist: INVALID_ARGUMENT.
                let def = if (w + i) % 3 == 0 {
                    "missing"
                } else {
                    "batched"
                };
                let r = cl
                    .put_external_event(PutExternalEventRequest {
                        wf_run_id: Some(wf(&format!("w{w}"))),
                        external_event_def_id: def_id(def),
                        guid: Some(format!("g{w}-{i}")),
                        content: Some(values::int((w * 100 + i) as i64)),
                        ..Default::default()
                    })
                    .await;
                outcomes.push((w, i, def, r));
            }
            outcomes
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        for (w, i, def, r) in t.await.unwrap() {
            match (def, r) {
                ("missing", Err(s)) => {
                    assert_eq!(s.code(), Code::InvalidArgument, "w{w} i{i}: {s}")
                }
                ("batched", Ok(ev)) => {
                    let ev = ev.into_inner();
                    // The answer is this command's own event, not a neighbour's.
                    assert_eq!(ev.id.unwrap().guid, format!("g{w}-{i}"));
                    assert_eq!(ev.content, Some(values::int((w * 100 + i) as i64)));
                    accepted += 1;
                }
                (d, r) => panic!("w{w} i{i} def {d}: unexpected {r:?}"),
            }
        }
    }
    assert_eq!(accepted, 320, "48 writers x 10, a third of them rejected");
    // The log has fewer entries than commands: they really were batched.
    let status = c.status(leader).await.unwrap();
    assert!(
        status.last_log_index.unwrap() < 400,
        "expected batching, log index {:?}",
        status.last_log_index
    );
    // Every replica applied the same commands: same number of events for a writer, same digest.
    let target = status.last_applied_index.unwrap();
    for i in 0..3 {
        c.wait_applied(i, target, T).await;
        let list = c
            .client(i)
            .await
            .list_external_events(ListExternalEventsRequest {
                wf_run_id: Some(wf("w1")),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mine = (0..10).filter(|i| (1 + i) % 3 != 0).count();
        assert_eq!(list.results.len(), mine, "node {i}");
    }
    let mut digests = Vec::new();
    for i in 0..3 {
        let d = c
            .admin(i)
            .await
            .state_digest(halter_api::halter::Empty {})
            .await
            .unwrap()
            .into_inner();
        digests.push((d.applied_index, d.digest));
    }
    assert!(
        digests.windows(2).all(|p| p[0] == p[1]),
        "replicas disagree: {digests:?}"
    );
}

/// entry -> TASK `charge(amount)` (5 s per attempt) -> exit.
fn task_spec() -> PutWfSpecRequest {
    let edge = |to: &str| Edge {
        sink_node_name: to.into(),
        ..Default::default()
    };
    let nodes = BTreeMap::from([
        (
            "0-entry".to_string(),
            Node {
                outgoing_edges: vec![edge("1-charge")],
                node: Some(node::Node::Entrypoint(EntrypointNode {})),
                ..Default::default()
            },
        ),
        (
            "1-charge".to_string(),
            Node {
                outgoing_edges: vec![edge("2-exit")],
                node: Some(node::Node::Task(TaskNode {
                    task_to_execute: Some(task_node::TaskToExecute::TaskDefId(TaskDefId {
                        name: "charge".into(),
                    })),
                    timeout_seconds: 5,
                    retries: 0,
                    exponential_backoff: None,
                    variables: vec![VariableAssignment {
                        source: Some(variable_assignment::Source::LiteralValue(values::int(7))),
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            },
        ),
        (
            "2-exit".to_string(),
            Node {
                node: Some(node::Node::Exit(ExitNode { result: None })),
                ..Default::default()
            },
        ),
    ]);
    PutWfSpecRequest {
        name: "billing".into(),
        thread_specs: BTreeMap::from([(
            "entrypoint".to_string(),
            ThreadSpec {
                nodes,
                ..Default::default()
            },
        )]),
        entrypoint_thread_name: "entrypoint".into(),
        ..Default::default()
    }
}

/// Opens a PollTask stream to node `i` and asks for one `charge` task.
async fn poll_once(c: &Cluster, i: usize, worker: &str) -> Option<ScheduledTask> {
    let mut lh = c.client(i).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(PollTaskRequest {
        task_def_id: Some(TaskDefId {
            name: "charge".into(),
        }),
        client_id: worker.into(),
        task_worker_version: None,
    })
    .await
    .unwrap();
    let outbound =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut inbound = lh.poll_task(outbound).await.unwrap().into_inner();
    let got = tokio::time::timeout(T, inbound.message()).await;
    drop(tx);
    got.ok()?.ok()?.and_then(|r| r.result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_queued_before_the_leader_dies_is_handed_out_once_through_a_follower() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T).await;
    let mut cl = c.client(leader).await;
    cl.put_task_def(PutTaskDefRequest {
        name: "charge".into(),
        input_vars: vec![VariableDef {
            name: "amount".into(),
            r#type: Some(VariableType::Int as i32),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    // Every member's client address, so a worker can poll them all.
    let hosts = cl
        .register_task_worker(RegisterTaskWorkerRequest {
            task_worker_id: "w".into(),
            task_def_id: Some(TaskDefId {
                name: "charge".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .your_hosts;
    let mut got: Vec<String> = hosts
        .iter()
        .map(|h| format!("{}:{}", h.host, h.port))
        .collect();
    let mut want: Vec<String> = c.nodes.iter().map(|n| n.client_addr.clone()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    cl.put_wf_spec(task_spec()).await.unwrap();
    cl.run_wf(RunWfRequest {
        wf_spec_name: "billing".into(),
        id: Some("b1".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    // The queue is replicated: after the leader dies, a poll on a survivor gets the task.
    c.kill(leader);
    let new_leader = c.wait_leader(T).await;
    let follower = (0..3).find(|i| *i != leader && *i != new_leader).unwrap();
    let task = poll_once(&c, follower, "w1")
        .await
        .expect("the queued task");
    assert_eq!(task.attempt_number, 0);
    assert_eq!(
        task.variables[0].value,
        Some(values::int(7)),
        "inputs travel with it"
    );
    // Handed out once: another poll gets nothing while it runs (its timeout is 5 s).
    let again = tokio::time::timeout(Duration::from_secs(2), poll_once(&c, new_leader, "w2")).await;
    assert!(
        again.is_err() || again.unwrap().is_none(),
        "handed out twice"
    );
    let mut cl = c.client(new_leader).await;
    let report = ReportTaskRun {
        task_run_id: task.task_run_id.clone(),
        status: TaskStatus::TaskSuccess as i32,
        result: Some(report_task_run::Result::Output(values::int(70))),
        attempt_number: 0,
        ..Default::default()
    };
    cl.report_task(report.clone()).await.unwrap();
    // A worker's retry of the same report is fine.
    cl.report_task(report).await.unwrap();
    let start = Instant::now();
    while cl.get_wf_run(wf("b1")).await.unwrap().into_inner().status() != LhStatus::Completed {
        assert!(start.elapsed() < T, "the run never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tr = cl
        .get_task_run(task.task_run_id.unwrap())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tr.status(), TaskStatus::TaskSuccess);
    assert_eq!(tr.attempts[0].task_worker_id, "w1");
}

/// `wait_spec` with a THROW_EVENT of `event` between the wait and the exit, throwing the
/// payload the external event brought.
fn throwing_spec(name: &str, def: &str, event: &str) -> PutWfSpecRequest {
    let mut spec = wait_spec(name, def, 60);
    let thread = spec.thread_specs.get_mut("entrypoint").unwrap();
    thread.nodes.get_mut("1-wait").unwrap().outgoing_edges[0].sink_node_name = "1-throw".into();
    thread.nodes.insert(
        "1-throw".into(),
        Node {
            outgoing_edges: vec![Edge {
                sink_node_name: "2-exit".into(),
                ..Default::default()
            }],
            node: Some(node::Node::ThrowEvent(ThrowEventNode {
                event_def_id: Some(WorkflowEventDefId { name: event.into() }),
                content: Some(VariableAssignment {
                    source: Some(variable_assignment::Source::VariableName("payload".into())),
                    ..Default::default()
                }),
            })),
            ..Default::default()
        },
    );
    spec
}

/// Invariant: an `AwaitWorkflowEvent` held on a follower returns the event as soon as that
/// follower applies the throw (no message from the leader needed); one made after the throw
/// returns at once; one whose event never comes ends with the client's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_workflow_event_on_a_follower_returns_when_the_workflow_throws() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T).await;
    let mut lc = c.client(leader).await;
    lc.put_external_event_def(PutExternalEventDefRequest {
        name: "paid".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    lc.put_workflow_event_def(PutWorkflowEventDefRequest {
        name: "receipt".into(),
        content_type: None,
    })
    .await
    .unwrap();
    lc.put_wf_spec(throwing_spec("checkout", "paid", "receipt"))
        .await
        .unwrap();
    lc.run_wf(RunWfRequest {
        wf_spec_name: "checkout".into(),
        id: Some("order-1".into()),
        ..Default::default()
    })
    .await
    .unwrap();

    let await_req = AwaitWorkflowEventRequest {
        wf_run_id: Some(wf("order-1")),
        event_def_ids: vec![WorkflowEventDefId {
            name: "receipt".into(),
        }],
        workflow_events_to_ignore: vec![],
    };
    let mut fc = c.client(follower_of(leader)).await;
    let held = {
        let req = await_req.clone();
        tokio::spawn(async move { fc.await_workflow_event(req).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "nothing was thrown yet");
    lc.put_external_event(PutExternalEventRequest {
        wf_run_id: Some(wf("order-1")),
        external_event_def_id: def_id("paid"),
        content: Some(values::str("42 EUR")),
        ..Default::default()
    })
    .await
    .unwrap();
    let event = tokio::time::timeout(T, held)
        .await
        .expect("the held call returns")
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(event.content, Some(values::str("42 EUR")));
    let id = event.id.clone().unwrap();
    assert_eq!(id.number, 0);

    // After the throw, any node answers at once.
    let mut other = c.client((leader + 2) % 3).await;
    let again = other
        .await_workflow_event(await_req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, event);

    // Ignoring it leaves nothing to return: the client's deadline ends the call.
    let mut req = tonic::Request::new(AwaitWorkflowEventRequest {
        workflow_events_to_ignore: vec![id],
        ..await_req
    });
    req.set_timeout(Duration::from_millis(400));
    let err = other.await_workflow_event(req).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );

    // A malformed request is refused at once, not after a wait.
    let err = other
        .await_workflow_event(AwaitWorkflowEventRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// Invariant (online backup, `crates/node/src/backup.rs`): a backup taken on any node holds
/// every write acknowledged before it started and nothing after, and restores into a new
/// one-node cluster whose state is the same, digest for digest, and that goes on running the
/// workflows it holds. A cut-off backup is refused and leaves no data directory behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_on_a_follower_restores_into_a_new_cluster_that_carries_on() {
    use halter_api::halter::Empty;
    let mut c = Cluster::start(3, &[]);
    let first = c.wait_leader(T).await;
    // A second term, so the backup's entries are not all of term 1: the restored node's first
    // election must go past their term.
    c.admin(follower_of(first))
        .await
        .trigger_election(Empty {})
        .await
        .unwrap();
    let start = Instant::now();
    let leader = loop {
        let l = c.wait_leader(T).await;
        if c.status(l).await.is_some_and(|s| s.term > 1) {
            break l;
        }
        assert!(start.elapsed() < T, "no second term");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut cl = c.client(leader).await;
    for def in ["signed", "ledger"] {
        cl.put_external_event_def(PutExternalEventDefRequest {
            name: def.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    cl.put_wf_spec(wait_spec("contract", "signed", 3600))
        .await
        .unwrap();
    let waiting = cl
        .run_wf(RunWfRequest {
            wf_spec_name: "contract".into(),
            id: Some("before-backup".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id
        .unwrap();
    for n in 0..50i64 {
        cl.put_external_event(PutExternalEventRequest {
            wf_run_id: Some(wf("books")),
            external_event_def_id: def_id("ledger"),
            guid: Some(format!("e{n}")),
            content: Some(values::int(n)),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let acknowledged = c.status(leader).await.unwrap().last_applied_index.unwrap();

    let f = follower_of(leader);
    let mut admin = c.admin(f).await;
    let mut stream = admin.backup(Empty {}).await.unwrap().into_inner();
    let (mut bytes, mut at) = (Vec::new(), None);
    while let Some(chunk) = stream.message().await.unwrap() {
        if at.is_none() {
            at = Some(chunk.applied_index);
        }
        bytes.extend_from_slice(&chunk.data);
    }
    let at = at.expect("the backup streamed at least one chunk");
    assert!(
        at >= acknowledged,
        "the backup ({at}) holds every acknowledged write ({acknowledged})"
    );
    // No timer is due and nothing else writes: the source's state is the backup's.
    let source = admin.state_digest(Empty {}).await.unwrap().into_inner();
    cl.put_external_event(PutExternalEventRequest {
        wf_run_id: Some(wf("books")),
        external_event_def_id: def_id("ledger"),
        guid: Some("after-backup".into()),
        content: Some(values::int(-1)),
        ..Default::default()
    })
    .await
    .unwrap();

    let cut = c.dir.path().join("cut.backup");
    std::fs::write(&cut, &bytes[..bytes.len() - 9]).unwrap();
    let (out, refused) = c.restore(&cut);
    assert!(!out.status.success(), "a cut-off backup is refused");
    assert!(
        !refused.data_dir.join("state.redb").exists(),
        "a refused restore leaves no state behind"
    );

    let file = c.dir.path().join("whole.backup");
    std::fs::write(&file, &bytes).unwrap();
    let (out, node) = c.restore(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_id = node.id;
    let r = c.start_restored(node);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = c.status(r).await {
            if s.leader_id == Some(new_id) {
                break s;
            }
        }
        assert!(
            start.elapsed() < T,
            "the restored node never led\n{}",
            c.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let voters: Vec<u64> = status.voters.iter().map(|v| v.id).collect();
    assert_eq!(
        voters,
        vec![new_id],
        "a new cluster of the restored node alone"
    );

    let mut restored = c.client(r).await;
    // A read first, so the new leader has applied its term's first entry.
    let list = restored
        .list_external_events(ListExternalEventsRequest {
            wf_run_id: Some(wf("books")),
            bookmark: None,
            limit: Some(1000),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        list.results.len(),
        50,
        "every event before the backup, none after"
    );
    let digest = c
        .admin(r)
        .await
        .state_digest(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(digest.digest, source.digest, "the same state, row for row");

    restored
        .put_external_event(PutExternalEventRequest {
            wf_run_id: Some(waiting.clone()),
            external_event_def_id: def_id("signed"),
            content: Some(values::str("restored")),
            ..Default::default()
        })
        .await
        .unwrap();
    let run = restored.get_wf_run(waiting).await.unwrap().into_inner();
    assert_eq!(
        run.status(),
        LhStatus::Completed,
        "the restored WfRun went on"
    );
}

/// Invariant (TLS, `crates/node/src/tls.rs`): a cluster started with certificates elects,
/// forwards and replicates over mutual TLS between its nodes and serves clients that trust its
/// CA; its client port refuses plaintext and, with `--tls-client-ca`, a client without a
/// certificate; its peer port refuses a certificate another CA signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_verified_clients_and_refuses_the_rest() {
    use halter_api::halter::{cluster_client::ClusterClient, Empty};
    use halter_api::littlehorse::little_horse_client::LittleHorseClient;
    use halter_node::raft::network::{channel, PeerConnector};
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};

    let dir = tempfile::tempdir().unwrap();
    let pki = common::Pki::generate();
    let file = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    let (ca, cert, key) = (
        file("ca.pem", &pki.ca),
        file("node.pem", &pki.cert),
        file("node.key", &pki.key),
    );
    let trusting = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca));
    let member = trusting
        .clone()
        .identity(Identity::from_pem(&pki.cert, &pki.key));
    let stranger = trusting
        .clone()
        .identity(Identity::from_pem(&pki.stranger_cert, &pki.stranger_key));
    let tls_args = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-ca",
        &ca,
        "--tls-client-ca",
        &ca,
    ];
    let c = Cluster::start_in(dir, 3, &tls_args, PeerConnector::tls(member));
    let leader = c.wait_leader(T).await;
    let f = follower_of(leader);
    // Through a follower: forwarded to the leader over the peer port, then replicated.
    c.client(f)
        .await
        .put_external_event_def(PutExternalEventDefRequest {
            name: "over-tls".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("{s}\n{}", c.log_tails(20)));
    for i in 0..3 {
        let d = c
            .client(i)
            .await
            .get_external_event_def(ExternalEventDefId {
                name: "over-tls".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.id.unwrap().name, "over-tls", "node {i}");
    }

    let lh = |ch| async move {
        LittleHorseClient::new(ch)
            .get_external_event_def(ExternalEventDefId {
                name: "over-tls".into(),
            })
            .await
    };
    let client_addr = &c.nodes[f].client_addr;
    assert!(
        lh(channel(client_addr).unwrap()).await.is_err(),
        "plaintext refused"
    );
    assert!(
        lh(PeerConnector::tls(trusting).channel(client_addr).unwrap())
            .await
            .is_err(),
        "a client without a certificate refused"
    );
    let peer_addr = &c.nodes[f].peer_addr;
    let stranger_status = ClusterClient::new(
        PeerConnector::tls(stranger.clone())
            .channel(peer_addr)
            .unwrap(),
    )
    .status(Empty {})
    .await;
    assert!(stranger_status.is_err(), "a stranger's certificate refused");
    assert!(
        lh(PeerConnector::tls(stranger).channel(client_addr).unwrap())
            .await
            .is_err(),
        "a stranger's certificate refused on the client port too"
    );
}
