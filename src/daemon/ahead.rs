//! The live secrets of a pass, read ahead: one paged list per configured name when the pass
//! reaches its first namespace, instead of a read per namespace (at 10,000 namespaces, some
//! 20 requests instead of 10,000). Each namespace takes its secrets out once; the rest is
//! dropped when the pass ends. Where the list is not allowed (RBAC without `list` by name),
//! every namespace reads its own, as before.
//!
//! A listed secret can be out of date by the time its namespace is reconciled. Every change
//! after the list reaches the managed-secret watches, and each one makes the namespace read
//! its secret from the server instead: a change seen before the namespace's turn marks it
//! here, a change seen after it reconciles the namespace again (and its entry is gone by
//! then). So the list is only used once every watch has listed (earlier changes would arrive
//! as its initial list, which marks nothing): a pass waits for that, up to [`WATCHES_LISTED`].
//! It is thrown away when a watch fails or lists again (what it missed meanwhile is in no
//! event).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tracing::debug;

use crate::writer::{LiveSecrets, Writer};

/// How long a pass waits for the managed-secret watches' first list before it reads each
/// namespace's secrets instead (their list takes a second or two at 10,000 namespaces).
const WATCHES_LISTED: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
enum Stage {
    /// No pass has read ahead yet.
    #[default]
    Idle,
    /// The list is under way; the namespaces whose secrets changed meanwhile.
    Listing(BTreeSet<String>),
    Listed {
        live: LiveSecrets,
        changed: BTreeSet<String>,
    },
    /// Not for this pass: the list was refused, or a watch lost track.
    Unavailable,
}

#[derive(Debug)]
pub(super) struct Ahead {
    stage: Mutex<Stage>,
    /// One list at a time: the reconciles that reach it first wait for it.
    listing: tokio::sync::Mutex<()>,
    watches: usize,
    /// How many of them have listed.
    listed: watch::Sender<usize>,
}

impl Ahead {
    /// For a daemon with `watches` managed-secret watches (one per configured name).
    pub(super) fn new(watches: usize) -> Self {
        Self {
            stage: Mutex::default(),
            listing: tokio::sync::Mutex::new(()),
            watches,
            listed: watch::Sender::new(0),
        }
    }

    fn stage(&self) -> std::sync::MutexGuard<'_, Stage> {
        self.stage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A managed-secret watch has listed for the first time.
    pub(super) fn watch_listed(&self) {
        self.listed.send_modify(|n| *n += 1);
    }

    /// A secret in `namespace` changed (not by us): it is read from the server.
    pub(super) fn changed(&self, namespace: &str) {
        match &mut *self.stage() {
            Stage::Listing(changed) | Stage::Listed { changed, .. } => {
                changed.insert(namespace.to_string());
            }
            Stage::Idle | Stage::Unavailable => {}
        }
    }

    /// A watch failed or listed again: what it missed is in no event.
    pub(super) fn lost_track(&self) {
        let mut stage = self.stage();
        if !matches!(*stage, Stage::Idle) {
            *stage = Stage::Unavailable;
        }
    }

    /// The pass ended: what is left of its list goes.
    pub(super) fn end_pass(&self) {
        *self.stage() = Stage::Idle;
    }

