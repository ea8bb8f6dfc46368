//! Names the cluster or a registry will later be asked about: DNS labels and subdomains,
//! label values, registry hosts. Refused here because the API server or the kubelet would
//! refuse (or silently ignore) them much later, far from the field that held them.

use super::error::{Checked, ConfigError};
use crate::dockerconfig::registry_key;
use crate::label_selector::{is_dns_label_body, is_label_value};

pub(super) fn registry_host(field: &str, h: &str) -> Checked<()> {
    // Docker Hub serves pulls from this host, but the kubelet matches Docker Hub images only
    // to docker.io, index.docker.io or https://index.docker.io/v1/: a secret keyed on it is
    // never used.
    if registry_key(h) == "docker.io" && h.to_ascii_lowercase().contains("registry-1.docker.io") {
        return Err(ConfigError::invalid(
            field,
            &format!("{h:?} is a host the kubelet never matches Docker Hub images to"),
            "use https://index.docker.io/v1/ (what kubectl writes) or docker.io",
        ));
    }
    let host = h
        .strip_prefix("https://")
        .or_else(|| h.strip_prefix("http://"))
        .unwrap_or(h);
    let host = host.split('/').next().unwrap_or_default();
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
        && !h.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            &format!("{h:?} is not a registry host"),
            "use a host such as gcr.io, quay.io or us-docker.pkg.dev",
        ))
    }
}

pub(super) fn dns_label(field: &str, v: &str, what: &str) -> Checked<()> {
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

pub(super) fn label_value(field: &str, v: &str) -> Checked<()> {
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
    }
}
