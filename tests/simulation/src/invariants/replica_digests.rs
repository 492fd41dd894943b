//! All replicas converge: once healed and idle, every node reaches the same applied index, and
//! at the same index every node's state digest (every table, byte for byte) is the same, which
//! only holds if apply is deterministic and no replica lost or doubled an entry.

use std::time::Duration;

use crate::cluster::{digest, ClusterView};

pub async fn check(c: &ClusterView) -> Result<String, String> {
    let mut last = Vec::new();
    for _ in 0..100 {
        let mut replies = Vec::new();
        for i in 0..c.len() {
            replies.push(digest(c, i).await);
        }
        if replies.iter().all(Option::is_some) {
            let r: Vec<_> = replies.into_iter().flatten().collect();
            if r.iter().all(|x| x.applied_index == r[0].applied_index) {
                if let Some(bad) = r.iter().find(|x| x.digest != r[0].digest) {
                    return Err(format!(
                        "replicas differ at applied index {}: {} vs {}",
                        r[0].applied_index, r[0].digest, bad.digest
                    ));
                }
                return Ok(r[0].digest.clone());
            }
            last = r.iter().map(|x| x.applied_index).collect();
        }
        madsim::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "replicas never reached the same applied index: {last:?}"
    ))
}
