//! A `google` registry entry checked: its hosts, and the credentials file it names (`keyFile`,
//! else GOOGLE_APPLICATION_CREDENTIALS), which must be a service-account key or a workload
//! identity federation configuration. Which of the two is decided here, once; the file's
//! contents are read again at every fetch.

use std::path::Path;

use super::credential_config;
use super::{GoogleConfig, GoogleFile};
use crate::config_error::{Checked, ConfigError};
use crate::dockerconfig::registry_key;
use crate::input::{self, read_small_file};
use crate::names::{duplicates, registry_host};

pub(super) fn google(field: &str, g: GoogleFile) -> Checked<GoogleConfig> {
    if g.hosts.is_empty() {
        return Err(ConfigError::invalid(
            &format!("{field}.hosts"),
            "the list is empty",
            "list the registry hosts, e.g. [gcr.io, us-docker.pkg.dev]",
        ));
    }
    let hosts = g
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| registry_host(&format!("{field}.hosts[{i}]"), h))
        .collect::<Checked<Vec<String>>>()?;
    let keys: Vec<String> = hosts.iter().map(|h| registry_key(h)).collect();
    if let Some(dup) = duplicates(keys.iter().map(String::as_str)) {
        return Err(ConfigError::invalid(
            &format!("{field}.hosts"),
            &format!(
                "{dup:?} is listed twice (scheme, case, a trailing slash and Docker Hub's aliases name one registry)"
            ),
            "list each host once",
        ));
    }
    let file = match &g.key_file {
        Some(path) => Some((format!("{field}.keyFile"), path.clone())),
        None => input::google_application_credentials()
            .map(|path| ("env GOOGLE_APPLICATION_CREDENTIALS".to_string(), path)),
    };
    let mut external_account = None;
    if let Some((field, path)) = file {
        let text = read_small_file(&path).map_err(|problem| {
            ConfigError::invalid(
                &field,
                &problem,
                "mount the credentials file there (a service-account key or a workload identity federation configuration), or fix the path",
            )
        })?;
        if credentials_file(&field, &text)? == Kind::ExternalAccount {
            external_account = Some(path);
        }
    }
    Ok(GoogleConfig {
        hosts,
        // gcp_auth reads a service-account key itself; a federation config goes elsewhere.
        key_file: g.key_file.filter(|_| external_account.is_none()),
        external_account,
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    ServiceAccount,
    ExternalAccount,
}

/// gcp_auth gives up without falling through when the file is not a service-account key,
/// and a federation config it cannot read at all: say which file is which now, plainly,
/// instead of at the first fetch.
fn credentials_file(field: &str, text: &str) -> Checked<Kind> {
    match credential_config::credential_type(text).as_deref() {
        Some("service_account") => {
            // gcp_auth loads the key at the first fetch; a broken private_key (a truncated
            // paste, a PKCS#1 key) would fail every fetch of a daemon that started fine.
            // Its error names what failed, never the key's bytes.
            gcp_auth::CustomServiceAccount::from_json(text).map_err(|e| {
                // The loader also builds its HTTPS client, from the system's CA store: an
                // image without one is no fault of the key, and a new key would not help.
                if let gcp_auth::Error::Io(what, _) = &e
                    && what.contains("root certificates")
                {
                    return ConfigError::invalid(
                        field,
                        &format!(
                            "no CA certificates to verify Google's token endpoint with ({})",
                            crate::error_chain::one_line(&e)
                        ),
                        "run an image that has the system CA bundle (the project's image does: /etc/ssl/certs/ca-certificates.crt), or mount one and point SSL_CERT_FILE at it",
                    );
                }
                ConfigError::invalid(
                    field,
                    &format!(
                        "the service-account key cannot be loaded: its private_key or another field is unusable ({})",
                        crate::error_chain::one_line(&e)
                    ),
                    "download a new JSON key for the service account (gcloud iam service-accounts keys create) and mount it unchanged",
                )
            })?;
            Ok(Kind::ServiceAccount)
        }
        Some("external_account") => {
            let account = credential_config::parse(text).map_err(|p| {
                ConfigError::invalid(
                    field,
                    &format!("(external_account) field {}: {}", p.field, p.problem),
                    p.fix,
                )
            })?;
            subject_token_file(field, &account.subject_token_file)?;
            Ok(Kind::ExternalAccount)
        }
        Some(other) => Err(ConfigError::invalid(
            field,
            &format!(
                "the file holds a {other:?} credential, not a service-account key or an external_account configuration"
            ),
            "point it at a service-account key JSON (type \"service_account\") or a workload identity federation configuration (type \"external_account\"), or leave it unset to use GKE Workload Identity / gcloud",
        )),
        None => Err(ConfigError::invalid(
            field,
            "the file is not a Google credentials JSON file",
            "point it at a service-account key JSON (type \"service_account\") or a workload identity federation configuration (type \"external_account\")",
        )),
    }
}

/// The projected token is mounted before the container starts: a missing one is a wrong
/// path or a missing volume, which stops the start like any other missing mount.
fn subject_token_file(field: &str, token: &Path) -> Checked<()> {
    input::regular_file(token).map(|_| ()).map_err(|problem| {
        ConfigError::invalid(
            field,
            &format!("(external_account) field credential_source.file: {problem}"),
            "mount the pod's projected ServiceAccount token there (a serviceAccountToken volume with the pool provider's audience), or fix the path",
        )
    })
}