    /// `namespace`'s live secrets from the pass's list (read now if it is the first), or
    /// `None`: read them one by one.
    pub(super) async fn take(
        &self,
        writer: &Writer,
        names: &[&str],
        namespace: &str,
    ) -> Option<LiveSecrets> {
        let mut listed = self.listed.subscribe();
        let watches = self.watches;
        let waited = tokio::time::timeout(WATCHES_LISTED, async {
            listed.wait_for(|n| *n >= watches).await.is_ok()
        })
        .await;
        if waited != Ok(true) {
            return None;
        }
        if matches!(*self.stage(), Stage::Idle | Stage::Listing(_)) {
            // The first lists; the others wait for its list.
            let _one = self.listing.lock().await;
            let idle = {
                let mut stage = self.stage();
                let idle = matches!(*stage, Stage::Idle);
                if idle {
                    *stage = Stage::Listing(BTreeSet::new());
                }
                idle
            };
            if idle {
                let live = writer.list_live(names).await;
                let mut stage = self.stage();
                *stage = match (std::mem::take(&mut *stage), live) {
                    (Stage::Listing(changed), Some(live)) => {
                        debug!(secrets = live.len(), "live secrets read ahead for the pass");
                        Stage::Listed { live, changed }
                    }
                    (Stage::Listing(_), None) => Stage::Unavailable,
                    // Lost track (or the pass ended) meanwhile.
                    (other, _) => other,
                };
            }
        }
        match &mut *self.stage() {
            Stage::Listed { live, changed } if !changed.contains(namespace) => {
                Some(live.take_namespace(namespace))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{self, status};
    use super::*;

    fn secret_list(namespaces: &[&str]) -> serde_json::Value {
        let items: Vec<_> = namespaces
            .iter()
            .map(|ns| json!({"metadata": {"name": "regcred", "namespace": ns, "resourceVersion": "1"}}))
            .collect();
        json!({"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": items})
    }

    fn writer(client: kube::Client) -> Writer {
        Writer::new(
            client,
            crate::config::WriteMode::Apply,
            "regcred-refresher".into(),
            "default".into(),
        )
    }

    #[tokio::test]
    async fn one_list_serves_the_pass_and_each_namespace_takes_its_secret_once() {
        let (client, log) = testing::server(|_| (200, secret_list(&["a", "b"])));
        let (w, ahead) = (writer(client), Ahead::new(1));
        tokio::time::pause();
        assert!(
            ahead.take(&w, &["regcred"], "a").await.is_none(),
            "not before the watch has listed (waited {WATCHES_LISTED:?})"
        );
        tokio::time::resume();
        assert!(testing::requests(&log).is_empty());
        ahead.watch_listed();
        let a = ahead.take(&w, &["regcred"], "a").await.unwrap();
        assert!(a.get("a", "regcred").is_some());
        let again = ahead.take(&w, &["regcred"], "a").await.unwrap();
        assert!(again.get("a", "regcred").is_none(), "taken once");
        assert!(ahead.take(&w, &["regcred"], "b").await.unwrap().len() == 1);
        let seen = testing::requests(&log);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].line(), "GET /api/v1/secrets");
        assert_eq!(
            seen[0].param("fieldSelector"),
            Some("metadata.name=regcred")
        );
        ahead.end_pass();
        ahead.take(&w, &["regcred"], "b").await.unwrap();
        assert_eq!(
            testing::requests(&log).len(),
            2,
            "the next pass lists again"
        );
    }

    #[tokio::test]
    async fn reconciles_that_arrive_while_the_list_is_under_way_wait_for_it() {
        let (client, log) = testing::server(|_| (200, secret_list(&["a", "b", "c"])));
        let (w, ahead) = (writer(client), Ahead::new(1));
        ahead.watch_listed();
        let names = ["regcred"];
        let (a, b, c) = tokio::join!(
            ahead.take(&w, &names, "a"),
            ahead.take(&w, &names, "b"),
            ahead.take(&w, &names, "c")
        );
        assert_eq!(
            [a, b, c].map(|l| l.map(|l| l.len())),
            [Some(1), Some(1), Some(1)]
        );
        assert_eq!(testing::requests(&log).len(), 1);
    }

    #[tokio::test]
    async fn a_namespace_whose_secret_changed_or_a_watch_that_lost_track_reads_from_the_server() {
        let (client, _log) = testing::server(|_| (200, secret_list(&["a", "b", "c"])));
        let (w, ahead) = (writer(client), Ahead::new(1));
        ahead.watch_listed();
        ahead.take(&w, &["regcred"], "a").await.unwrap();
        ahead.changed("b");
        assert!(ahead.take(&w, &["regcred"], "b").await.is_none());
        ahead.lost_track();
        assert!(ahead.take(&w, &["regcred"], "c").await.is_none());
        ahead.end_pass();
        assert!(ahead.take(&w, &["regcred"], "c").await.is_some());
    }

    #[tokio::test]
    async fn a_refused_list_falls_back_to_reads_for_the_pass() {
        let (client, log) = testing::server(|_| status(403, "Forbidden"));
        let (w, ahead) = (writer(client), Ahead::new(1));
        ahead.watch_listed();
        assert!(ahead.take(&w, &["regcred"], "a").await.is_none());
        assert!(ahead.take(&w, &["regcred"], "b").await.is_none());
        assert_eq!(
            testing::requests(&log).len(),
            1,
            "refused once, not asked again"
        );
    }
}
