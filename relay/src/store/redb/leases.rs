//! Push job leases of the embedded store, held in memory.
//!
//! Leases exist so that several relay processes can share one outbox: a claimed job is
//! invisible to the others until its lease ends. A redb file is opened by one process
//! only (redb locks it), so the embedded store's leases need no durability: a restart
//! voids them, which is what their running out would do anyway, and the jobs a dead
//! process held are claimable at once instead of a lease later. Keeping them here takes a
//! durable write (and a log record) per claim off the writer thread: claiming becomes a
//! read transaction plus this table.
//!
//! A claim is identified as in [`crate::store::Lease`]: (owner, lease end). Finishing a job
//! first marks its lease as finishing, so a claim cannot take the job over while the
//! outcome is being written, then drops the lease once the write is durable (or restores
//! it when the write failed, so the job is claimed again after the lease).

use std::collections::HashMap;

use crate::store::Lease;

/// How long a lease that ran out is remembered: a late [`Leases::begin_finish`] of that
/// claim still counts when nobody claimed the job again, as the store trait promises.
/// Provider calls time out long before this.
const FORGET_AFTER_MS: i64 = 10 * 60 * 1000;

/// How many leases may accumulate before ran-out ones are forgotten. Jobs removed while
/// leased (a dead token's subscription took them along) leave their lease behind until
/// their claim finishes; one that never finishes is forgotten here.
const PRUNE_ABOVE: usize = 4096;

#[derive(Debug, Clone)]
struct Held {
    lease: Lease,
    /// The outcome is being written: claims must not take the job over meanwhile.
    finishing: bool,
}

/// The live leases, by job id.
#[derive(Debug, Default)]
pub struct Leases {
    held: HashMap<u64, Held>,
}

impl Leases {
    /// Whether a claim at `now_ms` may take job `id`.
    pub fn claimable(&self, id: u64, now_ms: i64) -> bool {
        self.held
            .get(&id)
            .is_none_or(|h| !h.finishing && h.lease.until_ms <= now_ms)
    }

    /// Leases job `id` to `lease`; the caller checked [`Leases::claimable`].
    pub fn take(&mut self, id: u64, lease: Lease) {
        self.held.insert(
            id,
            Held {
                lease,
                finishing: false,
            },
        );
    }

    /// Forgets leases that ran out long ago, when many accumulated.
    pub fn prune(&mut self, now_ms: i64) {
        if self.held.len() > PRUNE_ABOVE {
            let horizon = now_ms.saturating_sub(FORGET_AFTER_MS);
            self.held.retain(|_, h| h.finishing || h.lease.until_ms > horizon);
        }
    }

    /// Whether `lease` is still job `id`'s current claim; if so, the job stays leased
    /// (whatever the clock says) until [`Leases::end_finish`].
    pub fn begin_finish(&mut self, id: u64, lease: &Lease) -> bool {
        match self.held.get_mut(&id) {
            Some(h) if !h.finishing && h.lease == *lease => {
                h.finishing = true;
                true
            }
            _ => false,
        }
    }

    /// Ends a finish that [`Leases::begin_finish`] admitted: a recorded outcome drops the
    /// lease; a failed write leaves the claim to run out.
    pub fn end_finish(&mut self, id: u64, recorded: bool) {
        if recorded {
            self.held.remove(&id);
        } else if let Some(h) = self.held.get_mut(&id) {
            h.finishing = false;
        }
    }

    /// How many leases are remembered (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(owner: &str, until_ms: i64) -> Lease {
        Lease {
            owner: owner.into(),
            until_ms,
        }
    }

    #[test]
    fn a_lease_hides_its_job_until_it_runs_out() {
        let mut l = Leases::default();
        assert!(l.claimable(1, 0));
        l.take(1, lease("a", 100));
        assert!(!l.claimable(1, 99));
        assert!(l.claimable(1, 100));
        assert!(l.claimable(2, 0));
    }

    #[test]
    fn only_the_current_claim_finishes_and_a_finishing_job_is_not_taken() {
        let mut l = Leases::default();
        l.take(1, lease("a", 100));
        // Ran out and was claimed again (by the same node): the first claim lost it.
        l.take(1, lease("a", 300));
        assert!(!l.begin_finish(1, &lease("a", 100)));
        assert!(l.begin_finish(1, &lease("a", 300)));
        assert!(!l.claimable(1, 1_000), "finishing holds past the lease end");
        assert!(!l.begin_finish(1, &lease("a", 300)), "one finish at a time");
        l.end_finish(1, false);
        assert!(
            l.claimable(1, 1_000),
            "a failed write leaves the lease to run out"
        );
        assert!(l.begin_finish(1, &lease("a", 300)), "a late finish still counts");
        l.end_finish(1, true);
        assert_eq!(l.len(), 0);
        assert!(!l.begin_finish(1, &lease("a", 300)));
    }

    #[test]
    fn pruning_forgets_only_leases_long_run_out() {
        let mut l = Leases::default();
        for id in 0..=PRUNE_ABOVE as u64 {
            l.take(id, lease("a", 0));
        }
        l.take(u64::MAX, lease("a", FORGET_AFTER_MS * 3));
        assert!(l.begin_finish(0, &lease("a", 0)));
        l.prune(FORGET_AFTER_MS * 2);
        assert_eq!(l.len(), 2, "the live lease and the finishing one stay");
        l.prune(FORGET_AFTER_MS * 2);
        assert_eq!(l.len(), 2);
    }
}
