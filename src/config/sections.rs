//! The parsed file checked section by section (registries, secrets, namespaces,
//! serviceAccounts), and the references between sections, which no single entry can check
//! on its own.

use std::collections::BTreeMap;

use super::{FileConfig, SecretConfig, SourceConfig, closest};
use crate::config_error::{Checked, ConfigError};
use crate::dockerconfig::registry_key;
use crate::names::{dns_subdomain, duplicates};
use crate::namespaces::NamespaceFilter;
use crate::sources::check as source;

#[derive(Debug)]
pub(super) struct Validated {
    pub sources: Vec<SourceConfig>,
    pub secrets: Vec<SecretConfig>,
    pub namespaces: NamespaceFilter,
    pub service_accounts: Vec<String>,
}

pub(super) fn validate(f: FileConfig) -> Checked<Validated> {
    if f.registries.is_empty() {
        return Err(ConfigError::invalid(
            "registries",
            "the list is empty",
            "define at least one registry with `name` and one of `ecr`, `ecrPublic`, `google`, `static`, `acr`",
        ));
    }
    let sources = f
        .registries
        .into_iter()
        .enumerate()
        .map(|(i, r)| source(i, r))
        .collect::<Checked<Vec<_>>>()?;
    if let Some(dup) = duplicates(sources.iter().map(|s| s.name.as_str())) {
        return Err(ConfigError::invalid(
            "registries[].name",
            &format!("{dup:?} is defined twice"),
            "give every registry a unique name",
        ));
    }

    if f.secrets.is_empty() {
        return Err(ConfigError::invalid(
            "secrets",
            "the list is empty",
            "define at least one secret with `name` and `registries`",
        ));
    }
    let mut secrets = Vec::with_capacity(f.secrets.len());
    for (i, s) in f.secrets.into_iter().enumerate() {
        let field = format!("secrets[{i}]");
        dns_subdomain(&format!("{field}.name"), &s.name, "secret name")?;
        if s.registries.is_empty() {
            return Err(ConfigError::invalid(
                &format!("{field}.registries"),
                "the list is empty",
                "name at least one registry from `registries`",
            ));
        }
        for (j, r) in s.registries.iter().enumerate() {
            if !sources.iter().any(|src| &src.name == r) {
                let hint = closest(r, sources.iter().map(|s| s.name.as_str()))
                    .map(|c| format!("did you mean {c:?}? "))
                    .unwrap_or_default();
                return Err(ConfigError::invalid(
                    &format!("{field}.registries[{j}]"),
                    &format!("{r:?} is not a defined registry"),
                    &format!("{hint}use one of the names under `registries`"),
                ));
            }
        }
        if let Some(dup) = duplicates(s.registries.iter().map(String::as_str)) {
            return Err(ConfigError::invalid(
                &format!("{field}.registries"),
                &format!("{dup:?} is listed twice"),
                "list each registry once",
            ));
        }
        one_source_per_host(&format!("{field}.registries"), &s.registries, &sources)?;
        let format =
            super::formats::secret_format(&field, s.format, s.argocd, &s.registries, &sources)?;
        secrets.push(SecretConfig {
            name: s.name,
            sources: s.registries,
            adopt: s.adopt,
            format,
        });
    }
    if let Some(dup) = duplicates(secrets.iter().map(|s| s.name.as_str())) {
        return Err(ConfigError::invalid(
            "secrets[].name",
            &format!("{dup:?} is defined twice"),
            "merge the two entries: one secret can hold several registries",
        ));
    }

    let ns = f.namespaces;
    if ns.include.is_empty() {
        return Err(ConfigError::invalid(
            "namespaces.include",
            "the list is empty, so nothing would be targeted",
            "list names or globs, or [\"*\"] for all namespaces",
        ));
    }
    let namespaces = NamespaceFilter::new(&ns.include, &ns.exclude, ns.selector.as_deref())
        .map_err(|e| ConfigError::invalid(&e.field, &e.problem, &e.fix))?;

    for (i, sa) in f.service_accounts.iter().enumerate() {
        dns_subdomain(&format!("serviceAccounts[{i}]"), sa, "ServiceAccount name")?;
    }
    if let Some(dup) = duplicates(f.service_accounts.iter().map(String::as_str)) {
        return Err(ConfigError::invalid(
            "serviceAccounts",
            &format!("{dup:?} is listed twice"),
            "list each ServiceAccount once",
        ));
    }

    Ok(Validated {
        sources,
        secrets,
        namespaces,
        service_accounts: f.service_accounts,
    })
}

