//! Where the leader's proposer waits for its entries' outcomes.
//!
//! openraft 0.9 returns an applied entry's outcome by way of its core task: the state machine
//! worker reports the apply to the core, which then answers the `client_write` caller. Under
//! load that core is busy appending (and fsyncing) the next entries, so an answer waited behind
//! them; at one client it is one more thread hand-off per write. Instead the proposer tags each
//! entry it proposes, and the state machine hands a tagged entry's outcomes to the waiting
//! proposer itself, right after the apply transaction that holds them is committed: the same
//! outcomes openraft would answer, before its core has even heard of the apply. (Reads are not
//! affected: they wait for the state machine's own applied index, set right after the commit
//! and before any outcome is handed over.)
//!
//! A tag names one proposal of one process: it starts from a random value at every start, so
//! an entry proposed before a restart and applied after it finds no waiter here (its callers
//! are gone) rather than another proposal's. An entry applied on a node that did not propose it
//! finds no waiter either; its outcomes go back to openraft, which has no caller for them there.
//!
//! It also holds each proposal's pipeline slot until the entry is *committed*, not applied:
//! the log store tells it which index a tagged entry got and when the commit index passes it.
//! So the leader goes on stamping, appending and committing entries while its state machine is
//! held up (a durable apply commit takes tens of milliseconds), and a timer that fires then is
//! committed on time; the entries are applied, and their callers answered, when it is done.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use halter_state_machine::{Rejection, Response};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// The outcome of each command of an entry, in order.
pub type Outcomes = Vec<Result<Response, Rejection>>;

/// The proposals of this process that wait for their outcomes, by tag.
#[derive(Clone)]
pub struct Answers {
    inner: Arc<Inner>,
}

struct Inner {
    next: AtomicU64,
    waiting: Mutex<BTreeMap<u64, oneshot::Sender<Outcomes>>>,
    slots: Mutex<Slots>,
}

/// The pipeline slots of this process's proposals that are not committed yet.
#[derive(Default)]
struct Slots {
    by_tag: BTreeMap<u64, OwnedSemaphorePermit>,
    /// The tag of each held proposal the log store appended, by log index.
    at_index: BTreeMap<u64, u64>,
}

