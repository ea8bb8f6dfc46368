//! Which namespaces get the secrets: pure matching (names, globs, a label selector, an
//! exclude list and a per-namespace opt-out annotation) plus the one list call that feeds it.
//! Never creates a namespace: a named one that does not exist is reported as missing.

use std::collections::BTreeMap;

use glob::Pattern;
use k8s_openapi::api::core::v1::Namespace;

use kube::core::{PartialObjectMeta, Selector, SelectorExt};

use crate::label_selector;

mod braces;
mod resolve;

use braces::expand_braces;
pub use resolve::{NamespaceError, Resolution, classify, resolve};

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

    /// Whether a decision reads a namespace's labels (only a selector does).
    pub fn reads_labels(&self) -> bool {
        self.selector.is_some()
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
