//! Task workers' heartbeats (RegisterTaskWorker) are recorded in their TaskDef's
//! TaskWorkerGroup, and nothing else is: after healing, a heartbeat sent by the checker is
//! listed (retried while the cluster settles: a heartbeat that could not commit within its wait
//! is answered anyway), with the time it was sent or later and this cluster's client addresses
//! as its hosts, and every other worker listed is a simulated worker that registered, with
//! hosts from this cluster.

use std::time::Duration;

use halter_api::littlehorse::*;

use super::retry;
use crate::cluster::{within, ClusterView, CLIENT_PORT};
use crate::oracle::{wall_ms, Oracle};
use crate::scenario::TASK;

const CHECKER: &str = "checker";

pub struct Seen {
    group: TaskWorkerGroup,
    sent_ms: i64,
    node_hosts: Vec<String>,
}

pub async fn observe(c: &ClusterView) -> Result<Seen, String> {
    let def = TaskDefId { name: TASK.into() };
    let node_hosts: Vec<String> = c
        .ips
        .iter()
        .map(|ip| format!("{ip}:{CLIENT_PORT}"))
        .collect();
    for _ in 0..20 {
        let sent_ms = wall_ms();
        let mut lh = c.lh(0);
        let reg = RegisterTaskWorkerRequest {
            task_worker_id: CHECKER.into(),
            task_def_id: Some(def.clone()),
        };
        if let Some(Ok(_)) = within(8000, lh.register_task_worker(reg)).await {
            let group = retry(|| {
                let mut lh = c.lh(1 % c.len());
                let def = def.clone();
                async move { lh.get_task_worker_group(def).await }
            })
            .await
            .map_err(|e| format!("reading the TaskWorkerGroup: {e}"))?
            .into_inner();
            if group.task_workers.contains_key(CHECKER) {
                return Ok(Seen {
                    group,
                    sent_ms,
                    node_hosts,
                });
            }
        }
        madsim::time::sleep(Duration::from_millis(500)).await;
    }
    Err("the checker's heartbeat was never recorded in the TaskWorkerGroup".into())
}

pub fn check(o: &Oracle, seen: &Seen) -> Result<(), String> {
    let mut want = seen.node_hosts.clone();
    want.sort();
    for (id, w) in &seen.group.task_workers {
        if id != &w.task_worker_id {
            return Err(format!("worker {id} is listed as {}", w.task_worker_id));
        }
        if id != CHECKER && !o.registered.contains(id) {
            return Err(format!("worker {id} is listed but never registered"));
        }
        let mut hosts: Vec<String> = w
            .hosts
            .iter()
            .map(|h| format!("{}:{}", h.host, h.port))
            .collect();
        hosts.sort();
        // The checker registered with every member in; a worker may have registered while a
        // membership change had one out.
        let fits = if id == CHECKER {
            hosts == want
        } else {
            !hosts.is_empty() && hosts.iter().all(|h| want.contains(h))
        };
        if !fits {
            return Err(format!(
                "worker {id} was told to poll {hosts:?}, the cluster is {want:?}"
            ));
        }
    }
    let at = seen.group.task_workers[CHECKER]
        .latest_heartbeat
        .as_ref()
        .map_or(0, halter_state_machine::time::ms);
    if at < seen.sent_ms {
        return Err(format!(
            "the checker's heartbeat is stamped {at}, before it was sent at {}",
            seen.sent_ms
        ));
    }
    Ok(())
}
