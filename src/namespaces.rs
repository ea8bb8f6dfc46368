//! Which namespaces get the secrets: pure matching (names, globs, a label selector, an
//! exclude list and a per-namespace opt-out annotation) plus the one list call that feeds it.
//! Never creates a namespace: a named one that does not exist is reported as missing.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use glob::Pattern;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::core::{PartialObjectMeta, Selector, SelectorExt};
use tracing::{debug, warn};

use crate::label_selector;

/// Annotation a namespace owner sets to `"true"` to keep the refresher out.
pub const SKIP_ANNOTATION: &str = "regcred-refresher.io/skip";

#[derive(Debug)]
pub struct FilterError {
    pub field: String,
    pub problem: String,
    pub fix: String,
}

#[derive(Debug, Clone)]
pub struct NamespaceFilter {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
    selector: Option<Selector>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Target,
    NotIncluded,
    Excluded,
    SelectorMismatch,
    OptedOut,
    Terminating,
}

impl NamespaceFilter {
    pub fn new(
        include: &[String],
        exclude: &[String],
        selector: Option<&str>,
    ) -> Result<Self, FilterError> {
        let patterns = |field: &str, list: &[String]| {
            let mut out = Vec::new();
            for (i, p) in list.iter().enumerate() {
                let at = || format!("namespaces.{field}[{i}]");
                for one in expand_braces(p).map_err(|problem| FilterError {
                    field: at(),
                    problem: format!("{p:?}: {problem}"),
                    fix: "use one level of braces (team-{a,b}-*) or list the patterns separately"
                        .into(),
                })? {
                    // A literal name the API server could never hold would match nothing, in
                    // silence: a typo (Team_A for team-a) is refused here instead.
                    let literal = !one.contains(['*', '?', '[']);
                    if literal && !(one.len() <= 63 && label_selector::is_dns_label_body(&one)) {
                        return Err(FilterError {
                            field: at(),
                            problem: format!(
                                "{one:?} is not a valid namespace name (RFC 1123), so it would match nothing"
                            ),
                            fix: "use the namespace's name: up to 63 lowercase letters, digits and '-' (or a glob with *, ? and {a,b})"
                                .into(),
                        });
                    }
                    out.push(Pattern::new(&one).map_err(|e| {
                        FilterError {
                            field: at(),
                            problem: format!("{p:?} is not a valid glob: {}", e.msg),
                            fix: "use a namespace name or a glob with *, ? and {a,b} (e.g. team-*)"
                                .into(),
                        }
                    })?);
                }
            }
            Ok::<_, FilterError>(out)
        };
        // kubectl reads an empty selector as "every namespace".
        let selector = selector
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                label_selector::parse(s).map_err(|e| FilterError {
                    field: "namespaces.selector".into(),
                    problem: format!("{s:?}: {e}"),
                    fix: "write it as kubectl's -l takes it, e.g. \"team in (a,b),env!=dev\""
                        .into(),
                })
            })
            .transpose()?;
        Ok(Self {
            include: patterns("include", include)?,
            exclude: patterns("exclude", exclude)?,
            selector,
        })
    }

    /// Names given literally (no glob characters): these are reported when missing.
    pub fn literal_names(&self) -> impl Iterator<Item = &str> {
        self.include
            .iter()
            .map(Pattern::as_str)
            .filter(|p| !p.contains(['*', '?', '[']))
    }

    pub fn selector_string(&self) -> Option<String> {
        self.selector.as_ref().map(ToString::to_string)
    }

    /// [`decide`](Self::decide) for a namespace as the API server returns it (listed or
    /// watched): its name, labels, annotations and whether it is being deleted.
    pub fn decide_namespace(&self, ns: &PartialObjectMeta<Namespace>) -> Decision {
        let m = &ns.metadata;
        let empty = BTreeMap::new();
        self.decide(
            m.name.as_deref().unwrap_or_default(),
            m.labels.as_ref().unwrap_or(&empty),
            m.annotations.as_ref().unwrap_or(&empty),
            m.deletion_timestamp.is_some(),
        )
    }

    pub fn decide(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
        terminating: bool,
    ) -> Decision {
        if !self.include.iter().any(|p| p.matches(name)) {
            Decision::NotIncluded
        } else if self.exclude.iter().any(|p| p.matches(name)) {
            Decision::Excluded
        } else if self.selector.as_ref().is_some_and(|s| !s.matches(labels)) {
            Decision::SelectorMismatch
        } else if annotations
            .get(SKIP_ANNOTATION)
            .is_some_and(|v| opts_out(name, v))
        {
            Decision::OptedOut
        } else if terminating {
            Decision::Terminating
        } else {
            Decision::Target
        }
    }
}

