//! Telling the watch events of our own writes (echoes) from changes by others, so that the
//! daemon does not look again at what it has just written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::ObjectMeta;
use tokio::sync::OwnedMutexGuard;

/// (kind, namespace, name).
type Key = (&'static str, String, String);

/// How long an event waits for the write under way on its object; a write that takes longer
/// has its own timeout, and the event is then taken as a change (one extra look at worst).
const WAIT_FOR_WRITE: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(super) struct Echoes {
    /// resourceVersion of what we last wrote or found up to date.
    seen: Mutex<HashMap<Key, String>>,
    /// The earlier resourceVersion of a write made of two requests (an apply, then the
    /// cleanup of what other writers left): both have an event.
    seen_before: Mutex<HashMap<Key, String>>,
    /// Writes under way. The watch event of a write can arrive before its response (seen in
    /// about one namespace in ten at start), when its resourceVersion is not known yet; such
    /// an event waits for the write to end before it is judged.
    writing: Mutex<HashMap<Key, Write>>,
}

#[derive(Debug)]
struct Write {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Whether this write has remembered a resourceVersion already.
    remembered: bool,
}

/// Held while a write is under way; dropped after what it wrote is remembered.
pub(super) struct Writing<'a> {
    echoes: &'a Echoes,
    key: Key,
    lock: Arc<tokio::sync::Mutex<()>>,
    _held: OwnedMutexGuard<()>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        // Another write to the same object (a prune beside a reconcile) may have taken the
        // entry since: that one is left to its own guard.
        if let Ok(mut w) = self.echoes.writing.lock()
            && w.get(&self.key)
                .is_some_and(|e| Arc::ptr_eq(&e.lock, &self.lock))
        {
            w.remove(&self.key);
        }
    }
}

fn key_of<'m>(kind: &'static str, meta: &'m ObjectMeta) -> Option<(Key, &'m String)> {
    match (&meta.namespace, &meta.name, &meta.resource_version) {
        (Some(ns), Some(name), Some(rv)) => Some(((kind, ns.clone(), name.clone()), rv)),
        _ => None,
    }
}

