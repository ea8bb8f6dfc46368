//! Readiness: whether this replica may report ready. It owns the two facts `/readyz` reads,
//! "standing by" (a follower of the Lease, which serves nothing and is healthy) and "a first
//! pass has completed with every source", and the transitions between them; the leader loop
//! and the passes call its methods, never set its fields.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
pub(super) struct Readiness {
    standby: AtomicBool,
    first_pass_done: AtomicBool,
}

impl Readiness {
    /// `standby`: whether the replica starts as a follower (leader election on).
    pub fn new(standby: bool) -> Self {
        Self {
            standby: AtomicBool::new(standby),
            first_pass_done: AtomicBool::new(false),
        }
    }

    /// The Lease is ours: ready only once a pass of this term has completed.
    pub fn leading(&self) {
        self.standby.store(false, Ordering::Relaxed);
    }

    /// The term ended: a follower again, and the next term needs its own first pass.
    pub fn standing_by(&self) {
        self.standby.store(true, Ordering::Relaxed);
        self.first_pass_done.store(false, Ordering::Relaxed);
    }

    /// A pass has completed with credentials of every source.
    pub fn pass_completed(&self) {
        self.first_pass_done.store(true, Ordering::Relaxed);
    }

    /// `Ok` while standing by, or once a pass has completed and `expired()` names no source;
    /// otherwise why not.
    pub fn check(&self, expired: impl FnOnce() -> Vec<String>) -> Result<(), String> {
        if self.standby.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !self.first_pass_done.load(Ordering::Relaxed) {
            return Err("no complete refresh cycle yet".into());
        }
        let expired = expired();
        if expired.is_empty() {
            Ok(())
        } else {
            Err(format!("expired credentials: {}", expired.join(",")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_is_ready_and_a_leader_only_after_its_first_pass() {
        let r = Readiness::new(true);
        assert_eq!(
            r.check(|| vec!["ecr".into()]),
            Ok(()),
            "standby ignores expiry"
        );
        r.leading();
        assert_eq!(
            r.check(Vec::new),
            Err("no complete refresh cycle yet".into())
        );
        r.pass_completed();
        assert_eq!(r.check(Vec::new), Ok(()));
        assert_eq!(
            r.check(|| vec!["ecr".into(), "gar".into()]),
            Err("expired credentials: ecr,gar".into())
        );
        // A new term starts over: its own first pass decides.
        r.standing_by();
        assert_eq!(r.check(Vec::new), Ok(()));
        r.leading();
        assert!(r.check(Vec::new).is_err());
    }

    #[test]
    fn without_leader_election_readiness_waits_for_the_first_pass() {
        let r = Readiness::new(false);
        assert!(r.check(Vec::new).is_err());
        r.pass_completed();
        assert_eq!(r.check(Vec::new), Ok(()));
    }
}
