//! What the process reads from outside its own configuration text: files (mounted Secrets,
//! projected tokens) and environment variables, and how a credential value read from one is
//! cleaned. A leaf: configuration checks them at start and sources read them at every fetch,
//! through the same functions, so the two can never disagree about what a file holds.

use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Credential files are small; anything larger is not one (and `/dev/zero` must not hang us).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The largest username or password we take: a pull secret holds it twice (as the password
/// and inside the base64 `auth`), and a whole Secret holds at most 1 MiB.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;

/// Where a static value is read from, at every fetch (mounted Secrets rotate).
#[derive(Debug, Clone)]
pub enum ValueFrom {
    /// Only for usernames: a password never sits in the configuration.
    Literal(String),
    File(PathBuf),
    Env(String),
}

/// The path names a readable regular file (following symlinks, as mounted Secrets are).
/// Checked before opening, so a FIFO or device never blocks or floods the start. The messages
/// never repeat the path: a secret pasted where a path belongs must not reach the log (the
/// caller names the field, and the file the user wrote names the value).
pub fn regular_file(path: &Path) -> Result<std::fs::File, String> {
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

pub fn read_small_file(path: &Path) -> Result<String, String> {
    let mut text = String::new();
    regular_file(path)?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("the file cannot be read: {e}"))?;
    Ok(text)
}

pub fn is_set(var: &str) -> bool {
    std::env::var_os(var).is_some()
}

/// A static credential as a fetch would read it now. An unset or non-UTF-8 variable reads
/// as empty, so the caller's check refuses it as empty rather than failing differently here;
/// the only error is a file that cannot be read.
pub fn read_value(from: &ValueFrom) -> Result<Zeroizing<String>, String> {
    Ok(Zeroizing::new(match from {
        ValueFrom::Literal(v) => v.clone(),
        ValueFrom::File(p) => read_small_file(p)?,
        ValueFrom::Env(var) => std::env::var(var).unwrap_or_default(),
    }))
}

/// A credential as a file or variable holds it, cleaned the way people expect: a UTF-8
/// byte-order mark (Windows editors) and one trailing newline (`echo`) are not part of it;
/// an empty or whitespace-only value, or one too large for a Secret, is refused. The message
/// never quotes the value.
pub fn clean_value(raw: &str) -> Result<&str, String> {
    let v = raw.strip_prefix('\u{feff}').unwrap_or(raw);
    let v = v.strip_suffix('\n').unwrap_or(v);
    let v = v.strip_suffix('\r').unwrap_or(v);
    if v.is_empty() {
        Err("it is empty".into())
    } else if v.trim().is_empty() {
        Err("it holds only whitespace".into())
    } else if v.len() > MAX_VALUE_BYTES {
        Err(format!(
            "it is {} bytes; a Secret holds it twice within 1 MiB, so at most {MAX_VALUE_BYTES} bytes fit",
            v.len()
        ))
    } else {
        Ok(v)
    }
}

/// A GUID as Entra writes tenant and client IDs: 8-4-4-4-12 hexadecimal digits.
pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The key file gcp_auth's default chain would pick up when no `keyFile` is configured.
pub fn google_application_credentials() -> Option<PathBuf> {
    std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from)
}

/// What the Azure Workload Identity webhook injects into a pod (and what the Azure SDKs read).
#[derive(Debug, Default)]
pub struct AzureEnv {
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub federated_token_file: Option<PathBuf>,
    pub authority_host: Option<String>,
}

pub fn azure() -> AzureEnv {
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
pub fn pod_namespace() -> Option<String> {
    pod_namespace_given().or_else(|| {
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .ok()
            .map(|s| s.trim().to_string())
    })
}

/// The pod's name, when the chart passes it (POD_NAME, from the downward API).
pub fn pod_name() -> Option<String> {
    std::env::var("POD_NAME").ok()
}

/// The pod's namespace as the chart passes it (POD_NAMESPACE), without the mount's fallback.
pub fn pod_namespace_given() -> Option<String> {
    std::env::var("POD_NAMESPACE").ok()
}

/// Who holds the Lease: the pod's name when the chart passes it, else the host and process,
/// which still tell two replicas (or two local runs) apart.
pub fn pod_identity() -> String {
    pod_name().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "regcred-refresher".into());
        format!("{host}-{}", std::process::id())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_lose_a_bom_and_one_newline_and_must_hold_something() {
        assert_eq!(clean_value("\u{feff}pa ss\r\n"), Ok("pa ss"));
        assert_eq!(clean_value("x\n\n"), Ok("x\n"));
        assert_eq!(clean_value("\n"), Err("it is empty".into()));
        assert_eq!(
            clean_value(" \t \n"),
            Err("it holds only whitespace".into())
        );
        let big = "a".repeat(MAX_VALUE_BYTES + 1);
        let e = clean_value(&big).unwrap_err();
        assert!(
            e.contains("at most 262144 bytes") && !e.contains("aaaa"),
            "{e}"
        );
        assert!(clean_value(&big[1..]).is_ok());
    }

    #[test]
    fn guids() {
        assert!(is_guid("11111111-2222-3333-4444-555555555555"));
        assert!(!is_guid("11111111-2222-3333-4444-55555555555"));
        assert!(!is_guid("1111111g-2222-3333-4444-555555555555"));
    }
}