impl Echoes {
    /// Marks a write to `kind` `namespace/name` as under way until the guard is dropped.
    pub fn writing(&self, kind: &'static str, namespace: &str, name: &str) -> Option<Writing<'_>> {
        let key = (kind, namespace.to_string(), name.to_string());
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let held = lock.clone().try_lock_owned().ok()?;
        let write = Write {
            lock: lock.clone(),
            remembered: false,
        };
        self.writing.lock().ok()?.insert(key.clone(), write);
        Some(Writing {
            echoes: self,
            key,
            lock,
            _held: held,
        })
    }

    pub fn remember(&self, kind: &'static str, meta: &ObjectMeta) {
        let Some((key, rv)) = key_of(kind, meta) else {
            return;
        };
        let second_of_a_write = self
            .writing
            .lock()
            .ok()
            .and_then(|mut w| {
                w.get_mut(&key)
                    .map(|e| std::mem::replace(&mut e.remembered, true))
            })
            .unwrap_or(false);
        let (Ok(mut seen), Ok(mut before)) = (self.seen.lock(), self.seen_before.lock()) else {
            return;
        };
        match seen.insert(key.clone(), rv.clone()) {
            Some(earlier) if second_of_a_write => before.insert(key, earlier),
            _ => before.remove(&key),
        };
    }

    pub fn forget(&self, kind: &'static str, namespace: &str, name: &str) {
        let key = (kind, namespace.to_string(), name.to_string());
        if let (Ok(mut seen), Ok(mut before)) = (self.seen.lock(), self.seen_before.lock()) {
            seen.remove(&key);
            before.remove(&key);
        }
    }

    pub fn forget_namespace(&self, namespace: &str) {
        if let (Ok(mut seen), Ok(mut before)) = (self.seen.lock(), self.seen_before.lock()) {
            seen.retain(|(_, ns, _), _| ns != namespace);
            before.retain(|(_, ns, _), _| ns != namespace);
        }
    }

    pub fn remembered(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// True when `meta` is exactly the object we last wrote or found up to date, once any
    /// write under way on it has ended.
    pub async fn is_echo(&self, kind: &'static str, meta: &ObjectMeta) -> bool {
        let Some((key, rv)) = key_of(kind, meta) else {
            return false;
        };
        let under_way = self
            .writing
            .lock()
            .ok()
            .and_then(|w| w.get(&key).map(|e| e.lock.clone()));
        if let Some(write) = under_way {
            let _ = tokio::time::timeout(WAIT_FOR_WRITE, write.lock()).await;
        }
        let (Ok(seen), Ok(before)) = (self.seen.lock(), self.seen_before.lock()) else {
            return false;
        };
        seen.get(&key) == Some(rv) || before.get(&key) == Some(rv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(rv: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some("ns".into()),
            name: Some("regcred".into()),
            resource_version: Some(rv.into()),
            ..Default::default()
        }
    }

    /// The event of a write that arrives before its response is still its echo.
    #[tokio::test]
    async fn an_event_ahead_of_its_write_response_is_an_echo() {
        let echoes = Arc::new(Echoes::default());
        let (started, wait) = tokio::sync::oneshot::channel();
        let writer = {
            let echoes = echoes.clone();
            tokio::spawn(async move {
                let _writing = echoes.writing("secret", "ns", "regcred");
                started.send(()).unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                echoes.remember("secret", &meta("7"));
            })
        };
        wait.await.unwrap();
        assert!(echoes.is_echo("secret", &meta("7")).await);
        writer.await.unwrap();
        assert!(
            !echoes.is_echo("secret", &meta("8")).await,
            "a later change"
        );
        assert!(echoes.writing.lock().unwrap().is_empty());
    }

    /// An apply and its cleanup: two resourceVersions, two events, both ours. The next write
    /// replaces both.
    #[tokio::test]
    async fn both_events_of_a_two_step_write_are_echoes() {
        let echoes = Echoes::default();
        {
            let _writing = echoes.writing("secret", "ns", "regcred");
            echoes.remember("secret", &meta("4"));
            echoes.remember("secret", &meta("5"));
        }
        assert!(echoes.is_echo("secret", &meta("4")).await);
        assert!(echoes.is_echo("secret", &meta("5")).await);
        {
            let _writing = echoes.writing("secret", "ns", "regcred");
            echoes.remember("secret", &meta("9"));
        }
        assert!(!echoes.is_echo("secret", &meta("4")).await);
        assert!(!echoes.is_echo("secret", &meta("5")).await);
        assert!(echoes.is_echo("secret", &meta("9")).await);
    }

    /// Two writes to one object at once (a prune beside a reconcile): the first to end does
    /// not take the other's mark.
    #[tokio::test]
    async fn overlapping_writes_keep_their_own_marks() {
        let echoes = Echoes::default();
        let first = echoes.writing("serviceaccount", "ns", "default");
        let second = echoes.writing("serviceaccount", "ns", "default");
        drop(first);
        assert_eq!(echoes.writing.lock().unwrap().len(), 1);
        drop(second);
        assert!(echoes.writing.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_change_by_another_is_not_an_echo() {
        let echoes = Echoes::default();
        assert!(
            !echoes.is_echo("secret", &meta("1")).await,
            "nothing written yet"
        );
        echoes.remember("secret", &meta("2"));
        assert!(echoes.is_echo("secret", &meta("2")).await);
        assert!(
            !echoes.is_echo("serviceaccount", &meta("2")).await,
            "another kind"
        );
        assert!(!echoes.is_echo("secret", &meta("3")).await);
        echoes.forget_namespace("ns");
        assert_eq!(echoes.remembered(), 0);
    }
}
