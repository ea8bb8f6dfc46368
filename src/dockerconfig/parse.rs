//! A `.dockerconfigjson` a user hands us (a mounted Secret, a variable), read as the kubelet
//! reads it.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::DockerConfigError;
use crate::credentials::RegistryCredential;
use crate::names::canonical_server;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerconfig::render;

    fn cred(server: &str, user: &str, pass: &str) -> RegistryCredential {
        RegistryCredential::new(server, user, pass)
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
}
