//! A pass: every target namespace reconciled once after fresh credentials (or a watch
//! re-list). [`trigger`] decides when one is due; the controller reconciles namespaces one
//! by one; [`Passes`] adds them up into the "cycle finished" line, the cycle duration and
//! readiness.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Instant;

use kube::runtime::reflector::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::watch::NamespaceMeta;
use crate::cycle::{NamespaceReport, Totals};
use crate::namespaces::{NamespaceFilter, Resolution};

pub(super) use super::wake::Wake;

/// Starts a pass for each wake that brings something new, once the namespaces are known,
/// until `cancel` (or either channel closes). `generation()` is that of the cached
/// credentials and whether they can serve a pass; `begin` opens the pass over the targets;
/// `reconcile_all` then asks the controller to reconcile every namespace.
pub(super) async fn trigger(
    namespaces: &Store<NamespaceMeta>,
    filter: &NamespaceFilter,
    mut wake: mpsc::UnboundedReceiver<Wake>,
    generation: impl Fn() -> (u64, bool),
    begin: impl Fn(&Resolution),
    reconcile_all: futures::channel::mpsc::UnboundedSender<()>,
    cancel: CancellationToken,
) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        r = namespaces.wait_until_ready() => if r.is_err() { return },
    }
    // A leader again, with live credentials cached from its last term: they serve the
    // namespaces of the first list while the sources fetch anew.
    let (_, mut start_now) = generation();
    // The generation the last pass started with: a signal for it brings nothing new (the
    // fetch stored its credentials before this loop read them).
    let mut covered = None;
    loop {
        let mut relisted = false;
        if !std::mem::take(&mut start_now) {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = wake.recv() => match r {
                    Some(w) => relisted = w == Wake::Relisted,
                    None => return,
                },
            }
        }
        while let Ok(w) = wake.try_recv() {
            relisted |= w == Wake::Relisted;
        }
        let (generation, _) = generation();
        if covered.replace(generation) == Some(generation) && !relisted {
            continue;
        }
        begin(&crate::namespaces::classify(filter, &namespaces.state()));
        if reconcile_all.unbounded_send(()).is_err() {
            return;
        }
    }
}

#[derive(Debug)]
pub struct Finished {
    /// Logged when the pass ends; kept for the tests that add it up.
    #[cfg_attr(not(test), allow(dead_code))]
    pub totals: Totals,
    pub namespaces: usize,
    pub took: std::time::Duration,
}

#[derive(Debug, Default)]
pub struct Passes(Mutex<Option<Pass>>);

#[derive(Debug)]
struct Pass {
    started: Instant,
    pending: BTreeSet<String>,
    totals: Totals,
    namespaces: usize,
}

impl Passes {
    /// Starts a pass over `targets`, or widens the one under way (credentials of several
    /// sources arriving together make one pass). `None` unless a pass with no target ended
    /// right away.
    pub fn begin(&self, resolution: &Resolution) -> Option<Finished> {
        for m in &resolution.missing {
            warn!(namespace = %m, "missing: named in namespaces.include but does not exist");
        }
        let mut guard = self.0.lock().ok()?;
        let pass = guard.get_or_insert_with(|| Pass {
            started: Instant::now(),
            pending: BTreeSet::new(),
            totals: Totals::default(),
            namespaces: 0,
        });
        pass.pending.extend(resolution.targets.iter().cloned());
        pass.totals.skipped = resolution.skipped.len();
        pass.totals.missing = resolution.missing.len();
        Self::finish_if_done(&mut guard)
    }

    /// True while the pass under way waits for `namespace`.
    pub fn is_pending(&self, namespace: &str) -> bool {
        self.0
            .lock()
            .ok()
            .is_some_and(|p| p.as_ref().is_some_and(|p| p.pending.contains(namespace)))
    }

    /// Counts one reconciled target namespace; the pass's summary when it was the last.
    pub fn done(&self, report: &NamespaceReport) -> Option<Finished> {
        let mut guard = self.0.lock().ok()?;
        let pass = guard.as_mut()?;
        if !pass.pending.remove(&report.namespace) {
            return None;
        }
        pass.namespaces += 1;
        pass.totals += Totals::of(report);
        Self::finish_if_done(&mut guard)
    }

    /// A namespace that left (deleted, relabelled) while the pass waited for it.
    pub fn drop_namespace(&self, namespace: &str) -> Option<Finished> {
        let mut guard = self.0.lock().ok()?;
        guard.as_mut()?.pending.remove(namespace);
        Self::finish_if_done(&mut guard)
    }

