//! What a secret is made of, short of the secret values: its sources in order and each
//! source's settings (region, role, hosts, server, username field). Written into an annotation
//! so a later run can tell "same recipe, fresher token not yet needed" from "the configuration
//! changed" without fetching a token. Pure; never sees a password or token.

use sha2::{Digest, Sha256};

use crate::config::{SecretConfig, SourceConfig};

/// Bumped when the recipe's text changes shape, so an upgrade rewrites every secret once.
const VERSION: &str = "v1";

/// The fingerprint of one configured secret, as 32 hex characters.
pub fn of_secret(secret: &SecretConfig, sources: &[SourceConfig]) -> String {
    let mut recipe = format!("{VERSION}\n");
    for name in &secret.sources {
        recipe.push_str(name);
        recipe.push('\t');
        match sources.iter().find(|s| &s.name == name).map(|s| &s.kind) {
            Some(kind) => recipe.push_str(&kind.recipe()),
            None => recipe.push_str("undefined"),
        }
        recipe.push('\n');
    }
    // Only for a format other than the default: older secrets keep their fingerprints.
    let format = secret.format.recipe();
    if !format.is_empty() {
        recipe.push_str(&format);
        recipe.push('\n');
    }
    let digest = Sha256::digest(recipe.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// True when a secret holds credentials that expire, so its renewal time matters.
pub fn expires(secret: &SecretConfig, sources: &[SourceConfig]) -> bool {
    secret
        .sources
        .iter()
        .any(|n| sources.iter().any(|s| &s.name == n && s.kind.expires()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        AssumeRole, EcrConfig, EcrPublicConfig, GoogleConfig, SourceKind, StaticConfig, ValueFrom,
    };

    fn ecr(name: &str, region: &str) -> SourceConfig {
        SourceConfig {
            name: name.into(),
            kind: SourceKind::Ecr(EcrConfig {
                region: region.into(),
                account_id: None,
                assume_role: None,
            }),
        }
    }

    fn google(name: &str, hosts: &[&str]) -> SourceConfig {
        SourceConfig {
            name: name.into(),
            kind: SourceKind::Google(GoogleConfig {
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                key_file: None,
                external_account: None,
            }),
        }
    }

    fn secret(sources: &[&str]) -> SecretConfig {
        SecretConfig {
            format: Default::default(),
            name: "regcred".into(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            adopt: false,
        }
    }

    #[test]
    fn same_recipe_same_fingerprint_and_any_change_shows() {
        let srcs = [ecr("a", "us-east-1"), google("g", &["gcr.io"])];
        let fp = of_secret(&secret(&["a", "g"]), &srcs);
        assert_eq!(fp.len(), 32);
        assert_eq!(fp, of_secret(&secret(&["a", "g"]), &srcs));
        assert_ne!(fp, of_secret(&secret(&["g", "a"]), &srcs), "order");
        assert_ne!(fp, of_secret(&secret(&["a"]), &srcs), "a source less");
        let moved = [ecr("a", "eu-west-1"), google("g", &["gcr.io"])];
        assert_ne!(fp, of_secret(&secret(&["a", "g"]), &moved), "region");
        let more = [ecr("a", "us-east-1"), google("g", &["gcr.io", "eu.gcr.io"])];
        assert_ne!(fp, of_secret(&secret(&["a", "g"]), &more), "hosts");
    }

    #[test]
    fn ecr_public_recipes_show_the_role_and_expire() {
        let public = |role: Option<&str>| SourceConfig {
            name: "pub".into(),
            kind: SourceKind::EcrPublic(EcrPublicConfig {
                assume_role: role.map(|arn| AssumeRole {
                    role_arn: arn.into(),
                    external_id: None,
                    session_name: "regcred-refresher".into(),
                }),
            }),
        };
        let plain = of_secret(&secret(&["pub"]), &[public(None)]);
        let with_role = of_secret(
            &secret(&["pub"]),
            &[public(Some("arn:aws:iam::123456789012:role/pull"))],
        );
        assert_ne!(plain, with_role);
        // Not the recipe of an ECR source of the same name.
        assert_ne!(
            plain,
            of_secret(&secret(&["pub"]), &[ecr("pub", "us-east-1")])
        );
        assert!(expires(&secret(&["pub"]), &[public(None)]));
    }

    #[test]
    fn only_token_sources_expire() {
        let srcs = [
            ecr("a", "us-east-1"),
            SourceConfig {
                name: "s".into(),
                kind: SourceKind::Static(StaticConfig::DockerConfigJson(ValueFrom::Env(
                    "X".into(),
                ))),
            },
        ];
        assert!(expires(&secret(&["a", "s"]), &srcs));
        assert!(!expires(&secret(&["s"]), &srcs));
    }
}
