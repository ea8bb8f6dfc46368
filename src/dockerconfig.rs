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
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::credentials::RegistryCredential;

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

#[derive(Deserialize)]
struct InputDocument {
    auths: BTreeMap<String, InputEntry>,
}

#[derive(Deserialize)]
struct InputEntry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    auth: Option<String>,
}

/// Parses a user-supplied `.dockerconfigjson` (e.g. a mounted Secret) into credentials,
/// each key in its [`canonical_server`] form. Entries carry `auth`, `username`/`password`, or
/// both: then `auth` wins, as in the kubelet's keyring (`DockerConfigEntry.UnmarshalJSON`
/// decodes `auth` over the other two), so what we write is what a pull would have used.
pub fn parse(bytes: &[u8]) -> Result<Vec<RegistryCredential>, DockerConfigError> {
    // The error text of serde_json may quote input; say only where it failed.
    let doc: InputDocument = serde_json::from_slice(bytes).map_err(|e| {
        DockerConfigError::Parse(format!("line {} column {}", e.line(), e.column()))
    })?;
    if doc.auths.is_empty() {
        return Err(DockerConfigError::Parse("\"auths\" is empty".into()));
    }
    let mut out = Vec::with_capacity(doc.auths.len());
    for (key, e) in doc.auths {
        let bad = |problem: &str| DockerConfigError::Entry {
            server: shown_key(&key),
            problem: problem.to_string(),
        };
        if key.is_empty() {
            return Err(bad("the server key is empty"));
        }
        let server = canonical_server(&key).map_err(|p| DockerConfigError::Entry {
            server: shown_key(&key),
            problem: format!("{}; fix: {}", p.problem, p.fix),
        })?;
        let password_given = e.password.map(Zeroizing::new);
        let auth = e.auth.map(Zeroizing::new).filter(|a| !a.trim().is_empty());
        let (username, password) = match (e.username, password_given, auth) {
            (_, _, Some(auth)) => {
                let decoded = Zeroizing::new(
                    STANDARD
                        .decode(auth.trim())
                        .map_err(|_| bad("\"auth\" is not base64"))?,
                );
                let decoded =
                    std::str::from_utf8(&decoded).map_err(|_| bad("\"auth\" is not UTF-8"))?;
                let (u, p) = decoded
                    .split_once(':')
                    .ok_or_else(|| bad("\"auth\" must decode to username:password"))?;
                if u.is_empty() {
                    return Err(bad("\"auth\" has an empty username"));
                }
                (u.to_string(), Zeroizing::new(p.to_string()))
            }
            (Some(u), Some(p), None) if !u.is_empty() => (u, p),
            _ => return Err(bad("needs \"username\" and \"password\", or \"auth\"")),
        };
        let mut c = RegistryCredential::new(server, username, &password);
        c.email = e.email.filter(|e| !e.is_empty());
        out.push(c);
    }
    Ok(out)
}

/// Why a registry server is refused, and what to write instead.
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

/// A key of a user's document as an error may show it: never with the user info a careless
/// key holds.
fn shown_key(key: &str) -> String {
    let authority = key.split_once("://").map_or(key, |(_, r)| r);
    if authority
        .split('/')
        .next()
        .unwrap_or_default()
        .contains('@')
    {
        "(a key with user info, not shown)".into()
    } else {
        format!("{key:?}")
    }
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
    fn parse_round_trips_and_reads_auth_only_entries() {
        let a = cred("quay.io", "robot+x", "pa:ss");
        let rendered = render([("s", &a)]).unwrap();
        let back = parse(&rendered).unwrap();
        assert_eq!(back[0].server, "quay.io");
        assert_eq!(back[0].username, "robot+x");
        assert_eq!(back[0].password(), "pa:ss");

        let only_auth = format!(
            r#"{{"auths":{{"h":{{"auth":"{}"}}}}}}"#,
            STANDARD.encode("u:p:q")
        );
        let back = parse(only_auth.as_bytes()).unwrap();
        assert_eq!(
            (back[0].username.as_str(), back[0].password()),
            ("u", "p:q")
        );
    }

    #[test]
    fn parse_rejects_bad_shapes_without_echoing_input() {
        for (input, want) in [
            (r#"{"auths":{}}"#, "empty"),
            (r#"{"auths":{"h":{}}}"#, "needs"),
            (r#"{"auths":{"h":{"auth":"!!"}}}"#, "not base64"),
            (
                r#"{"auths":{"h":{"auth":"bm9jb2xvbg=="}}}"#,
                "username:password",
            ),
            ("secretpassword", "line 1"),
        ] {
            let err = parse(input.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
            assert!(!err.contains("secretpassword"), "{err}");
        }
    }

    /// Issue 26 item 4: the kubelet's keyring decodes `auth` over `username`/`password`; a
    /// document whose two disagree must be written as the kubelet would have pulled with it.
    #[test]
    fn auth_wins_over_username_and_password_as_in_the_kubelet() {
        let doc = format!(
            r#"{{"auths":{{"quay.io":{{"username":"old","password":"stale","auth":"{}"}}}}}}"#,
            STANDARD.encode("robot:fresh")
        );
        let back = parse(doc.as_bytes()).unwrap();
        assert_eq!(
            (back[0].username.as_str(), back[0].password()),
            ("robot", "fresh")
        );
        // An empty auth is absent, as in the kubelet: the other two are used.
        let empty = r#"{"auths":{"quay.io":{"username":"u","password":"p","auth":""}}}"#;
        let back = parse(empty.as_bytes()).unwrap();
        assert_eq!((back[0].username.as_str(), back[0].password()), ("u", "p"));
        // A broken auth is an error even beside a username and password: the kubelet fails
        // to read such a secret at all.
        let broken = r#"{"auths":{"quay.io":{"username":"u","password":"p","auth":"!!"}}}"#;
        assert!(parse(broken.as_bytes()).is_err());
    }

    /// Issue 26 item 3: hosts are written as the keyring matches them.
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

    #[test]
    fn a_documents_keys_are_canonical_and_a_key_with_user_info_is_never_shown() {
        let auth = STANDARD.encode("u:p");
        let doc = format!(r#"{{"auths":{{"HTTPS://Quay.IO":{{"auth":"{auth}"}}}}}}"#);
        assert_eq!(parse(doc.as_bytes()).unwrap()[0].server, "https://quay.io");
        let doc = format!(r#"{{"auths":{{"https://bot:S3cr3t@quay.io":{{"auth":"{auth}"}}}}}}"#);
        let err = parse(doc.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("user info") && !err.contains("S3cr3t"),
            "{err}"
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