    fn finish_if_done(slot: &mut Option<Pass>) -> Option<Finished> {
        if !slot.as_ref()?.pending.is_empty() {
            return None;
        }
        let pass = slot.take()?;
        crate::cycle::log_totals(&pass.totals, pass.namespaces);
        Some(Finished {
            took: pass.started.elapsed(),
            totals: pass.totals,
            namespaces: pass.namespaces,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::SecretOutcome;

    fn resolution(targets: &[&str]) -> Resolution {
        Resolution {
            targets: targets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn report(ns: &str, o: SecretOutcome) -> NamespaceReport {
        NamespaceReport {
            namespace: ns.into(),
            secrets: vec![("regcred".into(), o)],
            service_accounts: vec![],
            manifests: vec![],
            diffs: vec![],
            due: None,
        }
    }

    #[test]
    fn a_pass_ends_when_its_last_target_is_done_or_gone() {
        let p = Passes::default();
        assert!(p.begin(&resolution(&["a", "b", "c"])).is_none());
        assert!(p.done(&report("a", SecretOutcome::Created)).is_none());
        // A namespace outside the pass (a watch event) does not count.
        assert!(p.done(&report("x", SecretOutcome::Created)).is_none());
        // Fresh credentials of a second source widen the pass under way.
        assert!(p.begin(&resolution(&["b", "c", "d"])).is_none());
        assert!(p.done(&report("b", SecretOutcome::Unchanged)).is_none());
        assert!(p.drop_namespace("c").is_none());
        let f = p
            .done(&report("d", SecretOutcome::Created))
            .expect("finished");
        assert_eq!((f.totals.created, f.totals.unchanged), (2, 1));
        assert_eq!(f.namespaces, 3);
        // The next pass starts afresh.
        assert!(p.done(&report("a", SecretOutcome::Created)).is_none());
        assert!(p.begin(&resolution(&[])).is_some());
    }

    mod trigger {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        use std::time::Duration;

        use kube::runtime::reflector;
        use kube::runtime::watcher;

        use super::super::super::testing::{listed, namespace};
        use super::*;
        use crate::cycle::tests::config;

        const YAML: &str = "registries:\n  - name: quay\n    static: { server: quay.io, username: bot, passwordFile: {pw} }\nsecrets:\n  - name: regcred\n    registries: [quay]\nnamespaces: { include: [\"team-*\"] }\n";

        /// Lets every other task run (the clock is paused: it moves only when all are idle).
        async fn settle() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        #[tokio::test(start_paused = true)]
        async fn a_pass_starts_for_each_wake_that_brings_something_new() {
            let config = config(YAML, &[]);
            let namespaces = listed(vec![namespace("team-a", &[]), namespace("other", &[])]);
            let (wake, wakes) = mpsc::unbounded_channel();
            let (all_tx, mut all_rx) = futures::channel::mpsc::unbounded();
            let generation = AtomicU64::new(0);
            let begun = Mutex::new(Vec::new());
            let cancel = CancellationToken::new();
            let passes = trigger(
                &namespaces,
                &config.namespaces,
                wakes,
                || (generation.load(Ordering::Relaxed), false),
                |r| begun.lock().unwrap().push(r.targets.clone()),
                all_tx,
                cancel.clone(),
            );
            let script = async {
                let count = || begun.lock().unwrap().len();
                settle().await;
                assert_eq!(count(), 0, "nothing cached: no pass before a wake");
                generation.store(1, Ordering::Relaxed);
                wake.send(Wake::Refreshed).unwrap();
                settle().await;
                assert_eq!(count(), 1);
                // The same credentials again (the fetch stored them before the pass read them).
                wake.send(Wake::Refreshed).unwrap();
                settle().await;
                assert_eq!(count(), 1, "nothing new");
                // A watch that listed again: a deletion may have been missed.
                wake.send(Wake::Relisted).unwrap();
                settle().await;
                assert_eq!(count(), 2);
                // Several sources at once make one pass.
                generation.store(4, Ordering::Relaxed);
                for _ in 0..3 {
                    wake.send(Wake::Refreshed).unwrap();
                }
                settle().await;
                assert_eq!(count(), 3);
                // New credentials and a re-list together: one pass covers both.
                generation.store(5, Ordering::Relaxed);
                wake.send(Wake::Refreshed).unwrap();
                wake.send(Wake::Relisted).unwrap();
                settle().await;
                assert_eq!(count(), 4);
                cancel.cancel();
            };
            tokio::join!(passes, script);
            let begun = begun.into_inner().unwrap();
            assert!(begun.iter().all(|t| t == &["team-a"]), "{begun:?}");
            let mut asked = 0;
            while all_rx.try_recv().is_ok() {
                asked += 1;
            }
            assert_eq!(asked, 4, "the controller is asked once per pass");
        }

        #[tokio::test(start_paused = true)]
        async fn no_pass_before_the_namespaces_are_listed_then_one_at_once_if_credentials_serve() {
            let config = config(YAML, &[]);
            let (namespaces, mut writer) = reflector::store();
            let (_wake, wakes) = mpsc::unbounded_channel();
            let (all_tx, _all_rx) = futures::channel::mpsc::unbounded();
            let begun = Arc::new(Mutex::new(0));
            let cancel = CancellationToken::new();
            let passes = trigger(
                &namespaces,
                &config.namespaces,
                wakes,
                // A new term, with live credentials cached from the last.
                || (7, true),
                |_| *begun.lock().unwrap() += 1,
                all_tx,
                cancel.clone(),
            );
            let script = async {
                settle().await;
                assert_eq!(*begun.lock().unwrap(), 0, "namespaces not listed yet");
                writer.apply_watcher_event(&watcher::Event::Init);
                writer.apply_watcher_event(&watcher::Event::InitApply(namespace("team-b", &[])));
                writer.apply_watcher_event(&watcher::Event::InitDone);
                settle().await;
                assert_eq!(*begun.lock().unwrap(), 1, "served from the cache at once");
                cancel.cancel();
            };
            tokio::join!(passes, script);
        }
    }
}