/// The opt-out annotation's value: `true`, `yes`, `1`, `on` (any case) opt out; `false`, `no`,
/// `0`, `off` do not; anything else does not either, and says so in the log.
fn opts_out(namespace: &str, value: &str) -> bool {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => true,
        "false" | "no" | "0" | "off" | "" => false,
        _ => {
            tracing::warn!(
                namespace,
                value,
                annotation = SKIP_ANNOTATION,
                "opt-out annotation not understood, so the namespace stays a target; use \"true\" or \"false\""
            );
            false
        }
    }
}

/// Shell-style brace groups, one level deep: `g-{a,b}*` is `g-a*` and `g-b*` (the glob crate
/// matches `{` literally, which would silently match nothing).
fn expand_braces(p: &str) -> Result<Vec<String>, String> {
    let Some(open) = p.find('{') else {
        return if p.contains('}') {
            Err("a '}' without its '{'".into())
        } else {
            Ok(vec![p.to_string()])
        };
    };
    let close = p[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| "a '{' without its '}'".to_string())?;
    let inner = &p[open + 1..close];
    if inner.contains('{') {
        return Err("brace groups cannot nest".into());
    }
    let mut out = Vec::new();
    for tail in expand_braces(&p[close + 1..])? {
        for alt in inner.split(',') {
            out.push(format!("{}{alt}{tail}", &p[..open]));
        }
    }
    Ok(out)
}

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
    let list = match list_pages(&api, lp).await {
        Ok(list) => list,
        Err(kube::Error::Api(status)) if status.code == 403 && only_literals(filter) => {
            warn!("may not list namespaces; targeting the configured names as given");
            let mut r = Resolution::default();
            for name in filter.literal_names() {
                match filter.decide(name, &BTreeMap::new(), &BTreeMap::new(), false) {
                    Decision::Target => r.targets.push(name.to_string()),
                    other => r.skipped.push((name.to_string(), other)),
                }
            }
            return Ok(r);
        }
        Err(source) => return Err(NamespaceError::List { source }),
    };
    Ok(classify(filter, &list))
}

