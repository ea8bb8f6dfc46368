//! Everything the configuration reads from outside its own text: environment variables and
//! files. Kept in one place so the checks elsewhere look only at values, and so what the
//! start depends on in the pod (mounts, variables) can be seen at a glance.

use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::ValueFrom;

/// Credential files are small; anything larger is not one (and `/dev/zero` must not hang us).
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;

/// The path names a readable regular file (following symlinks, as mounted Secrets are).
/// Checked before opening, so a FIFO or device never blocks or floods the start. The messages
/// never repeat the path: a secret pasted where a path belongs must not reach the log (the
/// caller names the field, and the file the user wrote names the value).
pub(super) fn regular_file(path: &Path) -> Result<std::fs::File, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("the file cannot be read: {e}"))?;
    if meta.is_dir() {
        return Err("the path is a directory, not a file".into());
    }
    if !meta.is_file() {
        return Err("the path is not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "the file is {} bytes, more than a credential file holds ({MAX_FILE_BYTES})",
            meta.len()
        ));
    }
    std::fs::File::open(path).map_err(|e| format!("the file cannot be read: {e}"))
}

pub(crate) fn read_small_file(path: &Path) -> Result<String, String> {
    let mut text = String::new();
    regular_file(path)?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("the file cannot be read: {e}"))?;
    Ok(text)
}

pub(super) fn is_set(var: &str) -> bool {
    std::env::var_os(var).is_some()
}

/// A static credential as a fetch would read it now. An unset or non-UTF-8 variable reads
/// as empty, so the caller's check refuses it as empty rather than failing differently here;
/// the only error is a file that cannot be read.
pub(super) fn read_value(from: &ValueFrom) -> Result<Zeroizing<String>, String> {
    Ok(Zeroizing::new(match from {
        ValueFrom::Literal(v) => v.clone(),
        ValueFrom::File(p) => read_small_file(p)?,
        ValueFrom::Env(var) => std::env::var(var).unwrap_or_default(),
    }))
}

/// The key file gcp_auth's default chain would pick up when no `keyFile` is configured.
pub(super) fn google_application_credentials() -> Option<PathBuf> {
    std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from)
}

/// What the Azure Workload Identity webhook injects into a pod (and what the Azure SDKs read).
#[derive(Debug, Default)]
pub(super) struct AzureEnv {
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub federated_token_file: Option<PathBuf>,
    pub authority_host: Option<String>,
}

pub(super) fn azure() -> AzureEnv {
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    AzureEnv {
        tenant_id: var("AZURE_TENANT_ID"),
        client_id: var("AZURE_CLIENT_ID"),
        federated_token_file: var("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
        authority_host: var("AZURE_AUTHORITY_HOST"),
    }
}

/// The namespace this pod runs in: the chart passes POD_NAMESPACE; without it, the
/// service-account mount says.
pub(super) fn pod_namespace() -> Option<String> {
    std::env::var("POD_NAMESPACE").ok().or_else(|| {
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .ok()
            .map(|s| s.trim().to_string())
    })
}

/// Who holds the Lease: the pod's name when the chart passes it, else the host and process,
/// which still tell two replicas (or two local runs) apart.
pub(super) fn pod_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "regcred-refresher".into());
        format!("{host}-{}", std::process::id())
    })
}
