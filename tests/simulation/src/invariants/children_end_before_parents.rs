//! A child WfRun's end is its parent's, on every replica. Clients start `sim-family` runs
//! `fam-K` (each starts the child `fam-K_0-1`, a `sim-member` run, and waits for it) and put
//! `go` events to the children by their nested WfRunIds, through the faults. The child writes
//! the event into `paid`, a variable it inherits from its parent. After healing (node 0):
//!
//! - **Together**: a family run exists exactly when its child does (one command makes both),
//!   and the child's WfRunId names the parent.
//! - **Ended together**: the child ends within 3 s (its event or its timeout), and the
//!   parent's wait moves in the same command, so both are terminal, and the parent COMPLETED
//!   exactly when the child did; a child's ERROR is the parent's CHILD_FAILURE.
//! - **Inherited writes land in the parent**: a completed child's claimed event is the
//!   parent's `paid`; a timed-out child wrote nothing; the child has no `paid` of its own.
//!
//! `replica_digests` checks that every node applied the same (the wake of a parent happens in
//! the apply, so a replica that missed it would differ).

use halter_api::littlehorse::*;

use super::{get_node, get_run, get_var, retry};
use crate::cluster::ClusterView;
use crate::workload::{family_name, member_key, FAMILY_POOL};

pub struct Family {
    pub id: String,
    pub parent: Option<WfRun>,
    pub child: Option<WfRun>,
    pub parent_paid: Option<VariableValue>,
    pub child_has_paid: bool,
    pub wait_failure: Option<String>,
    /// The content of the event the child's wait claimed, if it claimed one.
    pub claimed: Option<VariableValue>,
}

pub async fn observe(c: &ClusterView) -> Result<Vec<Family>, String> {
    let mut out = Vec::new();
    for i in 0..FAMILY_POOL {
        let id = family_name(i);
        let key = member_key(&id);
        // The child first: read after it, the parent is at least as new.
        let child = get_run(c, &key).await?;
        let parent = get_run(c, &id).await?;
        let mut f = Family {
            id: id.clone(),
            parent_paid: None,
            child_has_paid: false,
            wait_failure: None,
            claimed: None,
            parent: None,
            child: None,
        };
        if parent.is_some() {
            f.parent_paid = get_var(c, &id, "paid").await?;
            let wait = get_node(c, &id, 0, 2).await?;
            f.wait_failure = wait.failures.last().map(|x| x.failure_name.clone());
        }
        if child.is_some() {
            f.child_has_paid = get_var(c, &key, "paid").await?.is_some();
            let go = get_node(c, &key, 0, 1).await?;
            if let Some(node_run::NodeType::ExternalEvent(ee)) = go.node_type {
                if let Some(ev) = ee.external_event_id {
                    let got = retry(|| {
                        let mut lh = c.lh(0);
                        let ev = ev.clone();
                        async move { lh.get_external_event(ev).await }
                    })
                    .await
                    .map_err(|e| format!("reading the event {key} claimed: {e}"))?;
                    f.claimed = got.into_inner().content;
                }
            }
        }
        f.parent = parent;
        f.child = child;
        out.push(f);
    }
    Ok(out)
}

fn terminal(s: LhStatus) -> bool {
    matches!(
        s,
        LhStatus::Completed | LhStatus::Error | LhStatus::Exception
    )
}

pub fn check(families: &[Family]) -> Result<(), String> {
    for f in families {
        let id = &f.id;
        let (parent, child) = match (&f.parent, &f.child) {
            (None, None) => continue,
            (Some(p), Some(c)) => (p, c),
            (p, c) => {
                return Err(format!(
                    "family {id}: parent exists {}, child exists {}",
                    p.is_some(),
                    c.is_some()
                ))
            }
        };
        let named = child
            .id
            .as_ref()
            .and_then(|i| i.parent_wf_run_id.as_deref());
        if named.map(|p| p.id.as_str()) != Some(id.as_str()) {
            return Err(format!("family {id}: its child's id names {named:?}"));
        }
        let (ps, cs) = (parent.status(), child.status());
        if !terminal(cs) || !terminal(ps) {
            return Err(format!(
                "family {id}: parent {ps:?}, child {cs:?} after healing"
            ));
        }
        if (ps == LhStatus::Completed) != (cs == LhStatus::Completed) {
            return Err(format!("family {id}: parent {ps:?} but child {cs:?}"));
        }
        if cs == LhStatus::Error && f.wait_failure.as_deref() != Some("CHILD_FAILURE") {
            return Err(format!(
                "family {id}: child ERROR, parent's wait failed with {:?}",
                f.wait_failure
            ));
        }
        if f.child_has_paid {
            return Err(format!("family {id}: the child has its own `paid`"));
        }
        let expected = if cs == LhStatus::Completed {
            match &f.claimed {
                Some(v) => v.clone(),
                None => return Err(format!("family {id}: child completed without an event")),
            }
        } else {
            VariableValue::default()
        };
        if f.parent_paid.as_ref() != Some(&expected) {
            return Err(format!(
                "family {id}: parent's paid {:?}, child {cs:?} claimed {:?}",
                f.parent_paid, f.claimed
            ));
        }
    }
    Ok(())
}