impl Answers {
    /// Tags start at `first` (0 is skipped: it means "untagged" in the log).
    pub fn new(first: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                next: AtomicU64::new(first),
                waiting: Mutex::new(BTreeMap::new()),
                slots: Mutex::new(Slots::default()),
            }),
        }
    }

    /// Tags starting from a random value (see the module comment).
    pub fn random() -> Self {
        // Both halves: each has a few fixed (version and variant) bits.
        let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
        Self::new(high ^ low)
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, oneshot::Sender<Outcomes>>> {
        self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh tag for the next entry, and where its outcomes will arrive.
    pub fn register(&self) -> (u64, oneshot::Receiver<Outcomes>) {
        let mut tag = 0;
        while tag == 0 {
            tag = self.inner.next.fetch_add(1, Ordering::Relaxed);
        }
        let (tx, rx) = oneshot::channel();
        self.waiting().insert(tag, tx);
        (tag, rx)
    }

    /// Stops waiting for `tag` (its entry failed or was answered another way).
    pub fn forget(&self, tag: u64) {
        self.waiting().remove(&tag);
    }

    /// Hands `outcomes` to the proposal tagged `tag`, if one of this process waits for it;
    /// otherwise gives them back.
    pub fn answer(&self, tag: u64, outcomes: Outcomes) -> Option<Outcomes> {
        if tag == 0 {
            return Some(outcomes);
        }
        let Some(tx) = self.waiting().remove(&tag) else {
            return Some(outcomes);
        };
        // A receiver gone (its caller gave up) needs nothing more.
        let _ = tx.send(outcomes);
        None
    }

    /// How many proposals wait (for tests: nothing may be left behind).
    #[cfg(test)]
    pub fn waiting_count(&self) -> usize {
        self.waiting().len()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.inner.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `slot` for the proposal tagged `tag` until its entry is committed or the proposal
    /// ends ([`Self::release`]), whichever comes first.
    pub fn hold(&self, tag: u64, slot: OwnedSemaphorePermit) {
        self.slots().by_tag.insert(tag, slot);
    }

    /// The log store appended the entry tagged `tag` at `index` (called before the append, so
    /// before the entry can commit). Entries of other processes' proposals are not tracked.
    pub fn appended(&self, index: u64, tag: u64) {
        let mut slots = self.slots();
        if slots.by_tag.contains_key(&tag) {
            // An index appended again (after a truncation) is the new entry's.
            slots.at_index.insert(index, tag);
        }
    }

    /// The commit index reached `index`: the slots of the entries at or below it are free.
    /// (A tracked entry that was truncated frees its slot early: its proposal fails anyway.)
    pub fn committed(&self, index: u64) {
        let mut slots = self.slots();
        let later = slots.at_index.split_off(&(index.saturating_add(1)));
        let done = std::mem::replace(&mut slots.at_index, later);
        for tag in done.into_values() {
            slots.by_tag.remove(&tag);
        }
    }

    /// The proposal tagged `tag` has ended: its slot is free if it was not already.
    pub fn release(&self, tag: u64) {
        let mut slots = self.slots();
        slots.by_tag.remove(&tag);
        slots.at_index.retain(|_, t| *t != tag);
    }

    /// How many slots are held and how many of them have an index (for tests).
    #[cfg(test)]
    pub fn held_count(&self) -> (usize, usize) {
        let slots = self.slots();
        (slots.by_tag.len(), slots.at_index.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_answer_reaches_only_the_proposal_with_its_tag() {
        let answers = Answers::new(u64::MAX);
        let (a, mut rx_a) = answers.register();
        let (b, mut rx_b) = answers.register();
        assert_eq!(a, u64::MAX);
        assert_eq!(b, 1, "the counter wraps past 0, which means untagged");
        assert_eq!(answers.answer(b, vec![Ok(Response::Empty)]), None);
        assert_eq!(rx_b.try_recv().unwrap(), vec![Ok(Response::Empty)]);
        assert!(rx_a.try_recv().is_err(), "a's entry is not applied yet");
        assert_eq!(answers.waiting_count(), 1);

        // Untagged entries, entries another process proposed and entries answered already
        // are given back, for openraft's own answer.
        let outcomes = vec![Err(Rejection::NotFound("x".into()))];
        assert_eq!(answers.answer(0, outcomes.clone()), Some(outcomes.clone()));
        assert_eq!(answers.answer(77, outcomes.clone()), Some(outcomes.clone()));
        assert_eq!(answers.answer(b, outcomes.clone()), Some(outcomes.clone()));

        answers.forget(a);
        assert_eq!(answers.waiting_count(), 0);
        assert_eq!(answers.answer(a, outcomes.clone()), Some(outcomes));
        assert!(rx_a.try_recv().is_err());
    }

    #[test]
    fn a_slot_is_freed_when_its_entry_commits_or_its_proposal_ends() {
        let answers = Answers::new(1);
        let pipeline = Arc::new(tokio::sync::Semaphore::new(1));
        let take = || pipeline.clone().try_acquire_owned();

        let (a, _rx_a) = answers.register();
        answers.hold(a, take().unwrap());
        assert!(take().is_err(), "one slot, held by a");
        answers.appended(9, 77); // another process's entry: not tracked
        answers.appended(10, a);
        assert_eq!(answers.held_count(), (1, 1));
        answers.committed(9);
        assert!(take().is_err(), "a's entry is not committed yet");
        answers.committed(10);
        assert_eq!(answers.held_count(), (0, 0));

        // Freed at commit even though its outcomes have not come: the next entry can go.
        let (b, _rx_b) = answers.register();
        answers.hold(b, take().unwrap());
        answers.appended(11, b);
        // Truncated and appended again under another tag: the index is the new entry's.
        let (c, _rx_c) = answers.register();
        answers.release(b);
        answers.hold(c, take().unwrap());
        answers.appended(11, c);
        assert_eq!(answers.held_count(), (1, 1));
        answers.committed(11);
        assert!(take().is_ok());

        // A proposal that ends (fails, times out) before its entry commits frees its slot, and
        // a commit after that frees nothing twice.
        let (d, _rx_d) = answers.register();
        answers.hold(d, take().unwrap());
        answers.appended(12, d);
        answers.release(d);
        assert_eq!(answers.held_count(), (0, 0));
        answers.committed(12);
        assert!(take().is_ok());
    }
}
