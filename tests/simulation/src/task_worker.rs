//! A task worker as LittleHorse's own behave: a PollTask stream to one node with one request
//! outstanding, executing each task it is handed and reporting it; on a broken or silent
//! stream it reconnects to another node. Some executions are slower than the task's timeout,
//! so attempts time out and are handed out again while the late report is refused.

use std::time::{Duration, Instant};

use halter_api::littlehorse::little_horse_client::LittleHorseClient;
use halter_api::littlehorse::*;
use halter_api::values;
use madsim::rand::Rng;
use tokio::sync::mpsc;

use crate::cluster::{channel, within, CLIENT_PORT};
use crate::oracle::Shared;
use crate::scenario::TASK;

pub async fn worker(id: usize, nodes: Vec<std::net::IpAddr>, oracle: Shared, until: Instant) {
    let mut rng = madsim::rand::thread_rng();
    let name = format!("w{id}");
    while Instant::now() < until {
        let node = rng.gen_range(0..nodes.len());
        let mut lh = LittleHorseClient::new(channel(format!("{}:{CLIENT_PORT}", nodes[node])));
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
                "{name} got {wf}/{} attempt {}@{node}",
                run.task_guid, task.attempt_number
            ));
            // One execution in ten outlasts the 3 s timeout, and a WfRun can end (its interrupt
            // handler's 2 s timeout) while it runs.
            let work = if rng.gen_bool(0.1) {
                3500
            } else {
                rng.gen_range(5..100)
            };
            madsim::time::sleep(Duration::from_millis(work)).await;
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
                Some(Err(s)) => format!("{:?}", s.code()),
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
