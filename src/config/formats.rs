//! `secrets[].format` and `secrets[].argocd` checked: which shape a secret is written in, and
//! that a one-credential shape (basic-auth, Argo CD) gets exactly one source naming one host.

use super::{ArgoCdFile, SourceConfig};
use crate::config_error::{Checked, ConfigError};
use crate::secret_format::{ArgoCd, SecretFormat};
use crate::sources::SourceKind;
use crate::sources::static_creds::StaticConfig;

const NAMES: [&str; 4] = [
    "dockerconfigjson",
    "basic-auth",
    "argocd-repository",
    "argocd-repo-creds",
];

pub(super) fn secret_format(
    field: &str,
    format: Option<String>,
    argocd: Option<ArgoCdFile>,
    registries: &[String],
    sources: &[SourceConfig],
) -> Checked<SecretFormat> {
    let name = format.unwrap_or_else(|| NAMES[0].to_string());
    let at = |f: &str| format!("{field}.{f}");
    let format = match name.as_str() {
        "dockerconfigjson" => SecretFormat::DockerConfigJson,
        "basic-auth" => SecretFormat::BasicAuth,
        "argocd-repository" | "argocd-repo-creds" => {
            let a = argocd.as_ref();
            let oci = match a.and_then(|a| a.kind.as_deref()) {
                None | Some("helm") => false,
                Some("oci") => true,
                Some(other) => {
                    return Err(ConfigError::invalid(
                        &at("argocd.type"),
                        &format!("{other:?} is neither helm nor oci"),
                        "use helm (Helm charts in an OCI registry: type helm, enableOCI \"true\") or oci (Argo CD 3.1+ OCI repositories)",
                    ));
                }
            };
            if let Some(url) = a.and_then(|a| a.url.as_deref())
                && (url.trim().is_empty()
                    || url.contains('@')
                    || url.chars().any(char::is_whitespace))
            {
                return Err(ConfigError::invalid(
                    &at("argocd.url"),
                    "is empty, holds white space or user info",
                    "give the repository URL without credentials, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/charts (oci://… with type oci), or leave it out for the registry host",
                ));
            }
            SecretFormat::ArgoCd(ArgoCd {
                template: name == "argocd-repo-creds",
                url: a.and_then(|a| a.url.clone()),
                oci,
                name: a.and_then(|a| a.name.clone()),
                project: a.and_then(|a| a.project.clone()),
            })
        }
        other => {
            let hint = crate::config::closest(other, NAMES)
                .map(|c| format!("did you mean {c:?}? "))
                .unwrap_or_default();
            return Err(ConfigError::invalid(
                &at("format"),
                &format!("{other:?} is not a secret format"),
                &format!("{hint}use one of {}", NAMES.join(", ")),
            ));
        }
    };
    if argocd.is_some() && !matches!(format, SecretFormat::ArgoCd(_)) {
        return Err(ConfigError::invalid(
            &at("argocd"),
            &format!("is set, but the format is {}", format.name()),
            "set format: argocd-repository or argocd-repo-creds, or remove argocd",
        ));
    }
    if format != SecretFormat::DockerConfigJson {
        one_credential(field, &format, registries, sources)?;
    }
    Ok(format)
}

/// A one-credential shape holds one username and password: one source, one host.
fn one_credential(
    field: &str,
    format: &SecretFormat,
    registries: &[String],
    sources: &[SourceConfig],
) -> Checked<()> {
    let fix = "give this secret exactly one registry, with one host (one google host; a static server, not a dockerConfigJson), or use format dockerconfigjson";
    if registries.len() != 1 {
        return Err(ConfigError::invalid(
            &format!("{field}.registries"),
            &format!(
                "the {} format holds one registry's credentials, and {} are listed",
                format.name(),
                registries.len()
            ),
            fix,
        ));
    }
    let Some(src) = sources.iter().find(|s| s.name == registries[0]) else {
        return Ok(());
    };
    let several = match &src.kind {
        SourceKind::Google(g) => g.hosts.len() > 1,
        SourceKind::Static(StaticConfig::DockerConfigJson(_)) => true,
        _ => false,
    };
    if several {
        return Err(ConfigError::invalid(
            &format!("{field}.registries[0]"),
            &format!(
                "{:?} may give several hosts, and the {} format holds one",
                src.name,
                format.name()
            ),
            fix,
        ));
    }
    Ok(())
}
