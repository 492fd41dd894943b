//! The workload: clients on their own simulated hosts run WfRuns and put events (before and
//! after the node arrives, retried with the same guid), racing the timeouts, and read from
//! every node. Each acknowledged answer goes into the oracle.

use std::time::{Duration, Instant};

use halter_api::littlehorse::little_horse_client::LittleHorseClient;
use halter_api::littlehorse::*;
use halter_api::values;
use madsim::rand::Rng;
use tonic::Code;

use crate::cluster::{channel, within, CLIENT_PORT};
use crate::oracle::{wall_ms, ScheduleCall, Shared, StatusRead};

pub const WF_POOL: usize = 10;
pub const PRE_POOL: usize = 4;
/// Schedules clients create and delete, each starting a `sim-tick` run every minute.
pub const SCHEDULE_POOL: usize = 3;

/// `sim-family` runs clients start; each one's child is `{family}_0-1`.
pub const FAMILY_POOL: usize = 3;

/// `sim-gather` runs clients start, each with one to four parts.
pub const GATHER_POOL: usize = 3;

pub fn gather_name(i: usize) -> String {
    format!("gat-{i}")
}

pub fn family_name(i: usize) -> String {
    format!("fam-{i}")
}

/// The key of a family run's child (started by its node at thread 0, position 1).
pub fn member_key(family: &str) -> String {
    format!("{family}_0-1")
}

pub fn schedule_name(i: usize) -> String {
    format!("sched-{i}")
}

pub fn wf_name(i: usize) -> String {
    format!("wf-{i}")
}

/// Ids of WfRuns that are never started: their events stay pre-emptive.
pub fn orphan_name(i: usize) -> String {
    format!("orphan-{i}")
}

fn progress(status: LhStatus) -> u8 {
    match status {
        LhStatus::Completed | LhStatus::Error | LhStatus::Exception => 2,
        _ => 1,
    }
}

