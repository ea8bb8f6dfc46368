//! The `.dockerconfigjson` document, byte for byte as `kubectl create secret docker-registry`
//! writes it, and the parser for a user-supplied one.
//!
//! Pure functions, no I/O. kubectl is written in Go, whose `encoding/json` sorts map keys and
//! escapes `<`, `>`, `&`, U+2028 and U+2029; we match that so a secret written by us and one
//! written by kubectl compare equal.

use std::collections::BTreeMap;
use std::io;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use zeroize::{Zeroize, Zeroizing};

use crate::credentials::RegistryCredential;

mod parse;

pub use parse::parse;

#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error(
        "registry {server} appears in more than one source ({first} and {second}): keep it in one"
    )]
    DuplicateServer {
        server: String,
        first: String,
        second: String,
    },
    #[error(
        "not a docker config JSON document: {0}; expected {{\"auths\": {{\"<server>\": {{\"auth\": \"...\"}}}}}}"
    )]
    Parse(String),
    #[error("entry {server}: {problem}")]
    Entry { server: String, problem: String },
    #[error("could not serialize the document: {0}")]
    Serialize(#[from] serde_json::Error),
}

#[derive(Serialize)]
struct Entry<'a> {
    username: &'a str,
    password: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    email: &'a str,
    auth: String,
}

#[derive(Serialize)]
struct Document<'a> {
    auths: BTreeMap<&'a str, Entry<'a>>,
}

/// Renders the `auths` document for the given credentials, each tagged with its source name
/// (for the duplicate error).
/// The registry a key of `auths` names, as pulls match it: scheme, case and trailing slashes
/// do not matter, and Docker Hub answers to several names. Two keys with one registry key
/// would give a pull two competing credentials.
pub fn registry_key(server: &str) -> String {
    let s = server.trim().to_ascii_lowercase();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(&s);
    let s = s.trim_end_matches('/');
    let (host, path) = s.split_once('/').unwrap_or((s, ""));
    const HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    if HUB.contains(&host) && matches!(path, "" | "v1" | "v2") {
        return "docker.io".into();
    }
    s.to_string()
}

/// The `auths` object of a `.dockerconfigjson`, by key; empty when it is not one.
pub fn auths_of(bytes: &[u8]) -> BTreeMap<String, serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|mut v| v.get_mut("auths").map(serde_json::Value::take))
        .and_then(|a| serde_json::from_value(a).ok())
        .unwrap_or_default()
}

/// A `.dockerconfigjson` reduced to what deciding on a write reads: each host's username and
/// a digest of its whole entry. Held in place of the live documents of a large cluster, whose
/// tokens would otherwise be kept in memory namespace after namespace.
pub fn reduce(bytes: &[u8]) -> Vec<u8> {
    let auths: BTreeMap<String, serde_json::Value> = auths_of(bytes)
        .into_iter()
        .map(|(host, entry)| {
            let reduced = serde_json::json!({
                "username": entry.get("username"),
                "digest": entry_digest(&entry),
            });
            (host, reduced)
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "auths": auths })).unwrap_or_default()
}

/// A digest of an `auths` entry, the same for the entry and for its [`reduce`]d form.
pub fn entry_digest(entry: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    if let Some(d) = entry
        .get("digest")
        .and_then(|d| d.as_str())
        .filter(|_| entry.get("auth").is_none())
    {
        return d.to_string();
    }
    let bytes = serde_json::to_vec(entry).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn render<'a>(
    creds: impl IntoIterator<Item = (&'a str, &'a RegistryCredential)>,
) -> Result<Vec<u8>, DockerConfigError> {
    let mut auths = BTreeMap::new();
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    let mut keys = Vec::new();
    for (source, c) in creds {
        keys.push((registry_key(&c.server), source, c));
    }
    for (key, source, c) in &keys {
        let (source, c) = (*source, *c);
        if let Some(first) = owners.insert(key.as_str(), source) {
            return Err(DockerConfigError::DuplicateServer {
                server: c.server.clone(),
                first: first.to_string(),
                second: source.to_string(),
            });
        }
        let password = c.password();
        auths.insert(
            c.server.as_str(),
            Entry {
                username: &c.username,
                password,
                email: c.email.as_deref().unwrap_or(""),
                auth: STANDARD.encode(Zeroizing::new(format!("{}:{}", c.username, password))),
            },
        );
    }
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoCompatible);
    let mut doc = Document { auths };
    let result = doc.serialize(&mut ser);
    // The `auth` values are base64 of user:password: wipe them like the passwords.
    doc.auths.values_mut().for_each(|e| e.auth.zeroize());
    if let Err(e) = result {
        drop(Zeroizing::new(out));
        return Err(e.into());
    }
    Ok(out)
}

