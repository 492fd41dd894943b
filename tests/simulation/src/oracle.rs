//! The client oracle: everything clients sent and were told, in the order it happened, so the
//! invariants can be checked against what was acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// One read of a WfRun's status: when it started and ended, and how far the run had got.
#[derive(Clone, Debug)]
pub struct StatusRead {
    pub wf: String,
    pub started: Instant,
    pub ended: Instant,
    /// 0 = not found, 1 = running, 2 = ended (completed or failed).
    pub progress: u8,
    pub client: usize,
}

#[derive(Default)]
pub struct Oracle {
    /// Every operation and outcome, in order: hashed into the seed's digest.
    pub trace: Vec<String>,
    /// (WfRun id, guid) -> the content sent with it (retries send the same).
    pub sent: BTreeMap<(String, String), i64>,
    /// Acknowledged events: (WfRun id, guid) -> content.
    pub acked: BTreeMap<(String, String), i64>,
    /// WfRuns whose RunWf was acknowledged.
    pub runs: BTreeSet<String>,
    /// WfRun id -> when its RunWf was first acknowledged (or answered ALREADY_EXISTS).
    pub run_acked_at: BTreeMap<String, Instant>,
    pub reads: Vec<StatusRead>,
    /// (term -> the leaders seen in it) as observed by the monitor.
    pub leaders: BTreeMap<u64, BTreeSet<u64>>,
    /// node -> the highest term the monitor saw it in.
    pub terms: BTreeMap<u64, u64>,
    pub violations: Vec<String>,
    pub faults: usize,
    /// Contents sent in PutCorrelatedEvent, by key (the WfRun id the key stands for).
    pub correlated_sent: BTreeSet<(String, i64)>,
    /// Task attempts handed to workers: (WfRun id, task guid, attempt) -> worker.
    pub handed: BTreeMap<(String, String, i32), usize>,
    /// Task reports acknowledged.
    pub reports: usize,
    /// Acknowledged checkpoints: (WfRun id, task guid, number) -> (attempt, value saved).
    pub checkpoints: BTreeMap<(String, String, i32), (i32, i64)>,
    /// `total_observed_checkpoints` of each handed attempt: (WfRun id, task guid, attempt).
    pub observed_checkpoints: BTreeMap<(String, String, i32), i32>,
    /// Checkpoints later attempts read back.
    pub checkpoints_read: usize,
    /// Workers whose RegisterTaskWorker was answered.
    pub registered: BTreeSet<String>,
    /// WorkflowEvents `AwaitWorkflowEvent` returned, by WfRun id.
    pub awaited: BTreeMap<String, Vec<halter_api::littlehorse::WorkflowEvent>>,
    /// Acknowledged CompleteUserTaskRun of a WfRun's review: (user, the `ok` result given).
    pub reviews_completed: BTreeMap<String, Vec<(String, bool)>>,
    /// Every CompleteUserTaskRun sent for a WfRun's review, acknowledged or not: (user, ok).
    pub reviews_sent: BTreeMap<String, BTreeSet<(String, bool)>>,
    /// WfRuns whose review a CancelUserTaskRun was acknowledged for.
    pub reviews_cancelled: BTreeSet<String>,
    /// When each RescueThreadRun of a WfRun's entrypoint was sent, acknowledged or not: from
    /// then on the run may be seen running again after it had ended.
    pub rescues_sent: BTreeMap<String, Vec<Instant>>,
    /// Acknowledged RescueThreadRun calls, by WfRun id.
    pub rescues_acked: BTreeMap<String, usize>,
    /// ScheduleWf calls, by schedule id, in the order sent.
    pub schedule_creates: BTreeMap<String, Vec<ScheduleCall>>,
    /// DeleteScheduledWfRun calls, by schedule id, in the order sent.
    pub schedule_deletes: BTreeMap<String, Vec<ScheduleCall>>,
}

/// One ScheduleWf or DeleteScheduledWfRun, in wall-clock ms (the clock entries are stamped
/// with, simulated and shared by every host).
#[derive(Clone, Debug)]
pub struct ScheduleCall {
    pub sent_ms: i64,
    /// When a definite answer came (OK, or an error that means it was refused or already
    /// done); `None` after a timeout, when it may still be applied later.
    pub answered_ms: Option<i64>,
    /// Whether it took effect (OK, or ALREADY_EXISTS for a create).
    pub acked: bool,
}

/// The simulated wall clock in ms since the epoch.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Oracle {
    /// A RunWf of `wf` was answered OK or ALREADY_EXISTS: the run exists from now on.
    pub fn run_acknowledged(&mut self, wf: &str) {
        self.runs.insert(wf.to_string());
        self.run_acked_at
            .entry(wf.to_string())
            .or_insert_with(Instant::now);
    }
}

#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<Oracle>>);

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Oracle> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn trace(&self, line: String) {
        self.lock().trace.push(line);
    }

    pub fn violation(&self, line: String) {
        let mut o = self.lock();
        o.trace.push(format!("VIOLATION {line}"));
        o.violations.push(line);
    }
}
