//! A task worker as LittleHorse's own behave: a PollTask stream to one node with one request
//! outstanding, executing each task it is handed and reporting it; on a broken or silent
//! stream it reconnects to another node. Some executions are slower than the task's timeout,
//! so attempts time out and are handed out again while the late report is refused. Half the
//! executions save a checkpoint (a slow one half-way, which restarts its timeout); each attempt
//! first reads back the checkpoints earlier attempts saved.

use std::time::{Duration, Instant};

use halter_api::littlehorse::little_horse_client::LittleHorseClient;
use halter_api::littlehorse::*;
use halter_api::values;
use madsim::rand::Rng;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::cluster::{channel, within, CLIENT_PORT};
use crate::oracle::{wall_ms, Shared};
use crate::scenario::TASK;

/// The sim task's timeout (`timeout_seconds: 3` in its spec).
const TIMEOUT_MS: i64 = 3000;

pub async fn worker(id: usize, nodes: Vec<std::net::IpAddr>, oracle: Shared, until: Instant) {
    let mut rng = madsim::rand::thread_rng();
    let name = format!("w{id}");
    let mut saves = 0i64;
    while Instant::now() < until {
        let node = rng.gen_range(0..nodes.len());
        let mut lh = LittleHorseClient::new(channel(format!("{}:{CLIENT_PORT}", nodes[node])));
        // As LittleHorse's workers do before polling: a heartbeat, recorded in the TaskDef's
        // TaskWorkerGroup.
        let reg = RegisterTaskWorkerRequest {
            task_worker_id: name.clone(),
            task_def_id: Some(TaskDefId { name: TASK.into() }),
        };
        if let Some(Ok(_)) = within(4000, lh.register_task_worker(reg)).await {
            oracle.lock().registered.insert(name.clone());
        }
        let (tx, rx) = mpsc::channel::<PollTaskRequest>(1);
        let outbound =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let Some(Ok(resp)) = within(4000, lh.poll_task(outbound)).await else {
            madsim::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let mut inbound = resp.into_inner();
        while Instant::now() < until {
            let req = PollTaskRequest {
                task_def_id: Some(TaskDefId { name: TASK.into() }),
                client_id: name.clone(),
                task_worker_version: None,
            };
            // The attempt's timeout starts when its claim applies, after this.
            let mut fresh_ms = wall_ms();
            if tx.send(req).await.is_err() {
                break;
            }
            let task = match within(3000, inbound.message()).await {
                Some(Ok(Some(PollTaskResponse { result: Some(t) }))) => t,
                Some(Ok(Some(_))) => continue,
                // Broken, ended or silent: another node.
                _ => break,
            };
            let run = task.task_run_id.clone().unwrap_or_default();
            let wf = run.wf_run_id.clone().unwrap_or_default().id;
            let key = (wf.clone(), run.task_guid.clone(), task.attempt_number);
            {
                let mut o = oracle.lock();
                if let Some(prev) = o.handed.insert(key.clone(), id) {
                    drop(o);
                    oracle.violation(format!(
                        "task attempt {key:?} handed to worker {prev} and worker {id}"
                    ));
                }
            }
            oracle.trace(format!(
                "{name} got {wf}/{} attempt {}@{node} after {} checkpoints",
                run.task_guid, task.attempt_number, task.total_observed_checkpoints
            ));
            oracle
                .lock()
                .observed_checkpoints
                .insert(key.clone(), task.total_observed_checkpoints);
            read_back(&mut lh, &oracle, &task).await;
            // One execution in ten outlasts the 3 s timeout, and a WfRun can end (its interrupt
            // handler's 2 s timeout) while it runs. A slow one that checkpoints at 2 s gets a
            // new 3 s and may finish in time; one that checkpoints at 3.3 s is usually a zombie
            // by then, and must be told to stop.
            let slow = rng.gen_bool(0.1);
            let checkpoint = rng.gen_bool(0.5);
            let (before, after) = if slow {
                let save_at = if rng.gen_bool(0.7) { 2000 } else { 3300 };
                (save_at, if rng.gen_bool(0.5) { 1500 } else { 3500 })
            } else {
                (rng.gen_range(5..50), rng.gen_range(0..50))
            };
            madsim::time::sleep(Duration::from_millis(before)).await;
            if checkpoint {
                saves += 1;
                let value = (id as i64) * 1_000_000 + saves;
                match save(&mut lh, &oracle, &task, value).await {
                    // Told to stop: this attempt is over, a worker drops it unreported.
                    Saved::Stop => continue,
                    Saved::At(sent_ms) => fresh_ms = sent_ms,
                    Saved::Unknown => {}
                }
            }
            madsim::time::sleep(Duration::from_millis(after)).await;
            let input = task
                .variables
                .first()
                .and_then(|v| v.value.clone())
                .unwrap_or_default();
            let report = ReportTaskRun {
                task_run_id: Some(run.clone()),
                time: None,
                status: TaskStatus::TaskSuccess as i32,
                result: Some(report_task_run::Result::Output(match input.value {
                    Some(variable_value::Value::Int(n)) => values::int(n * 10),
                    _ => values::int(-1),
                })),
                log_output: None,
                attempt_number: task.attempt_number,
                total_checkpoints: 0,
            };
            let out = match within(4000, lh.report_task(report)).await {
                Some(Ok(_)) => {
                    oracle.lock().reports += 1;
                    "ok".to_string()
                }
                Some(Err(s)) => {
                    if s.code() == tonic::Code::FailedPrecondition
                        && wall_ms() < fresh_ms + TIMEOUT_MS
                    {
                        oracle.violation(format!(
                            "{wf}/{} attempt {} refused as timed out {} ms after its claim \
                             or checkpoint was sent, within its {TIMEOUT_MS} ms timeout",
                            run.task_guid,
                            task.attempt_number,
                            wall_ms() - fresh_ms
                        ));
                    }
                    format!("{:?}", s.code())
                }
                None => "timeout".into(),
            };
            oracle.trace(format!(
                "{name} report {wf}/{} attempt {} {out}",
                run.task_guid, task.attempt_number
            ));
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
}

fn int_of(v: &Option<VariableValue>) -> Option<i64> {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(variable_value::Value::Int(n)) => Some(*n),
        _ => None,
    }
}

/// Reads every checkpoint earlier attempts saved, as `execute_and_checkpoint` does, and checks
/// each against the value whose save was acknowledged under that number.
async fn read_back(lh: &mut LittleHorseClient<Channel>, oracle: &Shared, task: &ScheduledTask) {
    let run = task.task_run_id.clone().unwrap_or_default();
    let wf = run.wf_run_id.clone().unwrap_or_default().id;
    for k in 0..task.total_observed_checkpoints {
        let id = CheckpointId {
            task_run: Some(run.clone()),
            checkpoint_number: k,
        };
        let got = match within(3000, lh.get_checkpoint(id)).await {
            Some(Ok(c)) => int_of(&c.into_inner().value),
            other => {
                let out = other.map_or("timeout".into(), |r| format!("{:?}", r.err()));
                oracle.trace(format!("read checkpoint {wf}/{} {k}: {out}", run.task_guid));
                continue;
            }
        };
        let mut o = oracle.lock();
        o.checkpoints_read += 1;
        let acked = o
            .checkpoints
            .get(&(wf.clone(), run.task_guid.clone(), k))
            .map(|(_, v)| *v);
        drop(o);
        if acked.is_some() && acked != got {
            oracle.violation(format!(
                "checkpoint {k} of {wf}/{} reads {got:?}, but saving {acked:?} as {k} was \
                 acknowledged",
                run.task_guid
            ));
        }
    }
}

/// What became of a checkpoint's save.
enum Saved {
    /// Saved: the attempt's timeout restarted when it applied, after `At`'s wall-clock ms.
    At(i64),
    /// The server said to stop.
    Stop,
    /// No answer: it may or may not have been saved.
    Unknown,
}

/// Saves `value` as a checkpoint of the task's attempt.
async fn save(
    lh: &mut LittleHorseClient<Channel>,
    oracle: &Shared,
    task: &ScheduledTask,
    value: i64,
) -> Saved {
    let sent_ms = wall_ms();
    let run = task.task_run_id.clone().unwrap_or_default();
    let wf = run.wf_run_id.clone().unwrap_or_default().id;
    let req = PutCheckpointRequest {
        task_run_id: Some(run.clone()),
        task_attempt: task.attempt_number,
        value: Some(values::int(value)),
        logs: None,
    };
    let r = match within(3000, lh.put_checkpoint(req)).await {
        Some(Ok(r)) => r.into_inner(),
        other => {
            let out = other.map_or("timeout".into(), |r| format!("{:?}", r.err()));
            oracle.trace(format!("save checkpoint {wf}/{}: {out}", run.task_guid));
            return Saved::Unknown;
        }
    };
    if r.flow_control_continue_type == put_checkpoint_response::FlowControlContinue::StopTask as i32
    {
        oracle.trace(format!(
            "save checkpoint {wf}/{} attempt {}: stop",
            run.task_guid, task.attempt_number
        ));
        return Saved::Stop;
    }
    let k = r
        .created_checkpoint
        .and_then(|c| c.id)
        .map_or(-1, |i| i.checkpoint_number);
    oracle.trace(format!(
        "save checkpoint {wf}/{} attempt {}: {k}",
        run.task_guid, task.attempt_number
    ));
    let key = (wf.clone(), run.task_guid.clone(), k);
    let prev = oracle
        .lock()
        .checkpoints
        .insert(key.clone(), (task.attempt_number, value));
    if let Some((_, p)) = prev.filter(|(_, p)| *p != value) {
        oracle.violation(format!(
            "checkpoint {key:?} acknowledged for {p} and for {value}"
        ));
    }
    Saved::At(sent_ms)
}
