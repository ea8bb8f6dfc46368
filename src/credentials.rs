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
    /// When the fetch that produced them started: with `expires_at`, their lifetime.
    pub issued_at: DateTime<Utc>,
}

impl Credentials {
    /// When these credentials should be replaced: once only `margin` (a fraction) of their
    /// lifetime is left. `None` when they do not expire.
    pub fn refresh_after(&self, margin: f64) -> Option<DateTime<Utc>> {
        let exp = self.expires_at?;
        let life = (exp - self.issued_at).max(chrono::Duration::zero());
        let keep = life
            .to_std()
            .unwrap_or_default()
            .mul_f64(margin.clamp(0.0, 1.0));
        Some(exp - chrono::Duration::from_std(keep).unwrap_or_default())
    }
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
                expires_at: None,
                issued_at: Utc::now(),
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[redacted]"));
        assert_eq!(c.password(), "hunter2-very-secret");
    }

    /// Every type that holds a password, a token or a rendered document: its `Debug`, plain
    /// and pretty, shows none of it. None of them implements `Display`, so `{}` cannot print
    /// one by accident (a compile error, not a test).
    #[test]
    fn every_secret_bearing_type_redacts() {
        let secret = "s3cr3t-T0KEN-value";
        let c = RegistryCredential::new("r.example", "u", secret);
        let creds = Credentials {
            source: "s".into(),
            entries: vec![c.clone()],
            expires_at: None,
            issued_at: Utc::now(),
        };
        let doc = crate::dockerconfig::render([("s", &c)]).unwrap();
        let doc_text = String::from_utf8(doc.clone()).unwrap();
        let payload = crate::writer::Payload::new(doc);
        let (_, token) = crate::sources::aws::decode_token(&base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("AWS:{secret}"),
        ))
        .unwrap();
        let auth = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("u:{secret}"),
        );
        let shown = [
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{creds:?}"),
            format!("{creds:#?}"),
            format!("{payload:?}"),
            format!("{payload:#?}"),
            format!("{:?}", c.password),
            format!("{token:?}"),
        ];
        for s in &shown {
            assert!(!s.contains(secret), "{s}");
            assert!(!s.contains(&auth), "{s}");
            assert!(!s.contains(&doc_text), "{s}");
            assert!(!s.contains("T0KEN"), "{s}");
        }
        assert!(shown[0].contains("[redacted]"));
        assert!(shown[4].contains("redacted"));
    }

    #[test]
    fn refresh_is_due_when_the_margin_of_the_lifetime_is_left() {
        let issued = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let c = Credentials {
            source: "s".into(),
            entries: vec![],
            expires_at: Some(issued + chrono::Duration::hours(12)),
            issued_at: issued,
        };
        assert_eq!(
            c.refresh_after(0.25),
            Some(issued + chrono::Duration::hours(9))
        );
        assert_eq!(c.refresh_after(0.0), c.expires_at);
        let never = Credentials {
            expires_at: None,
            ..c
        };
        assert_eq!(never.refresh_after(0.25), None);
    }

    /// Wiped on drop: the password through `secrecy`, the rendered document through
    /// `Zeroizing` (checked at compile time).
    #[test]
    fn secret_holders_zeroize_on_drop() {
        fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop + ?Sized>() {}
        zeroize_on_drop::<SecretString>();
        zeroize_on_drop::<zeroize::Zeroizing<Vec<u8>>>();
    }
}
