//! Names the cluster or a registry will later be asked about: DNS labels and subdomains,
//! label values, registry hosts. Refused here because the API server or the kubelet would
//! refuse (or silently ignore) them much later, far from the field that held them.

use super::error::{Checked, ConfigError};
use crate::dockerconfig::canonical_server;
use crate::label_selector::{is_dns_label_body, is_label_value};

/// The registry server as it will be written (see [`canonical_server`]), or the refusal
/// naming `field`.
pub(super) fn registry_host(field: &str, h: &str) -> Checked<String> {
    canonical_server(h).map_err(|p| ConfigError::invalid(field, &p.problem, p.fix))
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
        assert_eq!(
            registry_host("f", "HTTPS://Quay.IO").unwrap(),
            "https://quay.io"
        );
    }
}
