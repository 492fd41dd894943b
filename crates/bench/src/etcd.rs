//! etcd as the W1 peer: the same closed loop, `Put` of a unique key with a value of the same
//! size as Halter's event payload.

use anyhow::Context;
use serde_json::json;

use crate::driver::closed_loop;
use crate::sys::Procs;
use crate::workloads::etcd_support::{emit, merge, run_tag, Common, Load};

pub async fn w1(common: &Common, load: &Load) -> anyhow::Result<()> {
    // `conns` clients per endpoint, interleaved like Halter's pool.
    let mut clients = Vec::new();
    for _ in 0..common.conns.max(1) {
        for ep in &common.endpoints {
            let url = if ep.starts_with("http") {
                ep.clone()
            } else {
                format!("http://{ep}")
            };
            clients.push(
                etcd_client::Client::connect([url], None)
                    .await
                    .with_context(|| format!("connecting to etcd at {ep}"))?,
            );
        }
    }
    let value = vec![b'x'; load.payload];
    let procs = Procs::new(common.pids.clone());
    for &conc in &load.conc {
        let tag = run_tag();
        let (clients, value) = (clients.clone(), value.clone());
        let out = closed_loop(&load.bounds(conc), &procs, move |w, i| {
            let mut c = clients[w % clients.len()].clone();
            let key = format!("bench/{tag}/{w:04}/{i:09}");
            let value = value.clone();
            async move {
                c.put(key, value, None).await?;
                Ok(())
            }
        })
        .await;
        let line = merge(
            json!({"workload": "w1", "target": "etcd", "label": common.label,
                   "endpoints": common.endpoints.len(), "conc": conc, "payload": load.payload}),
            out.json(),
        );
        emit(&common.out, &line)?;
    }
    Ok(())
}
