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
    /// Writes under way. The watch event of a write can arrive before its response (seen in
    /// about one namespace in ten at start), when its resourceVersion is not known yet; such
    /// an event waits for the write to end before it is judged.
    writing: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a write is under way; dropped after what it wrote is remembered.
pub(super) struct Writing<'a> {
    echoes: &'a Echoes,
    key: Key,
    _held: OwnedMutexGuard<()>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.echoes.writing.lock() {
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
    /// The controller reconciles a namespace once at a time, so one write per object at most.
    pub fn writing(&self, kind: &'static str, namespace: &str, name: &str) -> Option<Writing<'_>> {
        let key = (kind, namespace.to_string(), name.to_string());
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let held = lock.clone().try_lock_owned().ok()?;
        self.writing.lock().ok()?.insert(key.clone(), lock);
        Some(Writing {
            echoes: self,
            key,
            _held: held,
        })
    }

    pub fn remember(&self, kind: &'static str, meta: &ObjectMeta) {
        if let Some((key, rv)) = key_of(kind, meta)
            && let Ok(mut seen) = self.seen.lock()
        {
            seen.insert(key, rv.clone());
        }
    }

    pub fn forget(&self, kind: &'static str, namespace: &str, name: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(&(kind, namespace.to_string(), name.to_string()));
        }
    }

    pub fn forget_namespace(&self, namespace: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.retain(|(_, ns, _), _| ns != namespace);
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
        let under_way = self.writing.lock().ok().and_then(|w| w.get(&key).cloned());
        if let Some(write) = under_way {
            let _ = tokio::time::timeout(WAIT_FOR_WRITE, write.lock()).await;
        }
        self.seen
            .lock()
            .map(|seen| seen.get(&key) == Some(rv))
            .unwrap_or(false)
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
