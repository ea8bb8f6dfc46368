//! Registry credentials as providers hand them over.
//!
//! This is the one type that holds a password. Its `Debug` redacts the password and the
//! password is zeroized on drop (through `secrecy`), so a stray `?creds` in a log line
//! cannot leak a token.

use std::fmt;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

/// One `auths` entry: what a container runtime needs to log in to one registry host.
#[derive(Clone)]
pub struct RegistryCredential {
    /// Registry host as it appears in image references (`123.dkr.ecr.us-east-1.amazonaws.com`)
    /// or Docker Hub's legacy key (`https://index.docker.io/v1/`).
    pub server: String,
    pub username: String,
    pub password: SecretString,
    pub email: Option<String>,
}

impl RegistryCredential {
    pub fn new(server: impl Into<String>, username: impl Into<String>, password: &str) -> Self {
        Self {
            server: server.into(),
            username: username.into(),
            password: SecretString::from(password),
            email: None,
        }
    }

    pub fn password(&self) -> &str {
        self.password.expose_secret()
    }
}

impl fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("email", &self.email)
            .finish()
    }
}

/// Everything one configured source produced in one fetch.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The source's `name` from the configuration.
    pub source: String,
    pub entries: Vec<RegistryCredential>,
    /// When the credentials stop working; `None` for static credentials that do not expire.
    pub expires_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let c = RegistryCredential::new("r.example", "u", "hunter2-very-secret");
        let shown = format!(
            "{c:?} {:?}",
            Credentials {
                source: "s".into(),
                entries: vec![c.clone()],
                expires_at: None
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[redacted]"));
        assert_eq!(c.password(), "hunter2-very-secret");
    }
}
