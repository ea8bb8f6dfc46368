//! Static credentials (Docker Hub, Quay, any registry): a username and password, or a whole
//! `.dockerconfigjson`, read from files (a mounted Secret) or environment variables at every
//! fetch, so a rotated Secret is picked up without a restart. They carry no expiry.

use zeroize::Zeroizing;

use super::ProviderError;
use crate::config::{StaticConfig, ValueFrom};
use crate::credentials::{Credentials, RegistryCredential};
use crate::dockerconfig;

pub struct StaticProvider {
    name: String,
    cfg: StaticConfig,
}

impl StaticProvider {
    pub fn new(name: &str, cfg: &StaticConfig) -> Self {
        Self {
            name: name.to_string(),
            cfg: cfg.clone(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn fetch(&self) -> Result<Credentials, ProviderError> {
        let entries = match &self.cfg {
            StaticConfig::Login {
                server,
                username,
                password,
                email,
            } => {
                let username = self.read(username, "username")?;
                let password = self.read(password, "password")?;
                let mut c = RegistryCredential::new(server.clone(), username.as_str(), &password);
                c.email = email.clone();
                vec![c]
            }
            StaticConfig::DockerConfigJson(from) => {
                let text = self.read(from, "dockerConfigJson")?;
                dockerconfig::parse(text.as_bytes()).map_err(|source| {
                    ProviderError::StaticParse {
                        source_name: self.name.clone(),
                        what: "dockerConfigJson".into(),
                        source,
                    }
                })?
            }
        };
        Ok(Credentials {
            source: self.name.clone(),
            entries,
            expires_at: None,
            issued_at: chrono::Utc::now(),
        })
    }

    /// The value, wiped from memory when dropped (file and environment buffers included).
    fn read(&self, from: &ValueFrom, what: &str) -> Result<Zeroizing<String>, ProviderError> {
        let fail = |message: String| ProviderError::StaticRead {
            source_name: self.name.clone(),
            what: what.to_string(),
            message,
        };
        let value = Zeroizing::new(match from {
            ValueFrom::Literal(v) => v.clone(),
            // Same guard as at start-up: a regular file under 1 MiB (a directory or a FIFO
            // mounted by mistake must not hang or exhaust the refresher).
            // The path passed the start's checks, so it is a path, not a pasted secret.
            ValueFrom::File(path) => crate::config::read_small_file(path)
                .map_err(|e| fail(format!("{}: {e}", path.display())))?,
            ValueFrom::Env(var) => {
                std::env::var(var).map_err(|e| fail(format!("environment variable {var}: {e}")))?
            }
        });
        Ok(Zeroizing::new(
            clean_value(&value).map_err(fail)?.to_string(),
        ))
    }
}

/// The largest username or password we take: a pull secret holds it twice (as the password
/// and inside the base64 `auth`), and a whole Secret holds at most 1 MiB.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;

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

#[cfg(test)]
mod tests {
    use std::io::Write;

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
    fn reads_files_each_time_and_trims_one_newline() {
        let dir = std::env::temp_dir().join(format!("regcred-static-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pass = dir.join("p");
        std::fs::write(&pass, "s3cr:et\n").unwrap();
        let p = StaticProvider::new(
            "hub",
            &StaticConfig::Login {
                server: "https://index.docker.io/v1/".into(),
                username: ValueFrom::Literal("me".into()),
                password: ValueFrom::File(pass.clone()),
                email: Some("me@example.com".into()),
            },
        );
        let c = p.fetch().unwrap();
        assert_eq!(c.entries[0].password(), "s3cr:et");
        assert!(c.expires_at.is_none());
        std::fs::File::create(&pass)
            .unwrap()
            .write_all(b"rotated")
            .unwrap();
        assert_eq!(p.fetch().unwrap().entries[0].password(), "rotated");
        std::fs::write(&pass, "").unwrap();
        assert!(p.fetch().unwrap_err().to_string().contains("empty"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
