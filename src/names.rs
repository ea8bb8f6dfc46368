//! Names the cluster or a registry will later be asked about: DNS labels and subdomains,
//! label values, registry hosts. Refused here because the API server or the kubelet would
//! refuse (or silently ignore) them much later, far from the field that held them.

use std::collections::BTreeSet;

use crate::config_error::{Checked, ConfigError};
use crate::label_selector::{is_dns_label_body, is_label_value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProblem {
    pub problem: String,
    pub fix: &'static str,
}

const HOST_FIX: &str = "use a registry host such as quay.io, gcr.io or us-docker.pkg.dev (optionally https://, :port and a path)";

/// A registry server as the kubelet's keyring matches it: the scheme and host lowercased (the
/// keyring compares hosts as written, so `Quay.IO` never serves `quay.io/org/app`), the port
/// and path kept. Refused: no host, empty or malformed labels, a port outside 1..=65535, user
/// info (which the keyring never matches and every log line would carry: never quoted), and
/// Docker Hub's `registry-1.docker.io`, to which the kubelet never matches Docker Hub images.
pub fn canonical_server(raw: &str) -> Result<String, ServerProblem> {
    let refuse = |why: &str| ServerProblem {
        problem: format!("{raw:?} is not a registry host: {why}"),
        fix: HOST_FIX,
    };
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, raw),
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if authority.contains('@') {
        return Err(ServerProblem {
            problem: "it holds user info (user:password@ before the host): the kubelet never matches it, and it would be written into every log line".into(),
            fix: "keep only the host (e.g. https://quay.io) and give the credentials in username and passwordFile",
        });
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse("it holds white space"));
    }
    if let Some(s) = &scheme
        && s != "https"
        && s != "http"
    {
        return Err(refuse("the scheme is neither https nor http"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (authority, None),
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if let Some(p) = port
        && !(p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0))
    {
        return Err(refuse("the port is not a number from 1 to 65535"));
    }
    let host = host.to_ascii_lowercase();
    let ipv6 = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
    if !ipv6 {
        if host.is_empty() {
            return Err(refuse("the host is empty"));
        }
        if host.len() > 253 {
            return Err(refuse("the host is longer than 253 characters"));
        }
        for label in host.split('.') {
            if label.is_empty() {
                return Err(refuse("a dot-separated part of the host is empty"));
            }
            if label.len() > 63
                || !label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                || label.starts_with('-')
                || label.ends_with('-')
            {
                return Err(refuse(
                    "each dot-separated part of the host is up to 63 letters, digits and '-', starting and ending with a letter or digit",
                ));
            }
        }
    }
    if host == "registry-1.docker.io" {
        return Err(ServerProblem {
            problem: format!("{raw:?} is a host the kubelet never matches Docker Hub images to"),
            fix: "use https://index.docker.io/v1/ (what kubectl writes) or docker.io",
        });
    }
    let mut out = String::with_capacity(raw.len());
    if let Some(s) = scheme {
        out.push_str(&s);
        out.push_str("://");
    }
    out.push_str(&host);
    if let Some(p) = port {
        out.push(':');
        out.push_str(p);
    }
    if rest.contains('/') {
        out.push('/');
        out.push_str(path);
    }
    Ok(out)
}

/// The registry server as it will be written (see [`canonical_server`]), or the refusal
/// naming `field`.
pub(crate) fn registry_host(field: &str, h: &str) -> Checked<String> {
    canonical_server(h).map_err(|p| ConfigError::invalid(field, &p.problem, p.fix))
}

pub(crate) fn dns_label(field: &str, v: &str, what: &str) -> Checked<()> {
    if v.len() <= 63 && is_dns_label_body(v) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            &format!("{v:?} is not a valid {what}"),
            "use up to 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
        ))
    }
}

pub(crate) fn label_value(field: &str, v: &str) -> Checked<()> {
    if is_label_value(v) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            &format!("{v:?} is not a valid label value"),
            "use up to 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit (the Helm release name fits)",
        ))
    }
}

pub(crate) fn dns_subdomain(field: &str, v: &str, what: &str) -> Checked<()> {
    if !v.is_empty() && v.len() <= 253 && v.split('.').all(is_dns_label_body) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            &format!("{v:?} is not a valid {what} (RFC 1123)"),
            "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
        ))
    }
}

/// The first name given twice, if any.
pub(crate) fn duplicates<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = BTreeSet::new();
    names.into_iter().find(|n| !seen.insert(*n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_is_named_as_the_kubelet_matches_it() {
        assert!(registry_host("f", "https://index.docker.io/v1/").is_ok());
        assert!(registry_host("f", "docker.io").is_ok());
        let err = registry_host("f", "registry-1.docker.io")
            .unwrap_err()
            .to_string();
        assert!(err.contains("never matches"), "{err}");
        assert_eq!(
            registry_host("f", "HTTPS://Quay.IO").unwrap(),
            "https://quay.io"
        );
    }

    #[test]
    fn servers_are_lowercased_in_scheme_and_host_and_malformed_ones_refused() {
        for (raw, want) in [
            ("HTTPS://Quay.IO", "https://quay.io"),
            ("Ghcr.io", "ghcr.io"),
            ("US-docker.pkg.dev", "us-docker.pkg.dev"),
            ("https://index.docker.io/v1/", "https://index.docker.io/v1/"),
            (
                "Registry.Example:5000/Team/App",
                "registry.example:5000/Team/App",
            ),
            ("10.0.0.1:5000", "10.0.0.1:5000"),
            ("[::1]:5000", "[::1]:5000"),
        ] {
            assert_eq!(canonical_server(raw).as_deref(), Ok(want), "{raw}");
        }
        for bad in [
            ":5000",
            ".",
            "-",
            "a..b",
            "quay.io:70000",
            "quay.io:0",
            "quay.io:",
            "-quay.io",
            "quay_io",
            "ftp://quay.io",
            "registry-1.docker.io",
            "https://bad host/",
        ] {
            assert!(canonical_server(bad).is_err(), "{bad}");
        }
        let p = canonical_server("https://bot:S3cr3t@quay.io").unwrap_err();
        assert!(p.problem.contains("user info"), "{p:?}");
        assert!(!format!("{p:?}").contains("S3cr3t"), "{p:?}");
    }
}
