//! Static credentials (Docker Hub, Quay, any registry): a username and password, or a whole
//! `.dockerconfigjson`, read from files (a mounted Secret) or environment variables at every
//! fetch, so a rotated Secret is picked up without a restart. They carry no expiry.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::{Fetch, Kind, Labelled, SourceError};
use crate::config_error::{Checked, ConfigError};
use crate::credentials::{Credentials, RegistryCredential};
use crate::dockerconfig;
use crate::input::{self, ValueFrom, clean_value};
use crate::names::registry_host;

/// `static:` as the file holds it.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StaticFile {
    pub server: Option<String>,
    pub username: Option<String>,
    pub username_file: Option<PathBuf>,
    pub username_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    pub email: Option<String>,
    pub docker_config_json_file: Option<PathBuf>,
    pub docker_config_json_env: Option<String>,
}

#[derive(Debug, Clone)]
pub enum StaticConfig {
    Login {
        server: String,
        username: ValueFrom,
        password: ValueFrom,
        email: Option<String>,
    },
    DockerConfigJson(ValueFrom),
}

#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    #[error("cannot read {what}: {message}")]
    Read { what: String, message: String },
    #[error("{what}: {source}")]
    Parse {
        what: String,
        #[source]
        source: dockerconfig::DockerConfigError,
    },
}

impl Labelled for StaticError {
    fn metric_label(&self) -> &'static str {
        match self {
            Self::Read { .. } => "static_read",
            Self::Parse { .. } => "static_parse",
        }
    }
}

pub struct Spec;

impl Kind for Spec {
    type File = StaticFile;
    type Config = StaticConfig;
    type Fetcher = StaticProvider;
    type Error = StaticError;

    fn check(field: &str, file: StaticFile) -> Checked<StaticConfig> {
        static_(field, file)
    }

    fn recipe(cfg: &StaticConfig) -> String {
        match cfg {
            StaticConfig::Login {
                server,
                username,
                email,
                ..
            } => format!(
                "static server={server} username={} email={}",
                value_from(username),
                email.as_deref().unwrap_or("-")
            ),
            StaticConfig::DockerConfigJson(from) => {
                format!("static dockerconfigjson={}", value_from(from))
            }
        }
    }

    /// A document's hosts are known only when it is read, at each fetch.
    fn known_hosts(cfg: &StaticConfig) -> Vec<String> {
        match cfg {
            StaticConfig::Login { server, .. } => vec![server.clone()],
            StaticConfig::DockerConfigJson(_) => vec![],
        }
    }

    fn expires(_: &StaticConfig) -> bool {
        false
    }

    async fn fetcher(name: &str, cfg: &StaticConfig, _: Duration) -> StaticProvider {
        StaticProvider::new(name, cfg)
    }
}

/// Where a value comes from; a literal username is part of the recipe, a file or variable is
/// named (its content is compared by value when the secret is assessed).
fn value_from(v: &ValueFrom) -> String {
    match v {
        ValueFrom::Literal(s) => format!("literal:{s}"),
        ValueFrom::File(p) => format!("file:{}", p.display()),
        ValueFrom::Env(n) => format!("env:{n}"),
    }
}

fn static_(field: &str, s: StaticFile) -> Checked<StaticConfig> {
    let login_fields = s.server.is_some()
        || s.username.is_some()
        || s.username_file.is_some()
        || s.username_env.is_some()
        || s.password_file.is_some()
        || s.password_env.is_some()
        || s.email.is_some();
    let docker = one_of(
        &format!("{field}.dockerConfigJsonFile/dockerConfigJsonEnv"),
        None,
        s.docker_config_json_file,
        s.docker_config_json_env,
    )?;
    if let Some(d) = docker {
        if login_fields {
            return Err(ConfigError::invalid(
                field,
                "a dockerConfigJson source cannot also have server/username/password/email",
                "use either dockerConfigJsonFile/Env or server + username + password",
            ));
        }
        docker_config(&format!("{field}.{}", docker_field(&d)), &d)?;
        return Ok(StaticConfig::DockerConfigJson(d));
    }
    let Some(server) = s.server else {
        return Err(ConfigError::invalid(
            &format!("{field}.server"),
            "missing",
            "set the registry, e.g. https://index.docker.io/v1/ or quay.io (or use dockerConfigJsonFile)",
        ));
    };
    let server = registry_host(&format!("{field}.server"), &server)?;
    let username = one_of(
        &format!("{field}.username/usernameFile/usernameEnv"),
        s.username,
        s.username_file,
        s.username_env,
    )?
    .ok_or_else(|| {
        ConfigError::invalid(
            &format!("{field}.username"),
            "missing",
            "set one of username, usernameFile, usernameEnv",
        )
    })?;
    let password = one_of(
        &format!("{field}.passwordFile/passwordEnv"),
        None,
        s.password_file,
        s.password_env,
    )?
    .ok_or_else(|| {
        ConfigError::invalid(
            &format!("{field}.passwordFile"),
            "missing",
            "set passwordFile (a mounted Secret) or passwordEnv; a password is never taken from the config or argv",
        )
    })?;
    // Read once here so a bad value stops the start, not every cycle.
    for (name, from) in [("username", &username), ("password", &password)] {
        let field = format!("{field}.{name}");
        let raw = input::read_value(from).map_err(|problem| {
            ConfigError::invalid(&field, &problem, "fix the path or the mount")
        })?;
        credential_value(&field, &raw)?;
    }
    Ok(StaticConfig::Login {
        server,
        username,
        password,
        email: s.email,
    })
}

