//! The context one command is applied in: the open tables, the entry's time, and the effects
//! collected for the node.

use halter_storage::Tables;

/// Something the node should do after the batch commits. Followers ignore effects; they exist
/// so the leader does not have to rescan storage after every entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A timer was armed to fire at `due_ms`.
    TimerArmed { due_ms: i64 },
    /// A WfRun changed state (for watchers and long polls).
    WfRunChanged { wf_run_id: String },
    /// A task attempt of this TaskDef is waiting for a worker (wakes held polls).
    TaskQueued { task_def: String },
}

pub struct Ctx<'a, 't> {
    pub tables: &'a mut Tables<'t>,
    /// The command's time: the leader's stamp, never earlier than any command applied before.
    pub now_ms: i64,
    pub effects: Vec<Effect>,
}