pub async fn client(id: usize, nodes: Vec<std::net::IpAddr>, oracle: Shared, until: Instant) {
    let mut rng = madsim::rand::thread_rng();
    let clients: Vec<_> = nodes
        .iter()
        .map(|ip| LittleHorseClient::new(channel(format!("{ip}:{CLIENT_PORT}"))))
        .collect();
    let mut mine: Vec<(String, &'static str, String, i64)> = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let node = rng.gen_range(0..clients.len());
        let mut lh = clients[node].clone();
        let roll = rng.gen_range(0..100);
        if roll < 15 {
            let wf = wf_name(rng.gen_range(0..WF_POOL));
            let req = RunWfRequest {
                wf_spec_name: "sim".into(),
                id: Some(wf.clone()),
                variables: [("order".to_string(), values::str(wf.clone()))].into(),
                ..Default::default()
            };
            let out = within(4000, lh.run_wf(req)).await;
            match out {
                Some(Ok(_)) => {
                    oracle.lock().run_acknowledged(&wf);
                    oracle.trace(format!("c{id} run {wf} ok@{node}"));
                }
                Some(Err(s)) if s.code() == Code::AlreadyExists => {
                    oracle.lock().run_acknowledged(&wf);
                    oracle.trace(format!("c{id} run {wf} exists@{node}"));
                }
                Some(Err(s)) => oracle.trace(format!("c{id} run {wf} {:?}@{node}", s.code())),
                None => oracle.trace(format!("c{id} run {wf} timeout@{node}")),
            }
        } else if roll < 60 {
            // A retry of an earlier put (same def, guid and content), or a new event: mostly
            // `go`, which nodes wait for, sometimes `poke`, which interrupts thread 0.
            let (wf, def, guid, content) = if !mine.is_empty() && rng.gen_bool(0.3) {
                mine[rng.gen_range(0..mine.len())].clone()
            } else {
                let wf = if rng.gen_bool(0.85) {
                    wf_name(rng.gen_range(0..WF_POOL))
                } else {
                    orphan_name(rng.gen_range(0..PRE_POOL))
                };
                let def = match rng.gen_range(0..100) {
                    0..10 => "poke",
                    10..15 => "rare",
                    _ => "go",
                };
                let e = (
                    wf,
                    def,
                    format!("c{id}-{n}"),
                    (id as i64) * 1_000_000 + n as i64,
                );
                mine.push(e.clone());
                e
            };
            oracle
                .lock()
                .sent
                .insert((wf.clone(), guid.clone()), content);
            let req = PutExternalEventRequest {
                wf_run_id: Some(WfRunId {
                    id: wf.clone(),
                    parent_wf_run_id: None,
                }),
                external_event_def_id: Some(ExternalEventDefId { name: def.into() }),
                guid: Some(guid.clone()),
                content: Some(values::int(content)),
                thread_run_number: None,
                node_run_position: None,
            };
            let acked_at = match within(4000, lh.put_external_event(req)).await {
                Some(Ok(r)) => {
                    let e = r.into_inner();
                    if e.content != Some(values::int(content)) {
                        oracle.violation(format!(
                            "put {wf}/{guid} answered content {:?}, sent {content}",
                            e.content
                        ));
                    }
                    oracle
                        .lock()
                        .acked
                        .insert((wf.clone(), guid.clone()), content);
                    oracle.trace(format!(
                        "c{id} put {wf}/{guid} ok@{node} claimed={}",
                        e.claimed
                    ));
                    Some(Instant::now())
                }
                Some(Err(s)) => {
                    if s.code() == Code::AlreadyExists {
                        oracle.violation(format!(
                            "identical retry of {wf}/{guid} got ALREADY_EXISTS"
                        ));
                    }
                    oracle.trace(format!("c{id} put {wf}/{guid} {:?}@{node}", s.code()));
                    None
                }
                None => {
                    oracle.trace(format!("c{id} put {wf}/{guid} timeout@{node}"));
                    None
                }
            };
            // Read your write, from another node: a read that starts after the ack sees it.
            if acked_at.is_some() {
                let other = (node + 1 + rng.gen_range(0..clients.len() - 1)) % clients.len();
                let mut lh2 = clients[other].clone();
                let id_ = ExternalEventId {
                    wf_run_id: Some(WfRunId {
                        id: wf.clone(),
                        parent_wf_run_id: None,
                    }),
                    external_event_def_id: Some(ExternalEventDefId { name: def.into() }),
                    guid: guid.clone(),
                };
                match within(4000, lh2.get_external_event(id_)).await {
                    Some(Ok(r)) if r.get_ref().content != Some(values::int(content)) => oracle
                        .violation(format!(
                            "read of {wf}/{guid} on node {other} has other content"
                        )),
                    Some(Err(s)) if s.code() == Code::NotFound => oracle.violation(format!(
                        "acknowledged event {wf}/{guid} not found on node {other}"
                    )),
                    _ => {}
                }
            }
        } else if roll < 65 {
            // A gather run fans out to its parts, or a `part` event reaches one of them.
            let gat = gather_name(rng.gen_range(0..GATHER_POOL));
            let out = if rng.gen_bool(0.4) {
                let n: i64 = rng.gen_range(1..=4);
                let parts: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
                let req = RunWfRequest {
                    wf_spec_name: crate::scenario::GATHER.into(),
                    id: Some(gat.clone()),
                    variables: [
                        (
                            "parts".to_string(),
                            values::json_arr(format!("[{}]", parts.join(","))),
                        ),
                        ("n".to_string(), values::int(n)),
                        ("done".to_string(), values::int(0)),
                    ]
                    .into(),
                    ..Default::default()
                };
                match within(4000, lh.run_wf(req)).await {
                    Some(Ok(_)) => format!("run n={n} ok"),
                    Some(Err(s)) => format!("run n={n} {:?}", s.code()),
                    None => format!("run n={n} timeout"),
                }
            } else {
                let req = PutExternalEventRequest {
                    wf_run_id: Some(WfRunId {
                        id: gat.clone(),
                        parent_wf_run_id: None,
                    }),
                    external_event_def_id: Some(ExternalEventDefId {
                        name: crate::scenario::PART.into(),
                    }),
                    guid: Some(format!("g{id}-{n}")),
                    content: Some(values::int((id as i64) * 1_000_000 + n as i64)),
                    thread_run_number: None,
                    node_run_position: None,
                };
                match within(4000, lh.put_external_event(req)).await {
                    Some(Ok(_)) => "part ok".to_string(),
                    Some(Err(s)) => format!("part {:?}", s.code()),
                    None => "part timeout".into(),
                }
            };
            oracle.trace(format!("c{id} gather {gat} {out}@{node}"));
        } else if roll < 70 {
            // A correlated event keyed by a WfRun's id: it reaches that run's child.
            let key = wf_name(rng.gen_range(0..WF_POOL));
            let content = (id as i64) * 1_000_000 + n as i64;
            oracle.lock().correlated_sent.insert((key.clone(), content));
            let req = PutCorrelatedEventRequest {
                key: key.clone(),
                external_event_def_id: Some(ExternalEventDefId {
                    name: crate::scenario::PAID.into(),
                }),
                content: Some(values::int(content)),
            };
            let out = match within(4000, lh.put_correlated_event(req)).await {
                Some(Ok(r)) => format!("ok events={}", r.get_ref().external_events.len()),
                Some(Err(s)) => format!("{:?}", s.code()),
                None => "timeout".into(),
            };
            oracle.trace(format!("c{id} correlate {key} {out}@{node}"));
        } else if roll < 76 {
            // Wait a little for a run's `seen` event, on whichever node: held there until
            // that node applies the throw.
            let wf = wf_name(rng.gen_range(0..WF_POOL));
            let req = AwaitWorkflowEventRequest {
                wf_run_id: Some(WfRunId {
                    id: wf.clone(),
                    parent_wf_run_id: None,
                }),
                event_def_ids: vec![WorkflowEventDefId {
                    name: crate::scenario::SEEN.into(),
                }],
                workflow_events_to_ignore: vec![],
            };
            let out = match within(1500, lh.await_workflow_event(req)).await {
                Some(Ok(r)) => {
                    let ev = r.into_inner();
                    let out = format!("ok #{}", ev.id.as_ref().map_or(-1, |i| i.number));
                    oracle
                        .lock()
                        .awaited
                        .entry(wf.clone())
                        .or_default()
                        .push(ev);
                    out
                }
                Some(Err(s)) => format!("{:?}", s.code()),
                None => "timeout".into(),
            };
            oracle.trace(format!("c{id} await {wf} {out}@{node}"));
        } else if roll < 84 {
            // A person works on a run's review: assigns it to themself, completes (half of the
            // time) or cancels it.
            let wf = wf_name(rng.gen_range(0..WF_POOL));
            let task = UserTaskRunId {
                wf_run_id: Some(WfRunId {
                    id: wf.clone(),
                    parent_wf_run_id: None,
                }),
                user_task_guid: crate::scenario::REVIEW_GUID.into(),
            };
            let user = format!("c{id}");
            let (what, out) = match rng.gen_range(0..4) {
                0 => {
                    let req = AssignUserTaskRunRequest {
                        user_task_run_id: Some(task),
                        override_claim: rng.gen_bool(0.5),
                        user_group: Some(crate::scenario::REVIEW_GROUP.into()),
                        user_id: Some(user.clone()),
                    };
                    ("assign", within(4000, lh.assign_user_task_run(req)).await)
                }
                1 | 2 => {
                    let ok = rng.gen_bool(0.5);
                    oracle
                        .lock()
                        .reviews_sent
                        .entry(wf.clone())
                        .or_default()
                        .insert((user.clone(), ok));
                    let req = CompleteUserTaskRunRequest {
                        user_task_run_id: Some(task),
                        results: [("ok".to_string(), values::boolean(ok))].into(),
                        user_id: user.clone(),
                    };
                    let out = within(4000, lh.complete_user_task_run(req)).await;
                    if matches!(out, Some(Ok(_))) {
                        oracle
                            .lock()
                            .reviews_completed
                            .entry(wf.clone())
                            .or_default()
                            .push((user.clone(), ok));
                    }
                    ("complete", out)
                }
                _ => {
                    let req = CancelUserTaskRunRequest {
                        user_task_run_id: Some(task),
                    };
                    let out = within(4000, lh.cancel_user_task_run(req)).await;
                    if matches!(out, Some(Ok(_))) {
                        oracle.lock().reviews_cancelled.insert(wf.clone());
                    }
                    ("cancel", out)
                }
            };
            let out = match out {
                Some(Ok(_)) => "ok".to_string(),
                Some(Err(s)) => format!("{:?}", s.code()),
                None => "timeout".into(),
            };
            oracle.trace(format!("c{id} review-{what} {wf} {out}@{node}"));
        } else if roll < 88 {
            // Someone rescues a failed run's entrypoint: runs the failed node again, or moves
            // past it. Refused (FAILED_PRECONDITION) unless the thread is in ERROR.
            let wf = wf_name(rng.gen_range(0..WF_POOL));
            let skip = rng.gen_bool(0.5);
            oracle
                .lock()
                .rescues_sent
                .entry(wf.clone())
                .or_default()
                .push(Instant::now());
            let req = RescueThreadRunRequest {
                wf_run_id: Some(WfRunId {
                    id: wf.clone(),
                    parent_wf_run_id: None,
                }),
                thread_run_number: 0,
                skip_current_node: skip,
            };
            let out = match within(4000, lh.rescue_thread_run(req)).await {
                Some(Ok(r)) => {
                    *oracle.lock().rescues_acked.entry(wf.clone()).or_default() += 1;
                    format!("ok {:?}", r.into_inner().status())
                }
                Some(Err(s)) => format!("{:?}", s.code()),
                None => "timeout".into(),
            };
            oracle.trace(format!("c{id} rescue {wf} skip={skip} {out}@{node}"));
        } else if roll < 92 {
            // Someone schedules a tick every minute (3 in 4) or deletes the schedule.
            let sched = schedule_name(rng.gen_range(0..SCHEDULE_POOL));
            let create = rng.gen_range(0..4) < 3;
            let sent_ms = wall_ms();
            let (out, code) = if create {
                let req = ScheduleWfRequest {
                    id: Some(sched.clone()),
                    wf_spec_name: crate::scenario::TICK.into(),
                    cron_expression: "* * * * *".into(),
                    ..Default::default()
                };
                match within(4000, lh.schedule_wf(req)).await {
                    Some(Ok(_)) => ("ok".to_string(), Some(Code::Ok)),
                    Some(Err(s)) => (format!("{:?}", s.code()), Some(s.code())),
                    None => ("timeout".into(), None),
                }
            } else {
                let req = DeleteScheduledWfRunRequest {
                    id: Some(ScheduledWfRunId { id: sched.clone() }),
                };
                match within(4000, lh.delete_scheduled_wf_run(req)).await {
                    Some(Ok(_)) => ("ok".to_string(), Some(Code::Ok)),
                    Some(Err(s)) => (format!("{:?}", s.code()), Some(s.code())),
                    None => ("timeout".into(), None),
                }
            };
            // Only an answer from the leader's apply is definite; UNAVAILABLE and the like may
            // still be applied (a forwarded proposal whose answer was lost).
            let definite = matches!(code, Some(Code::Ok | Code::AlreadyExists));
            let call = ScheduleCall {
                sent_ms,
                answered_ms: definite.then(wall_ms),
                acked: definite,
            };
            let mut o = oracle.lock();
            let calls = if create {
                &mut o.schedule_creates
            } else {
                &mut o.schedule_deletes
            };
            calls.entry(sched.clone()).or_default().push(call);
            drop(o);
            let what = if create { "schedule" } else { "unschedule" };
            oracle.trace(format!("c{id} {what} {sched} {out}@{node}"));
        } else if roll < 96 {
            // A family run starts its child; an event `go` reaches the child by its nested id.
            let fam = family_name(rng.gen_range(0..FAMILY_POOL));
            let out = if rng.gen_bool(0.5) {
                let req = RunWfRequest {
                    wf_spec_name: crate::scenario::FAMILY.into(),
                    id: Some(fam.clone()),
                    ..Default::default()
                };
                match within(4000, lh.run_wf(req)).await {
                    Some(Ok(_)) => "run ok".to_string(),
                    Some(Err(s)) => format!("run {:?}", s.code()),
                    None => "run timeout".into(),
                }
            } else {
                let req = PutExternalEventRequest {
                    wf_run_id: Some(halter_api::wf_run_id::wf_run_id_of(&member_key(&fam))),
                    external_event_def_id: Some(ExternalEventDefId { name: "go".into() }),
                    guid: Some(format!("f{id}-{n}")),
                    content: Some(values::int((id as i64) * 1_000_000 + n as i64)),
                    thread_run_number: None,
                    node_run_position: None,
                };
                match within(4000, lh.put_external_event(req)).await {
                    Some(Ok(_)) => "pay ok".to_string(),
                    Some(Err(s)) => format!("pay {:?}", s.code()),
                    None => "pay timeout".into(),
                }
            };
            oracle.trace(format!("c{id} family {fam} {out}@{node}"));
        } else {
            let wf = wf_name(rng.gen_range(0..WF_POOL));
            let started = Instant::now();
            let out = within(
                4000,
                lh.get_wf_run(WfRunId {
                    id: wf.clone(),
                    parent_wf_run_id: None,
                }),
            )
            .await;
            let ended = Instant::now();
            let p = match out {
                Some(Ok(r)) => Some(progress(r.into_inner().status())),
                Some(Err(s)) if s.code() == Code::NotFound => Some(0),
                _ => None,
            };
            if let Some(p) = p {
                oracle.lock().reads.push(StatusRead {
                    wf: wf.clone(),
                    started,
                    ended,
                    progress: p,
                    client: id,
                });
            }
            oracle.trace(format!("c{id} get {wf} {p:?}@{node}"));
        }
        madsim::time::sleep(Duration::from_millis(rng.gen_range(5..60))).await;
    }
}