fn docker_field(from: &ValueFrom) -> &'static str {
    match from {
        ValueFrom::Env(_) => "dockerConfigJsonEnv",
        _ => "dockerConfigJsonFile",
    }
}

/// The document as each fetch will read it, checked now: JSON of the right shape, every key a
/// registry the kubelet matches (what `server` would accept). Its values are never quoted.
fn docker_config(field: &str, from: &ValueFrom) -> Checked<()> {
    let raw = input::read_value(from)
        .map_err(|problem| ConfigError::invalid(field, &problem, "fix the path or the mount"))?;
    crate::dockerconfig::parse(raw.as_bytes())
        .map(drop)
        .map_err(|e| {
            ConfigError::invalid(
                field,
                &e.to_string(),
                "give a .dockerconfigjson document (what kubectl create secret docker-registry writes), keyed on registry hosts such as quay.io or https://index.docker.io/v1/",
            )
        })
}

/// A username or password as each fetch will clean it: present, not blank, small enough for
/// a Secret.
fn credential_value(field: &str, raw: &str) -> Checked<()> {
    clean_value(raw)
        .map(|_| ())
        .map_err(|problem| {
            ConfigError::invalid(
                field,
                &problem,
                "put the credential itself in the file or variable (one trailing newline and a byte-order mark are ignored)",
            )
        })
}

fn one_of(
    field: &str,
    literal: Option<String>,
    file: Option<PathBuf>,
    env: Option<String>,
) -> Checked<Option<ValueFrom>> {
    let given = [literal.is_some(), file.is_some(), env.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ConfigError::invalid(
            field,
            "more than one is set",
            "keep exactly one",
        ));
    }
    if let Some(path) = &file {
        input::regular_file(path).map_err(|problem| {
            ConfigError::invalid(
                field,
                &problem,
                "mount the file there (e.g. from a Secret) or fix the path",
            )
        })?;
    }
    if let Some(var) = &env
        && !input::is_set(var)
    {
        return Err(ConfigError::invalid(
            field,
            // Not named: a password pasted here is a value, not a variable name.
            "the environment variable it names is not set",
            "set it (e.g. from a Secret with env.valueFrom) or use the File form",
        ));
    }
    Ok(literal
        .map(ValueFrom::Literal)
        .or(file.map(ValueFrom::File))
        .or(env.map(ValueFrom::Env)))
}

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

    pub fn fetch_now(&self) -> Result<Credentials, SourceError> {
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
                    SourceError::failed(
                        &self.name,
                        StaticError::Parse {
                            what: "dockerConfigJson".into(),
                            source,
                        },
                    )
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
    fn read(&self, from: &ValueFrom, what: &str) -> Result<Zeroizing<String>, SourceError> {
        let fail = |message: String| {
            SourceError::failed(
                &self.name,
                StaticError::Read {
                    what: what.to_string(),
                    message,
                },
            )
        };
        let value = Zeroizing::new(match from {
            ValueFrom::Literal(v) => v.clone(),
            // Same guard as at start-up: a regular file under 1 MiB (a directory or a FIFO
            // mounted by mistake must not hang or exhaust the refresher).
            // The path passed the start's checks, so it is a path, not a pasted secret.
            ValueFrom::File(path) => input::read_small_file(path)
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

impl Fetch for StaticProvider {
    async fn fetch(&self) -> Result<Credentials, SourceError> {
        self.fetch_now()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

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
        let c = p.fetch_now().unwrap();
        assert_eq!(c.entries[0].password(), "s3cr:et");
        assert!(c.expires_at.is_none());
        std::fs::File::create(&pass)
            .unwrap()
            .write_all(b"rotated")
            .unwrap();
        assert_eq!(p.fetch_now().unwrap().entries[0].password(), "rotated");
        std::fs::write(&pass, "").unwrap();
        assert!(p.fetch_now().unwrap_err().to_string().contains("empty"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
