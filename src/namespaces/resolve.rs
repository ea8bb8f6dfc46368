//! The filter applied to the cluster's namespaces: one paged list of their metadata (or the
//! configured names as given, where listing is not allowed), or the daemon's watch cache.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use tracing::{debug, warn};

use super::{Decision, NamespaceFilter};

#[derive(Debug, Default)]
pub struct Resolution {
    pub targets: Vec<String>,
    /// Named in `include` but absent from the cluster.
    pub missing: Vec<String>,
    /// Matched by name but left alone, with the reason (excluded, opted out, terminating).
    pub skipped: Vec<(String, Decision)>,
}

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error(
        "cannot list namespaces: {}; fix: grant list on namespaces, or target a fixed list of names",
        crate::error_chain::one_line(.source)
    )]
    List {
        #[source]
        source: kube::Error,
    },
}

/// Lists namespaces (metadata only) and applies the filter. With only literal names and no
/// selector, an identity that may not list namespaces (namespaced install) still works: the
/// names are taken as given, without the opt-out check.
pub async fn resolve(
    client: &kube::Client,
    filter: &NamespaceFilter,
) -> Result<Resolution, NamespaceError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut lp = ListParams::default();
    if let Some(sel) = filter.selector_string() {
        // Let the server do the selector work; `decide` checks it again for the watch path.
        lp = lp.labels(&sel);
    }
    let mut classifier = Classifier::new(filter);
    match list_pages(&api, lp, |ns| classifier.add(&ns)).await {
        Ok(()) => Ok(classifier.finish()),
        Err(kube::Error::Api(status)) if status.code == 403 && only_literals(filter) => {
            warn!("may not list namespaces; targeting the configured names as given");
            let mut r = Resolution::default();
            for name in filter.literal_names() {
                match filter.decide(name, &BTreeMap::new(), &BTreeMap::new(), false) {
                    Decision::Target => r.targets.push(name.to_string()),
                    other => r.skipped.push((name.to_string(), other)),
                }
            }
            Ok(r)
        }
        Err(source) => Err(NamespaceError::List { source }),
    }
}

/// Every namespace's metadata, a page at a time, each handed to `each` as it arrives: only
/// what the filter decides is kept, never the whole list.
async fn list_pages(
    api: &Api<Namespace>,
    lp: ListParams,
    mut each: impl FnMut(PartialObjectMeta<Namespace>),
) -> Result<(), kube::Error> {
    let mut lp = lp.limit(500);
    loop {
        let page = api.list_metadata(&lp).await?;
        page.items.into_iter().for_each(&mut each);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(()),
        }
    }
}

fn only_literals(filter: &NamespaceFilter) -> bool {
    filter.selector.is_none() && filter.literal_names().count() == filter.include.len()
}

/// Applies the filter to namespaces from a list or from the daemon's watch cache.
pub fn classify<N: Borrow<PartialObjectMeta<Namespace>>>(
    filter: &NamespaceFilter,
    list: &[N],
) -> Resolution {
    let mut c = Classifier::new(filter);
    for ns in list {
        c.add(ns.borrow());
    }
    c.finish()
}

/// The filter applied one namespace at a time (a list page or a cache entry).
struct Classifier<'a> {
    filter: &'a NamespaceFilter,
    r: Resolution,
    /// The literal names seen: the ones not seen are missing.
    present: BTreeSet<String>,
}

impl<'a> Classifier<'a> {
    fn new(filter: &'a NamespaceFilter) -> Self {
        Self {
            filter,
            r: Resolution::default(),
            present: BTreeSet::new(),
        }
    }

    fn add(&mut self, ns: &PartialObjectMeta<Namespace>) {
        let Some(name) = ns.metadata.name.as_deref() else {
            return;
        };
        let literal = self.filter.literal_names().any(|l| l == name);
        if literal {
            self.present.insert(name.to_string());
        }
        match self.filter.decide_namespace(ns) {
            Decision::Target => self.r.targets.push(name.to_string()),
            Decision::NotIncluded => {}
            Decision::SelectorMismatch if !literal => {}
            other => {
                debug!(namespace = name, reason = ?other, "namespace skipped");
                self.r.skipped.push((name.to_string(), other));
            }
        }
    }

    fn finish(mut self) -> Resolution {
        let r = &mut self.r;
        r.missing = self
            .filter
            .literal_names()
            .filter(|n| !self.present.contains(*n))
            .map(str::to_string)
            .collect();
        if self.filter.selector.is_some() {
            // With a selector the server only returned matching namespaces; a literal name
            // absent from that list may exist with other labels, so it is not "missing".
            r.missing.clear();
        }
        r.targets.sort();
        r.missing.sort();
        self.r
    }
}