/// Two sources of one secret must not yield one registry: a pull would meet two competing
/// credentials, and one `auths` key cannot hold both. Hosts known before any fetch are
/// checked: Google and static hosts, ECR Public's, and ECR's when the account is configured.
fn one_source_per_host(field: &str, names: &[String], sources: &[SourceConfig]) -> Checked<()> {
    let mut owner: BTreeMap<String, &str> = BTreeMap::new();
    for name in names {
        let Some(src) = sources.iter().find(|s| &s.name == name) else {
            continue;
        };
        let hosts = src.kind.known_hosts();
        for h in hosts {
            let key = registry_key(&h);
            if let Some(first) = owner.insert(key.clone(), name) {
                return Err(ConfigError::invalid(
                    field,
                    &format!(
                        "registries {first:?} and {name:?} both give credentials for {key:?} (from {h:?})"
                    ),
                    "keep that registry host in one of them, or put the two registries in separate secrets",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SourceKind, StaticConfig, parse_text};

    fn check(yaml: &str) -> Result<Validated, String> {
        let f = parse_text(yaml)?;
        validate(f).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
registries:
  - name: ecr-main
    ecr: { region: us-east-1, accountId: "123456789012", roleArn: "arn:aws:iam::123456789012:role/pull" }
secrets:
  - name: regcred
    registries: [ecr-main]
namespaces: { include: ["team-*"], exclude: [kube-system], selector: "team in (a,b)" }
serviceAccounts: [default]
"#;

    #[test]
    fn accepts_the_documented_shape() {
        let v = check(GOOD).unwrap();
        assert_eq!(v.sources[0].name, "ecr-main");
        assert!(matches!(&v.sources[0].kind, SourceKind::Ecr(e) if e.assume_role.is_some()));
        assert_eq!(v.secrets[0].sources, ["ecr-main"]);
        assert_eq!(v.service_accounts, ["default"]);
    }

    #[test]
    fn bad_inputs_name_the_field_and_the_fix() {
        let cases: &[(&str, &str)] = &[
            (
                "registries: []\nsecrets: []",
                "registries: the list is empty",
            ),
            ("registrys: []", "did you mean `registries`"),
            (
                &GOOD.replace("us-east-1", "useast"),
                "registries[0].ecr.region: \"useast\" is not an AWS region",
            ),
            (
                &GOOD.replace("\"123456789012\"", "\"12\""),
                "registries[0].ecr.accountId",
            ),
            (
                &GOOD
                    .replace("role/pull", "user/pull")
                    .replace(":role", ":user"),
                "roleArn",
            ),
            (
                &GOOD.replace("name: regcred", "name: Reg_Cred"),
                "secrets[0].name",
            ),
            (
                &GOOD.replace("[ecr-main]", "[ecr-mian]"),
                "did you mean \"ecr-main\"",
            ),
            (
                &GOOD.replace("team in (a,b)", "team in (a,b"),
                "namespaces.selector",
            ),
            (
                &GOOD.replace("[\"team-*\"]", "[\"team-[\"]"),
                "namespaces.include[0]",
            ),
            (
                &GOOD.replace("[default]", "[Default]"),
                "serviceAccounts[0]",
            ),
            (
                &GOOD.replace("ecr: {", "google: { hosts: [gcr.io] }\n    ecr: {"),
                "more than one source",
            ),
        ];
        for (yaml, want) in cases {
            let err = check(yaml)
                .err()
                .unwrap_or_else(|| panic!("accepted: {yaml}"));
            assert!(err.contains(want), "want {want:?} in {err:?}");
            assert!(
                err.contains("fix") || err.contains("did you mean"),
                "no fix in {err:?}"
            );
        }
    }

    /// Issue 26 item 3: the keyring compares hosts as written, so they are written lowercase.
    #[test]
    fn registry_hosts_are_written_lowercase_in_scheme_and_host() {
        let pw = std::env::temp_dir().join(format!("regcred-pw-{}", std::process::id()));
        std::fs::write(&pw, "pw\n").unwrap();
        let yaml = format!(
            "registries:\n  - name: hub\n    static: {{ server: HTTPS://Quay.IO/Org, username: u, passwordFile: {pw:?} }}\n  - name: g\n    google: {{ hosts: [US-docker.pkg.dev, Gcr.IO] }}\nsecrets:\n  - name: s\n    registries: [hub, g]\n"
        );
        let v = check(&yaml);
        std::fs::remove_file(&pw).unwrap();
        let v = v.unwrap();
        let servers: Vec<String> = v
            .sources
            .iter()
            .flat_map(|s| match &s.kind {
                SourceKind::Static(StaticConfig::Login { server, .. }) => vec![server.clone()],
                SourceKind::Google(g) => g.hosts.clone(),
                _ => vec![],
            })
            .collect();
        assert_eq!(
            servers,
            ["https://quay.io/Org", "us-docker.pkg.dev", "gcr.io"]
        );
    }

    #[test]
    fn credential_files_must_be_regular_readable_files() {
        let dir = std::env::temp_dir();
        for (path, want) in [
            (dir.to_str().unwrap(), "is a directory"),
            ("/nonexistent/regcred/pw", "the file cannot be read"),
            ("/dev/zero", "is not a regular file"),
        ] {
            let yaml = format!(
                "registries:\n  - name: hub\n    static: {{ server: quay.io, username: u, passwordFile: {path:?} }}\nsecrets:\n  - name: s\n    registries: [hub]\n"
            );
            let err = check(&yaml).unwrap_err();
            assert!(err.contains("registries[0].static.passwordFile"), "{err}");
            assert!(err.contains(want), "{err}");
            let yaml = format!(
                "registries:\n  - name: g\n    google: {{ hosts: [gcr.io], keyFile: {path:?} }}\nsecrets:\n  - name: s\n    registries: [g]\n"
            );
            let err = check(&yaml).unwrap_err();
            assert!(err.contains("registries[0].google.keyFile"), "{err}");
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn a_docker_hub_host_the_kubelet_ignores_is_refused() {
        let yaml = |server: &str| {
            format!(
                "registries:\n  - name: hub\n    static: {{ server: {server:?}, username: u }}\n"
            )
        };
        let err = check(&yaml("registry-1.docker.io")).unwrap_err();
        assert!(
            err.contains("never matches") && err.contains("https://index.docker.io/v1/"),
            "{err}"
        );
    }

    const ECR_PUBLIC: &str = "registries:\n  - name: pub\n    ecrPublic: {}\nsecrets:\n  - name: s\n    registries: [pub]\n";

    #[test]
    fn ecr_public_takes_the_role_options_of_ecr_and_no_region() {
        let v = check(ECR_PUBLIC).unwrap();
        assert!(matches!(&v.sources[0].kind, SourceKind::EcrPublic(p) if p.assume_role.is_none()));
        let with_role = ECR_PUBLIC.replace(
            "{}",
            "{ roleArn: \"arn:aws:iam::123456789012:role/pull\", externalId: ext-1, sessionName: s-1 }",
        );
        let v = check(&with_role).unwrap();
        let SourceKind::EcrPublic(p) = &v.sources[0].kind else {
            panic!("{:?}", v.sources[0].kind)
        };
        let role = p.assume_role.as_ref().unwrap();
        assert_eq!(
            (
                role.role_arn.as_str(),
                role.external_id.as_deref(),
                role.session_name.as_str()
            ),
            ("arn:aws:iam::123456789012:role/pull", Some("ext-1"), "s-1")
        );
        for (body, want) in [
            (
                "{ region: eu-west-1 }",
                "registries[0].ecrPublic.region: \"eu-west-1\": ECR Public has no region setting; its authorization API exists only in us-east-1",
            ),
            (
                "{ roleArn: \"arn:aws:iam::1:role/x\" }",
                "registries[0].ecrPublic.roleArn",
            ),
            (
                "{ roleArn: \"arn:aws:iam::123456789012:role/x\", externalId: e }",
                "registries[0].ecrPublic.externalId: an external ID of 1 characters",
            ),
            (
                "{ roleArn: \"arn:aws:iam::123456789012:role/x\", sessionName: \"a b\" }",
                "registries[0].ecrPublic.sessionName",
            ),
            (
                "{ externalId: ext-1 }",
                "registries[0].ecrPublic.externalId/sessionName",
            ),
            (
                "{ accountId: \"123456789012\" }",
                "unknown field `accountId`",
            ),
        ] {
            let err = check(&ECR_PUBLIC.replace("{}", body)).unwrap_err();
            assert!(err.contains(want), "want {want:?} in {err:?}");
            assert!(err.contains("fix"), "{err}");
        }
    }

    #[test]
    fn source_kind_messages_name_ecr_public() {
        let none = check("registries:\n  - name: a\nsecrets:\n  - name: s\n    registries: [a]\n")
            .unwrap_err();
        assert!(
            none.contains("has no source") && none.contains("`ecrPublic`"),
            "{none}"
        );
        let two = check(&ECR_PUBLIC.replace(
            "ecrPublic: {}",
            "ecrPublic: {}\n    ecr: { region: us-east-1 }",
        ))
        .unwrap_err();
        assert!(
            two.contains("more than one source") && two.contains("`ecrPublic`"),
            "{two}"
        );
    }

    #[test]
    fn public_ecr_aws_from_two_sources_of_one_secret_is_refused() {
        let yaml = "registries:\n  - name: pub\n    ecrPublic: {}\n  - name: pub2\n    ecrPublic: { roleArn: \"arn:aws:iam::123456789012:role/x\" }\nsecrets:\n  - name: s\n    registries: [pub, pub2]\n";
        let err = check(yaml).unwrap_err();
        assert!(
            err.contains("both give credentials for \"public.ecr.aws\""),
            "{err}"
        );
        // In separate secrets each is fine.
        let apart = yaml.replace(
            "registries: [pub, pub2]\n",
            "registries: [pub]\n  - name: t\n    registries: [pub2]\n",
        );
        check(&apart).unwrap();
    }
}
