//! The credential cache: the last good credentials by source, and how many times they have
//! been replaced. The source timers store into it; passes and reconciles read it, so a
//! restored secret never costs a token call. A failed fetch never touches it: the last good
//! credential stays in use until it expires.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use crate::credentials::Credentials;

#[derive(Debug, Default)]
pub(super) struct CredentialCache(RwLock<Cached>);

#[derive(Debug, Default)]
struct Cached {
    by_source: BTreeMap<String, Arc<Credentials>>,
    /// Bumped by every store: a pass knows from it whether a "refreshed" signal brings
    /// anything it has not started with.
    generation: u64,
}

impl CredentialCache {
    /// The credentials now cached, by source name (held: a render compares them by identity).
    pub fn snapshot(&self) -> BTreeMap<String, Arc<Credentials>> {
        self.0
            .read()
            .map(|c| c.by_source.clone())
            .unwrap_or_default()
    }

    pub fn store(&self, source: &str, creds: Credentials) {
        if let Ok(mut c) = self.0.write() {
            c.by_source.insert(source.to_string(), Arc::new(creds));
            c.generation += 1;
        }
    }

    /// The generation of the cached credentials, and whether they can serve a pass at `now`:
    /// some are cached and none has expired.
    pub fn generation(&self, now: DateTime<Utc>) -> (u64, bool) {
        self.0
            .read()
            .map(|c| {
                let usable = !c.by_source.is_empty()
                    && c.by_source
                        .values()
                        .all(|v| v.expires_at.is_none_or(|e| e > now));
                (c.generation, usable)
            })
            .unwrap_or_default()
    }

    /// The sources whose cached credentials have expired at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> Vec<String> {
        self.snapshot()
            .values()
            .filter(|c| c.expires_at.is_some_and(|e| e <= now))
            .map(|c| c.source.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::cycle::tests::{static_creds, token};

    #[test]
    fn each_store_is_a_new_generation_usable_while_nothing_has_expired() {
        let cache = CredentialCache::default();
        let now = Utc::now();
        assert_eq!(cache.generation(now), (0, false), "nothing cached");
        cache.store("quay", static_creds("quay", "quay.io"));
        assert_eq!(cache.generation(now), (1, true));
        cache.store("gar", token("gar", "gcr.io", "ya29.a", Duration::hours(1)));
        assert_eq!(cache.generation(now), (2, true));
        let later = now + Duration::hours(2);
        assert_eq!(cache.generation(later), (2, false), "one has expired");
        assert_eq!(cache.expired(later), ["gar"]);
        assert!(cache.expired(now).is_empty());
        // A fresh token replaces the expired one.
        cache.store("gar", token("gar", "gcr.io", "ya29.b", Duration::hours(3)));
        assert_eq!(cache.generation(later), (3, true));
        assert_eq!(cache.snapshot().len(), 2);
    }
}
