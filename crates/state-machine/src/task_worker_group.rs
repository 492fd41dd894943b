//! TaskWorkerGroups: which task workers of a TaskDef are alive, for people and dashboards
//! (LittleHorse's `GetTaskWorkerGroup`).
//!
//! Each RegisterTaskWorker call (a worker's heartbeat, once a minute in LittleHorse's SDKs)
//! becomes a `TaskWorkerHeartbeat` command: applying it stamps the worker with the entry's time
//! and the hosts it was told to poll, and drops the group's workers silent for longer than
//! LittleHorse's 90 seconds. Nothing in task dispatch reads the group: it is a record, and a
//! heartbeat that never commits costs a worker nothing but its line here.

use halter_api::halter::TaskWorkerHeartbeat;
use halter_api::limits::{MAX_GUID_LEN, MAX_NAME_LEN};
use halter_api::littlehorse::{TaskDefId, TaskWorkerGroup, TaskWorkerGroupId, TaskWorkerMetadata};
use halter_api::names::check_name;
use halter_storage::codec;
use redb::ReadableTable;

use crate::ctx::Ctx;
use crate::error::{invalid, HResult, Rejection};
use crate::time::{ms, ts};

/// A worker silent for this long leaves its group at the next heartbeat (LittleHorse's
/// `MAX_TASK_WORKER_INACTIVITY`).
pub const MAX_INACTIVITY_MS: i64 = 90_000;
/// Workers kept per group: past it, the one silent longest makes room. Client ids come from
/// clients, so without a bound a caller inventing ids could grow one row without limit.
pub const MAX_WORKERS: usize = 1_000;
/// Hosts kept per worker (a cluster has a handful of members).
pub const MAX_HOSTS: usize = 64;

pub fn heartbeat(ctx: &mut Ctx, hb: &TaskWorkerHeartbeat) -> HResult<()> {
    check_name("TaskDef name", &hb.task_def_name)?;
    if hb.worker_id.is_empty() || hb.worker_id.len() > MAX_GUID_LEN {
        return Err(invalid("task_worker_id must be 1 to 128 characters").into());
    }
    if hb.hosts.len() > MAX_HOSTS || hb.hosts.iter().any(|h| h.host.len() > MAX_NAME_LEN * 2) {
        return Err(invalid("too many hosts, or a host name too long").into());
    }
    let name = hb.task_def_name.as_str();
    if ctx.tables.task_defs.open()?.get(name)?.is_none() {
        return Err(Rejection::NotFound(format!("TaskDef '{name}' not found")).into());
    }
    let table = ctx.tables.task_worker_groups.open_mut()?;
    let mut group: TaskWorkerGroup =
        codec::get(&*table, name)?.unwrap_or_else(|| TaskWorkerGroup {
            id: Some(TaskWorkerGroupId {
                task_def_id: Some(TaskDefId { name: name.into() }),
            }),
            created_at: Some(ts(ctx.now_ms)),
            task_workers: Default::default(),
        });
    let now = ctx.now_ms;
    group.task_workers.retain(|_, w| {
        w.latest_heartbeat
            .as_ref()
            .is_some_and(|t| now - ms(t) < MAX_INACTIVITY_MS)
    });
    group.task_workers.insert(
        hb.worker_id.clone(),
        TaskWorkerMetadata {
            task_worker_id: hb.worker_id.clone(),
            latest_heartbeat: Some(ts(now)),
            hosts: hb.hosts.clone(),
        },
    );
    while group.task_workers.len() > MAX_WORKERS {
        // Silent longest first; among equals, the smallest id (a BTreeMap: the same choice on
        // every replica).
        let Some(oldest) = group
            .task_workers
            .iter()
            .min_by_key(|(_, w)| w.latest_heartbeat.as_ref().map_or(i64::MIN, ms))
            .map(|(id, _)| id.clone())
        else {
            break;
        };
        group.task_workers.remove(&oldest);
    }
    codec::put(table, name, &group)?;
    Ok(())
}

/// Removes a TaskDef's group (the TaskDef is being deleted).
pub fn delete_of(ctx: &mut Ctx, task_def: &str) -> HResult<()> {
    ctx.tables.task_worker_groups.open_mut()?.remove(task_def)?;
    Ok(())
}
