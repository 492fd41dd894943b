//! Halter as a benchmark target: a pool of client connections spread over the nodes, the specs
//! and definitions the workloads need, and the operations themselves.

use std::time::Duration;

use anyhow::{bail, Context};
use halter_api::build;
use halter_api::halter::cluster_client::ClusterClient;
use halter_api::halter::{ClusterStatus, Empty};
use halter_api::littlehorse::little_horse_client::LittleHorseClient;
use halter_api::littlehorse::{
    variable_value, ExternalEventDefId, LhStatus, NodeRun, NodeRunId, PutExternalEventDefRequest,
    PutExternalEventRequest, RunWfRequest, VariableValue, WfRunId,
};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

pub type Client = LittleHorseClient<Channel>;

/// `conns` HTTP/2 connections to each endpoint, interleaved so that worker `w` talks to
/// endpoint `w % endpoints`.
#[derive(Clone)]
pub struct Pool {
    clients: Vec<Client>,
}

pub fn url(addr: &str) -> String {
    if addr.starts_with("http://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

impl Pool {
    pub async fn connect(endpoints: &[String], conns: usize) -> anyhow::Result<Self> {
        let mut clients = Vec::new();
        for _ in 0..conns.max(1) {
            for ep in endpoints {
                let ch = Endpoint::from_shared(url(ep))?
                    .connect_timeout(Duration::from_secs(5))
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {ep}"))?;
                clients.push(LittleHorseClient::new(ch));
            }
        }
        Ok(Self { clients })
    }

    pub fn client(&self, worker: usize) -> Client {
        self.clients[worker % self.clients.len()].clone()
    }
}

/// A ~`size`-byte JSON object, the payload of every benchmark event.
pub fn payload(size: usize) -> VariableValue {
    let mut s = String::from("{\"order\":\"bench\",\"note\":\"");
    while s.len() + 2 < size {
        s.push('x');
    }
    s.push_str("\"}");
    VariableValue {
        value: Some(variable_value::Value::JsonObj(s)),
    }
}

/// Creates an ExternalEventDef; an existing one is fine.
pub async fn ensure_def(c: &mut Client, name: &str) -> anyhow::Result<()> {
    match c
        .put_external_event_def(PutExternalEventDefRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => Ok(()),
        Err(s) => Err(s).with_context(|| format!("PutExternalEventDef {name}")),
    }
}

/// Registers `entrypoint → wait for def (timeout) → exit` under `name`.
pub async fn ensure_wait_spec(
    c: &mut Client,
    name: &str,
    def: &str,
    timeout_seconds: Option<i64>,
) -> anyhow::Result<()> {
    ensure_def(c, def).await?;
    c.put_wf_spec(build::wait_once_spec(name, def, timeout_seconds))
        .await
        .with_context(|| format!("PutWfSpec {name}"))?;
    Ok(())
}

pub fn put_event(wf_run_id: String, def: &str, content: VariableValue) -> PutExternalEventRequest {
    PutExternalEventRequest {
        wf_run_id: Some(WfRunId {
            id: wf_run_id,
            parent_wf_run_id: None,
        }),
        external_event_def_id: Some(ExternalEventDefId { name: def.into() }),
        guid: None,
        content: Some(content),
        thread_run_number: None,
        node_run_position: None,
    }
}

pub fn run_wf(spec: &str, id: String) -> RunWfRequest {
    RunWfRequest {
        wf_spec_name: spec.into(),
        id: Some(id),
        ..Default::default()
    }
}

/// W2's unit of work: start a WfRun that waits for an event, deliver the event, read the WfRun
/// back and check it COMPLETED.
pub async fn deliver_to_resume(
    c: &mut Client,
    spec: &str,
    def: &str,
    id: String,
    content: VariableValue,
) -> anyhow::Result<()> {
    c.run_wf(run_wf(spec, id.clone())).await?;
    c.put_external_event(put_event(id.clone(), def, content))
        .await?;
    let run = c
        .get_wf_run(WfRunId {
            id: id.clone(),
            parent_wf_run_id: None,
        })
        .await?
        .into_inner();
    if run.status() != LhStatus::Completed {
        bail!("WfRun {id} is {:?}, not COMPLETED", run.status());
    }
    Ok(())
}

/// The EXTERNAL_EVENT NodeRun (position 1 of thread 0) of a `wait_once_spec` WfRun.
pub async fn wait_node_run(c: &mut Client, id: &str) -> anyhow::Result<NodeRun> {
    Ok(c.get_node_run(NodeRunId {
        wf_run_id: Some(WfRunId {
            id: id.into(),
            parent_wf_run_id: None,
        }),
        thread_run_number: 0,
        position: 1,
    })
    .await?
    .into_inner())
}

pub fn ts_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// A node's view of the cluster, from its peer address.
pub async fn cluster_status(peer_addr: &str) -> anyhow::Result<ClusterStatus> {
    let ch = Endpoint::from_shared(url(peer_addr))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    Ok(ClusterClient::new(ch).status(Empty {}).await?.into_inner())
}
