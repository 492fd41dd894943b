//! Search indexes a state from an older build lacks, built when a node opens or installs it.

use halter_storage::tables::meta;
use halter_storage::Tables;
use redb::ReadableTable;

use crate::error::{ApplyError, Outcome};

/// An error while reading stored rows to build an index: rows are not requests, so a decode
/// failure is a storage failure, fatal like any other.
pub(crate) fn fatal(e: Outcome) -> ApplyError {
    match e {
        Outcome::Fatal(f) => f,
        Outcome::Rejected(r) => ApplyError::Storage(halter_storage::StorageError::Snapshot(
            format!("building a search index: {r}"),
        )),
    }
}

/// Builds SearchVariable's and SearchTaskRun's indexes from the stored rows if this state has
/// never had them: a data directory written by a build older than the indexes, or a snapshot
/// taken by one. The indexes are a function of the other tables, so every replica that builds
/// them gets the same rows; a marker in `meta` says they were built. Returns whether it built.
pub fn build_if_missing(tables: &mut Tables<'_>) -> Result<bool, ApplyError> {
    let mut built = false;
    if tables.meta.open()?.get(meta::SEARCH_INDEXES)?.is_none() {
        crate::variable_index::rebuild(tables)?;
        crate::task_run_index::rebuild(tables)?;
        tables.meta.open_mut()?.insert(meta::SEARCH_INDEXES, 1)?;
        built = true;
    }
    if tables
        .meta
        .open()?
        .get(meta::WORKFLOW_EVENT_INDEX)?
        .is_none()
    {
        crate::workflow_event::rebuild_index(tables)?;
        tables
            .meta
            .open_mut()?
            .insert(meta::WORKFLOW_EVENT_INDEX, 1)?;
        built = true;
    }
    Ok(built)
}
