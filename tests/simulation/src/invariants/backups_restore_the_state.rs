//! An online backup holds the state it was taken at, row for row: restored into an empty store
//! (as `halter restore` does), its digest equals the digest the node it came from reports at
//! the backup's applied index. A backup that dropped, doubled or mangled a row, or whose rows
//! and applied index came from different points, would differ.

use halter_api::halter::Empty;
use halter_node::raft::{state_machine::restore_backup, HalterNode};
use halter_storage::Store;

use crate::cluster::{digest, within, ClusterView};

pub async fn check(c: &ClusterView) -> Result<(), String> {
    // The last node: a follower more often than not, whose backup needs the leader's read index.
    let n = c.len() - 1;
    let mut last = String::new();
    for _ in 0..5 {
        let mut admin = c.admin(n);
        let Some(Ok(reply)) = within(4000, admin.backup(Empty {})).await else {
            last = "the backup call failed".into();
            continue;
        };
        let mut stream = reply.into_inner();
        let (mut bytes, mut at) = (Vec::new(), None);
        loop {
            match within(4000, stream.message()).await {
                Some(Ok(Some(chunk))) => {
                    at.get_or_insert(chunk.applied_index);
                    bytes.extend_from_slice(&chunk.data);
                }
                Some(Ok(None)) => break,
                Some(Err(s)) => return Err(format!("the backup stream failed: {s}")),
                None => return Err("the backup stream stalled".into()),
            }
        }
        let at = at.ok_or("the backup streamed no chunk")?;
        let Some(now) = digest(c, n).await else {
            last = "no digest".into();
            continue;
        };
        if now.applied_index != at {
            // A timer fired in between; take another.
            last = format!("backup at {at}, digest at {}", now.applied_index);
            continue;
        }
        let store = Store::in_memory().map_err(|e| e.to_string())?;
        let node = HalterNode {
            peer_addr: "restored:1".into(),
            client_addr: "restored:2".into(),
        };
        let (applied, _) = restore_backup(&store, &mut bytes.as_slice(), 99, node)
            .map_err(|e| format!("restoring the backup: {e}"))?;
        if applied.index != at {
            return Err(format!(
                "the backup's meta says {applied}, its first chunk {at}"
            ));
        }
        let txn = store.begin_read().map_err(|e| e.to_string())?;
        let restored = halter_storage::digest::digest(&txn).map_err(|e| e.to_string())?;
        if restored != now.digest {
            return Err(format!(
                "node {n}'s backup at index {at} restores to digest {restored}, the node has {}",
                now.digest
            ));
        }
        return Ok(());
    }
    Err(format!("no backup matched a digest: {last}"))
}
