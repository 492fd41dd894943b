//! `halterctl cluster backup FILE`: an online backup of the whole state, from any node.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use halter_api::halter::{cluster_client::ClusterClient, Empty};
use serde_json::json;
use tonic::transport::Channel;

use crate::Shown;

/// Streams the backup into `FILE.partial`, fsyncs it, then renames it to `file`: a backup that
/// was cut off (the node died, the connection dropped) never takes the name of a whole one.
pub async fn take(admin: &mut ClusterClient<Channel>, file: &Path) -> anyhow::Result<Shown> {
    let partial = PathBuf::from(format!("{}.partial", file.display()));
    let mut out = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let written = async {
        let mut stream = admin.backup(Empty {}).await?.into_inner();
        let (mut bytes, mut index, mut term) = (0u64, 0u64, 0u64);
        while let Some(chunk) = stream.message().await? {
            if chunk.applied_index > 0 {
                (index, term) = (chunk.applied_index, chunk.applied_term);
            }
            out.write_all(&chunk.data)?;
            bytes += chunk.data.len() as u64;
        }
        out.sync_all()?;
        anyhow::Ok((bytes, index, term))
    }
    .await;
    let (bytes, index, term) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, file).with_context(|| format!("renaming to {}", file.display()))?;
    Ok(Shown::One(json!({
        "file": file.display().to_string(),
        "bytes": bytes,
        "appliedIndex": index,
        "appliedTerm": term,
    })))
}