/// serde_json's compact formatter plus Go's HTML-safe escapes.
struct GoCompatible;

impl serde_json::ser::Formatter for GoCompatible {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            let esc = match ch {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(esc.as_bytes())?;
            start = i + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(server: &str, user: &str, pass: &str) -> RegistryCredential {
        RegistryCredential::new(server, user, pass)
    }

    #[test]
    fn renders_the_kubectl_shape() {
        let a = cred("b.example", "AWS", "p:w@\"d\"é");
        let mut b = cred("a.example", "u", "x");
        b.email = Some("me@example.com".into());
        let out = render([("s1", &a), ("s2", &b)]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let auth_a = STANDARD.encode("AWS:p:w@\"d\"é");
        assert_eq!(
            text,
            format!(
                r#"{{"auths":{{"a.example":{{"username":"u","password":"x","email":"me@example.com","auth":"dTp4"}},"b.example":{{"username":"AWS","password":"p:w@\"d\"é","auth":"{auth_a}"}}}}}}"#
            )
        );
    }

    #[test]
    fn escapes_like_go() {
        let a = cred("r", "u", "<&>\u{2028}");
        let text = String::from_utf8(render([("s", &a)]).unwrap()).unwrap();
        assert!(
            text.contains(r#""password":"\u003c\u0026\u003e\u2028""#),
            "{text}"
        );
    }

    #[test]
    fn registry_keys_fold_scheme_case_slashes_and_docker_hub_aliases() {
        for hub in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
            "HTTPS://Docker.IO/",
        ] {
            assert_eq!(registry_key(hub), "docker.io", "{hub}");
        }
        assert_eq!(registry_key("https://GCR.io/"), "gcr.io");
        assert_eq!(registry_key("gcr.io/project"), "gcr.io/project");
        assert_ne!(registry_key("quay.io"), registry_key("docker.io"));
        let (a, b) = (cred("gcr.io", "u", "p"), cred("https://gcr.io/", "u", "p"));
        assert!(matches!(
            render([("one", &a), ("two", &b)]),
            Err(DockerConfigError::DuplicateServer { .. })
        ));
    }

    #[test]
    fn duplicate_server_is_an_error_naming_both_sources() {
        let a = cred("r", "u", "p");
        let err = render([("one", &a), ("two", &a)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "registry r appears in more than one source (one and two): keep it in one"
        );
    }

    #[test]
    fn a_reduced_document_keeps_usernames_and_digests_only() {
        let full = br#"{"auths":{"quay.io":{"username":"bot","password":"s3cret","auth":"Ym90OnMzY3JldA=="}}}"#;
        let reduced = reduce(full);
        let text = String::from_utf8(reduced.clone()).unwrap();
        assert!(!text.contains("s3cret") && !text.contains("Ym90"), "{text}");
        let (r, f) = (auths_of(&reduced), auths_of(full));
        assert_eq!(r["quay.io"]["username"], "bot");
        assert_eq!(entry_digest(&r["quay.io"]), entry_digest(&f["quay.io"]));
        let other = auths_of(
            br#"{"auths":{"quay.io":{"username":"bot","password":"new","auth":"Ym90Om5ldw=="}}}"#,
        );
        assert_ne!(entry_digest(&r["quay.io"]), entry_digest(&other["quay.io"]));
    }
}