/// Every namespace's metadata, a page at a time, without managedFields (their bulk).
async fn list_pages(
    api: &Api<Namespace>,
    lp: ListParams,
) -> Result<Vec<PartialObjectMeta<Namespace>>, kube::Error> {
    let mut lp = lp.limit(500);
    let mut all = Vec::new();
    loop {
        let page = api.list_metadata(&lp).await?;
        all.extend(page.items.into_iter().map(|mut ns| {
            ns.metadata.managed_fields = None;
            ns
        }));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(all),
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
    let mut r = Resolution::default();
    for ns in list.iter().map(Borrow::borrow) {
        let Some(name) = ns.metadata.name.as_deref() else {
            continue;
        };
        let decision = filter.decide_namespace(ns);
        match decision {
            Decision::Target => r.targets.push(name.to_string()),
            Decision::NotIncluded => {}
            Decision::SelectorMismatch if !filter.literal_names().any(|l| l == name) => {}
            other => {
                debug!(namespace = name, reason = ?other, "namespace skipped");
                r.skipped.push((name.to_string(), other));
            }
        }
    }
    let present: std::collections::BTreeSet<&str> = list
        .iter()
        .filter_map(|n| n.borrow().metadata.name.as_deref())
        .collect();
    r.missing = filter
        .literal_names()
        .filter(|n| !present.contains(n))
        .map(str::to_string)
        .collect();
    if filter.selector.is_some() {
        // With a selector the server only returned matching namespaces; a literal name absent
        // from that list may exist with other labels, so it is not "missing".
        r.missing.clear();
    }
    r.targets.sort();
    r.missing.sort();
    r
}

#[cfg(test)]
mod tests {
    use kube::core::ObjectMeta;

    use super::*;

    fn filter(include: &[&str], exclude: &[&str], sel: Option<&str>) -> NamespaceFilter {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        NamespaceFilter::new(&s(include), &s(exclude), sel).unwrap()
    }

    fn ns(
        name: &str,
        labels: &[(&str, &str)],
        skip: bool,
        terminating: bool,
    ) -> PartialObjectMeta<Namespace> {
        let mut meta = ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        if skip {
            meta.annotations = Some([(SKIP_ANNOTATION.to_string(), "true".to_string())].into());
        }
        if terminating {
            meta.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Default::default(),
            ));
        }
        PartialObjectMeta {
            types: None,
            metadata: meta,
            _phantom: Default::default(),
        }
    }

    #[test]
    fn globs_exclude_optout_terminating_and_missing() {
        let f = filter(&["team-*", "app", "ghost"], &["team-x*"], None);
        let list = [
            ns("team-a", &[], false, false),
            ns("team-b", &[], true, false),
            ns("team-xyz", &[], false, false),
            ns("team-c", &[], false, true),
            ns("app", &[], false, false),
            ns("other", &[], false, false),
        ];
        let r = classify(&f, &list);
        assert_eq!(r.targets, ["app", "team-a"]);
        assert_eq!(r.missing, ["ghost"]);
        let skipped: BTreeMap<_, _> = r.skipped.into_iter().collect();
        assert_eq!(skipped["team-b"], Decision::OptedOut);
        assert_eq!(skipped["team-xyz"], Decision::Excluded);
        assert_eq!(skipped["team-c"], Decision::Terminating);
        assert!(!skipped.contains_key("other"));
    }

    #[test]
    fn selector_narrows_the_match() {
        let f = filter(&["*"], &[], Some("team in (a)"));
        assert_eq!(
            f.decide(
                "x",
                &[("team".into(), "b".into())].into(),
                &BTreeMap::new(),
                false
            ),
            Decision::SelectorMismatch
        );
        assert_eq!(
            f.decide(
                "x",
                &[("team".into(), "a".into())].into(),
                &BTreeMap::new(),
                false
            ),
            Decision::Target
        );
    }

    #[test]
    fn braces_expand_an_empty_selector_is_everything_and_opt_out_reads_yes() {
        assert_eq!(
            expand_braces("g-{a,b}-{x,y}*").unwrap(),
            ["g-a-x*", "g-b-x*", "g-a-y*", "g-b-y*"]
        );
        assert!(expand_braces("g-{a,{b}}").is_err());
        assert!(expand_braces("g-{a").is_err());
        assert!(expand_braces("g-a}").is_err());
        let f = filter(&["g-{a,b}*"], &[], Some("  "));
        let none = BTreeMap::new();
        assert_eq!(f.decide("g-b1", &none, &none, false), Decision::Target);
        assert_eq!(f.decide("g-c1", &none, &none, false), Decision::NotIncluded);
        for (v, out) in [
            ("True", true),
            ("yes", true),
            ("1", true),
            ("no", false),
            ("maybe", false),
        ] {
            let ann = BTreeMap::from([(SKIP_ANNOTATION.to_string(), v.to_string())]);
            assert_eq!(
                f.decide("g-a", &none, &ann, false) == Decision::OptedOut,
                out,
                "{v}"
            );
        }
    }

    #[test]
    fn invalid_glob_names_the_index() {
        let e = NamespaceFilter::new(&["ok".into(), "[".into()], &[], None).unwrap_err();
        assert_eq!(e.field, "namespaces.include[1]");
    }
}
