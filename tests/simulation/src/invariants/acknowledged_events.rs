//! Every acknowledged event is present, once, with the content that was sent, on every node.
//! An acknowledgement is sent only after commit (a quorum fsynced it) and apply, so no crash,
//! partition or leader change may lose it; a retried guid never makes a second event; and an
//! event whose put timed out, if it exists, has exactly the content sent with its guid. An event
//! made by a correlation (guid `ce...`) carries the content of a PutCorrelatedEvent for its
//! WfRun's key.

use std::collections::BTreeMap;

use halter_api::littlehorse::variable_value::Value;

use super::Observed;
use crate::oracle::Oracle;

pub fn check(o: &Oracle, obs: &Observed) -> Result<(), String> {
    for ((node, wf), events) in &obs.events {
        let mut seen: BTreeMap<String, i64> = BTreeMap::new();
        for e in events {
            let guid = e.id.as_ref().map(|i| i.guid.clone()).unwrap_or_default();
            let Some(Value::Int(v)) = e.content.as_ref().and_then(|c| c.value.clone()) else {
                return Err(format!(
                    "event {wf}/{guid} on node {node} has no INT content"
                ));
            };
            if seen.insert(guid.clone(), v).is_some() {
                return Err(format!("event {wf}/{guid} appears twice on node {node}"));
            }
            if guid.starts_with("ce") {
                if !o.correlated_sent.contains(&(wf.clone(), v)) {
                    return Err(format!(
                        "correlated event {wf}/{guid} on node {node} has content {v}, never put for key {wf}"
                    ));
                }
                continue;
            }
            match o.sent.get(&(wf.clone(), guid.clone())) {
                Some(sent) if *sent == v => {}
                other => {
                    return Err(format!(
                        "event {wf}/{guid} on node {node} has content {v}, sent {other:?}"
                    ))
                }
            }
        }
        for ((awf, guid), content) in &o.acked {
            if awf == wf && seen.get(guid) != Some(content) {
                return Err(format!(
                    "acknowledged event {wf}/{guid} missing on node {node}"
                ));
            }
        }
    }
    Ok(())
}
