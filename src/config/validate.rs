//! Checks on the parsed file, field by field. Each error names the field path
//! (`registries[1].ecr.region`), the offending value and the fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::dockerconfig::registry_key;
use crate::label_selector::{is_dns_label_body, is_label_value};
use crate::namespaces::NamespaceFilter;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}; fix: check the path and its permissions", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {problem}; fix: {fix}")]
    Invalid {
        field: String,
        problem: String,
        fix: String,
    },
}

impl ConfigError {
    pub fn invalid(field: &str, problem: &str, fix: &str) -> Self {
        Self::Invalid {
            field: field.to_string(),
            problem: problem.to_string(),
            fix: fix.to_string(),
        }
    }
}

#[derive(Debug)]
pub(super) struct Validated {
    pub sources: Vec<SourceConfig>,
    pub secrets: Vec<SecretConfig>,
    pub namespaces: NamespaceFilter,
    pub service_accounts: Vec<String>,
}

type R<T> = Result<T, ConfigError>;

pub(super) fn validate(f: FileConfig) -> R<Validated> {
    if f.registries.is_empty() {
        return Err(ConfigError::invalid(
            "registries",
            "the list is empty",
            "define at least one registry with `name` and one of `ecr`, `google`, `static`",
        ));
    }
    let sources = f
        .registries
        .into_iter()
        .enumerate()
        .map(|(i, r)| source(i, r))
        .collect::<R<Vec<_>>>()?;
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
        secrets.push(SecretConfig {
            name: s.name,
            sources: s.registries,
            adopt: s.adopt,
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

pub(super) fn daemon(d: &crate::cli::Daemon) -> R<DaemonConfig> {
    let cron = crate::schedule::parse_cron(&d.schedule).map_err(|e| {
        ConfigError::invalid(
            "--schedule",
            &e.to_string(),
            "use minute hour day-of-month month day-of-week in UTC, e.g. \"0 * * * *\"",
        )
    })?;
    if !(d.refresh_margin > 0.0 && d.refresh_margin < 1.0) {
        return Err(ConfigError::invalid(
            "--refresh-margin",
            &format!("{} is not a fraction between 0 and 1", d.refresh_margin),
            "use e.g. 0.25 to refresh with a quarter of the lifetime left",
        ));
    }
    if d.min_refresh_interval == 0
        || d.max_backoff == 0
        || d.max_backoff < d.min_refresh_interval.min(5)
    {
        return Err(ConfigError::invalid(
            "--min-refresh-interval/--max-backoff",
            &format!("{} / {} seconds", d.min_refresh_interval, d.max_backoff),
            "use positive numbers of seconds (defaults: 60 and 300)",
        ));
    }
    if !(1..=3600).contains(&d.shutdown_timeout) {
        return Err(ConfigError::invalid(
            "--shutdown-timeout",
            &format!("{} is out of range", d.shutdown_timeout),
            "use 1 to 3600 seconds",
        ));
    }
    let leader = if d.leader_election {
        dns_subdomain("--lease-name", &d.lease_name, "Lease name")?;
        if !(5..=3600).contains(&d.lease_duration) {
            return Err(ConfigError::invalid(
                "--lease-duration",
                &format!("{} is out of range", d.lease_duration),
                "use 5 to 3600 seconds (default 15)",
            ));
        }
        let namespace = d
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| {
                std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .ok_or_else(|| {
                ConfigError::invalid(
                    "--lease-namespace",
                    "not set, no POD_NAMESPACE and not running in a pod",
                    "pass --lease-namespace (the chart sets POD_NAMESPACE)",
                )
            })?;
        dns_label("--lease-namespace", &namespace, "namespace")?;
        let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "regcred-refresher".into());
            format!("{host}-{}", std::process::id())
        });
        Some(LeaderConfig {
            lease_name: d.lease_name.clone(),
            lease_namespace: namespace,
            identity,
            lease_duration: Duration::from_secs(d.lease_duration),
        })
    } else {
        None
    };
    Ok(DaemonConfig {
        policy: crate::schedule::Policy {
            cron,
            margin: d.refresh_margin,
            min_interval: Duration::from_secs(d.min_refresh_interval),
            max_backoff: Duration::from_secs(d.max_backoff),
            base_backoff: Duration::from_secs(1),
        },
        admin_addr: d.admin_addr,
        leader,
        prune: d.prune,
        events: d.events,
        shutdown_timeout: Duration::from_secs(d.shutdown_timeout),
    })
}

fn source(i: usize, r: RegistryFile) -> R<SourceConfig> {
    let field = format!("registries[{i}]");
    dns_label(&format!("{field}.name"), &r.name, "registry name")?;
    let kind = match (r.ecr, r.google, r.static_) {
        (Some(e), None, None) => SourceKind::Ecr(ecr(&format!("{field}.ecr"), e)?),
        (None, Some(g), None) => SourceKind::Google(google(&format!("{field}.google"), g)?),
        (None, None, Some(s)) => SourceKind::Static(static_(&format!("{field}.static"), s)?),
        (None, None, None) => {
            return Err(ConfigError::invalid(
                &field,
                &format!("registry {:?} has no source", r.name),
                "add one of `ecr`, `google` or `static`",
            ));
        }
        _ => {
            return Err(ConfigError::invalid(
                &field,
                &format!("registry {:?} has more than one source", r.name),
                "keep one of `ecr`, `google`, `static` and move the others to registries of their own",
            ));
        }
    };
    Ok(SourceConfig { name: r.name, kind })
}

fn ecr(field: &str, e: EcrFile) -> R<EcrConfig> {
    if !is_aws_region(&e.region) {
        return Err(ConfigError::invalid(
            &format!("{field}.region"),
            &format!("{:?} is not an AWS region", e.region),
            "use a region code such as us-east-1 or eu-central-1",
        ));
    }
    if let Some(acct) = &e.account_id
        && !(acct.len() == 12 && acct.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ConfigError::invalid(
            &format!("{field}.accountId"),
            &format!("{acct:?} is not a 12-digit AWS account ID"),
            "quote it as a string of 12 digits, e.g. accountId: \"123456789012\"",
        ));
    }
    let assume_role = match e.role_arn {
        Some(arn) => {
            if !is_role_arn(&arn) {
                return Err(ConfigError::invalid(
                    &format!("{field}.roleArn"),
                    &format!("{arn:?} is not an IAM role ARN"),
                    "use arn:aws:iam::<12-digit account>:role/<name>",
                ));
            }
            if let Some(id) = &e.external_id
                && !(2..=1224).contains(&id.len())
            {
                return Err(ConfigError::invalid(
                    &format!("{field}.externalId"),
                    &format!("an external ID of {} characters", id.len()),
                    "use 2 to 1224 characters, as the role's trust policy expects",
                ));
            }
            let session_name = e
                .session_name
                .unwrap_or_else(|| "regcred-refresher".to_string());
            if !(2..=64).contains(&session_name.len())
                || !session_name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"=,.@-_".contains(&b))
            {
                return Err(ConfigError::invalid(
                    &format!("{field}.sessionName"),
                    &format!("{session_name:?} is not a valid role session name"),
                    "use 2 to 64 characters from [A-Za-z0-9=,.@_-]",
                ));
            }
            Some(AssumeRole {
                role_arn: arn,
                external_id: e.external_id,
                session_name,
            })
        }
        None if e.external_id.is_some() || e.session_name.is_some() => {
            return Err(ConfigError::invalid(
                &format!("{field}.externalId/sessionName"),
                "only apply when a role is assumed",
                "add roleArn, or remove externalId and sessionName",
            ));
        }
        None => None,
    };
    Ok(EcrConfig {
        region: e.region,
        account_id: e.account_id,
        assume_role,
    })
}

/// `arn:<partition>:iam::<12 digits>:role/<path/name>`.
fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [arn_, partition, service, region, account, resource] = parts.as_slice() else {
        return false;
    };
    let name = resource.strip_prefix("role/").unwrap_or_default();
    *arn_ == "arn"
        && partition.starts_with("aws")
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-')
        && *service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
        && !name.ends_with('/')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
}

fn is_aws_region(r: &str) -> bool {
    // partition-prefix, geography words, number: us-east-1, us-gov-west-1, cn-north-1, eusc-de-east-1
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[0].len() >= 2
        && parts[parts.len() - 1]
            .parse::<u8>()
            .is_ok_and(|n| (1..=20).contains(&n))
}

fn google(field: &str, g: GoogleFile) -> R<GoogleConfig> {
    if g.hosts.is_empty() {
        return Err(ConfigError::invalid(
            &format!("{field}.hosts"),
            "the list is empty",
            "list the registry hosts, e.g. [gcr.io, us-docker.pkg.dev]",
        ));
    }
    for (i, h) in g.hosts.iter().enumerate() {
        registry_host(&format!("{field}.hosts[{i}]"), h)?;
    }
    let keys: Vec<String> = g.hosts.iter().map(|h| registry_key(h)).collect();
    if let Some(dup) = duplicates(keys.iter().map(String::as_str)) {
        return Err(ConfigError::invalid(
            &format!("{field}.hosts"),
            &format!(
                "{dup:?} is listed twice (scheme, case, a trailing slash and Docker Hub's aliases name one registry)"
            ),
            "list each host once",
        ));
    }
    match &g.key_file {
        Some(path) => service_account_key(&format!("{field}.keyFile"), path)?,
        None => {
            if let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
                service_account_key("env GOOGLE_APPLICATION_CREDENTIALS", Path::new(&path))?;
            }
        }
    }
    Ok(GoogleConfig {
        hosts: g.hosts,
        key_file: g.key_file,
    })
}

/// gcp_auth gives up without falling through when the file is not a service-account key;
/// say so now, plainly, instead of at the first fetch.
fn service_account_key(field: &str, path: &Path) -> R<()> {
    let text = read_small_file(path).map_err(|problem| {
        ConfigError::invalid(
            field,
            &problem,
            "mount the service-account key file there, or fix the path",
        )
    })?;
    let kind = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string));
    match kind.as_deref() {
        Some("service_account") => Ok(()),
        Some(other) => Err(ConfigError::invalid(
            field,
            &format!(
                "{} holds a {other:?} credential, not a service-account key",
                path.display()
            ),
            "point it at a service-account key JSON (type \"service_account\"), or leave it unset to use GKE Workload Identity / gcloud",
        )),
        None => Err(ConfigError::invalid(
            field,
            &format!("{} is not a Google credentials JSON file", path.display()),
            "point it at a service-account key JSON (type \"service_account\")",
        )),
    }
}

fn static_(field: &str, s: StaticFile) -> R<StaticConfig> {
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
        return Ok(StaticConfig::DockerConfigJson(d));
    }
    let Some(server) = s.server else {
        return Err(ConfigError::invalid(
            &format!("{field}.server"),
            "missing",
            "set the registry, e.g. https://index.docker.io/v1/ or quay.io (or use dockerConfigJsonFile)",
        ));
    };
    registry_host(&format!("{field}.server"), &server)?;
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
    credential_value(&format!("{field}.username"), &username)?;
    credential_value(&format!("{field}.password"), &password)?;
    Ok(StaticConfig::Login {
        server,
        username,
        password,
        email: s.email,
    })
}

/// A username or password as it will be read at each fetch: present, not blank, small enough
/// for a Secret. Read once here so a bad value stops the start, not every cycle.
fn credential_value(field: &str, from: &ValueFrom) -> R<()> {
    let raw = zeroize::Zeroizing::new(match from {
        ValueFrom::Literal(v) => v.clone(),
        ValueFrom::File(p) => read_small_file(p)
            .map_err(|e| ConfigError::invalid(field, &e, "fix the path or the mount"))?,
        ValueFrom::Env(var) => std::env::var(var).unwrap_or_default(),
    });
    crate::providers::static_creds::clean_value(&raw)
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
) -> R<Option<ValueFrom>> {
    let given = [literal.is_some(), file.is_some(), env.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ConfigError::invalid(
            field,
            "more than one is set",
            "keep exactly one",
        ));
    }
    if let Some(path) = &file {
        regular_file(path).map_err(|problem| {
            ConfigError::invalid(
                field,
                &problem,
                "mount the file there (e.g. from a Secret) or fix the path",
            )
        })?;
    }
    if let Some(var) = &env
        && std::env::var_os(var).is_none()
    {
        return Err(ConfigError::invalid(
            field,
            &format!("environment variable {var} is not set"),
            "set it (e.g. from a Secret with env.valueFrom) or use the File form",
        ));
    }
    Ok(literal
        .map(ValueFrom::Literal)
        .or(file.map(ValueFrom::File))
        .or(env.map(ValueFrom::Env)))
}

/// Credential files are small; anything larger is not one (and `/dev/zero` must not hang us).
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;

/// The path names a readable regular file (following symlinks, as mounted Secrets are).
/// Checked before opening, so a FIFO or device never blocks or floods the start.
fn regular_file(path: &Path) -> Result<std::fs::File, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.is_dir() {
        return Err(format!("{} is a directory, not a file", path.display()));
    }
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} is {} bytes, more than a credential file holds ({MAX_FILE_BYTES})",
            path.display(),
            meta.len()
        ));
    }
    std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

pub(crate) fn read_small_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    regular_file(path)?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text)
}

/// Two sources of one secret must not yield one registry: a pull would meet two competing
/// credentials, and one `auths` key cannot hold both. Hosts known before any fetch are
/// checked: Google and static hosts, and ECR's when the account is configured.
fn one_source_per_host(field: &str, names: &[String], sources: &[SourceConfig]) -> R<()> {
    let mut owner: BTreeMap<String, &str> = BTreeMap::new();
    for name in names {
        let Some(src) = sources.iter().find(|s| &s.name == name) else {
            continue;
        };
        let hosts: Vec<String> = match &src.kind {
            SourceKind::Google(g) => g.hosts.clone(),
            SourceKind::Static(StaticConfig::Login { server, .. }) => vec![server.clone()],
            SourceKind::Static(StaticConfig::DockerConfigJson(_)) => vec![],
            SourceKind::Ecr(e) => e
                .account_id
                .iter()
                .map(|a| format!("{a}.dkr.ecr.{}.amazonaws.com", e.region))
                .collect(),
        };
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

fn registry_host(field: &str, h: &str) -> R<()> {
    // Docker Hub serves pulls from this host, but the kubelet matches Docker Hub images only
    // to docker.io, index.docker.io or https://index.docker.io/v1/: a secret keyed on it is
    // never used.
    if registry_key(h) == "docker.io" && h.to_ascii_lowercase().contains("registry-1.docker.io") {
        return Err(ConfigError::invalid(
            field,
            &format!("{h:?} is a host the kubelet never matches Docker Hub images to"),
            "use https://index.docker.io/v1/ (what kubectl writes) or docker.io",
        ));
    }
    let host = h
        .strip_prefix("https://")
        .or_else(|| h.strip_prefix("http://"))
        .unwrap_or(h);
    let host = host.split('/').next().unwrap_or_default();
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
        && !h.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            &format!("{h:?} is not a registry host"),
            "use a host such as gcr.io, quay.io or us-docker.pkg.dev",
        ))
    }
}

fn dns_label(field: &str, v: &str, what: &str) -> R<()> {
    if v.len() <= 63 && is_dns_label_body(v) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            &format!("{v:?} is not a valid {what}"),
            "use up to 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
        ))
    }
}

pub(super) fn label_value(field: &str, v: &str) -> R<()> {
    if is_label_value(v) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            &format!("{v:?} is not a valid label value"),
            "use up to 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit (the Helm release name fits)",
        ))
    }
}

pub(crate) fn dns_subdomain(field: &str, v: &str, what: &str) -> R<()> {
    if !v.is_empty() && v.len() <= 253 && v.split('.').all(is_dns_label_body) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            &format!("{v:?} is not a valid {what} (RFC 1123)"),
            "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// serde-saphyr reports only a line and column; every parse error still names the
    /// field path, what was found there and the fix, on one line.
    #[test]
    fn parse_errors_name_the_path_the_value_and_the_fix() {
        let cases: &[(&str, &str)] = &[
            (
                "registries: foo\n",
                "registries (line 1, column 13): expected a list, found \"foo\"",
            ),
            (
                "registries:\n  - name: 5\n    ecr: {region: us-east-1}\n",
                "registries[0].name (line 2, column 11): 5 is read as a number or boolean, not a string; fix: quote it: \"5\"",
            ),
            (
                "registries:\n  - name: a\n    google: {hosts: gcr.io}\n",
                "registries[0].google.hosts (line 3, column 21): expected a list, found \"gcr.io\"",
            ),
            (
                "registries:\n  - name: a\n    ecr: {region: true}\n",
                "registries[0].ecr.region (line 3, column 19): true is read as",
            ),
            (
                "registries:\n  - name: a\n    ecr: {region: us-east-1, accountId: 123456789012}\n",
                "registries[0].ecr.accountId (line 3, column 41)",
            ),
            (
                "secrets:\n  - name: s\n    adopt: maybe\n",
                "secrets[0].adopt (line 3, column 12): invalid boolean (found \"maybe\"); fix: use true or false",
            ),
            (
                "secrets:\n  - name: s\n    registries: [a, [b]]\n",
                "secrets[0].registries[1] (line 3, column 21): expected a single string, found a list",
            ),
            (
                "registries:\n  - name: a\n    ecr: {regoin: us-east-1}\n",
                "registries[0].ecr.regoin (line 3, column 11): unknown field `regoin`; fix: did you mean `region`?",
            ),
            (
                "registrys: []\n",
                "registrys (line 1, column 1): unknown field `registrys`; fix: did you mean `registries`?",
            ),
            (
                "namespaces:\n  include: team-*\n",
                "namespaces.include (line 2, column 12): expected a list",
            ),
            (
                "registries: [\n",
                "registries (line 1, column 13): unclosed bracket",
            ),
            (
                "- a\n- b\n",
                "the top level (line 1, column 1): expected a mapping, found a list",
            ),
            (
                "registries:\n  - name: a\n    ecr: null\n  - foo\n",
                "registries[1] (line 4, column 5): expected a mapping, found \"foo\"",
            ),
            (
                "registries:\n  - ecr: {region: us-east-1}\n",
                "registries[0] (line 2, column 5): missing field `name`; fix: add `name:`",
            ),
            (
                "registries:\n  - name: a\n    ecr: {region: us-east-1}\n    ecr: {region: us-east-2}\n",
                "registries[0].ecr (line 4, column 5): `ecr` appears twice",
            ),
            (
                "registries:\n  - name: b\n    static:\n      server: quay.io\n      username: x\n      password: y\n",
                "registries[0].static.password (line 6, column 7): unknown field `password`; fix: a password never sits in the config",
            ),
            ("  \n", "the file is empty; fix:"),
        ];
        for (yaml, want) in cases {
            let err = parse_text(yaml)
                .err()
                .unwrap_or_else(|| panic!("accepted: {yaml}"));
            assert!(err.contains(want), "{yaml:?}: want {want:?} in {err:?}");
            assert!(err.contains("; fix: "), "no fix in {err:?}");
            assert!(!err.contains('\n'), "not one line: {err:?}");
        }
    }

    #[test]
    fn credential_files_must_be_regular_readable_files() {
        let dir = std::env::temp_dir();
        for (path, want) in [
            (dir.to_str().unwrap(), "is a directory"),
            (
                "/nonexistent/regcred/pw",
                "cannot read /nonexistent/regcred/pw",
            ),
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
    fn role_arns() {
        for ok in [
            "arn:aws:iam::123456789012:role/pull",
            "arn:aws-us-gov:iam::123456789012:role/path/to/pull",
            "arn:aws-cn:iam::123456789012:role/a+b=c,d.e@f_g-h",
        ] {
            assert!(is_role_arn(ok), "{ok}");
        }
        for bad in [
            "arn:aws:iam::12345:role/pull",
            "arn:aws:iam::123456789012:user/pull",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam:us-east-1:123456789012:role/x",
            "arn:aws:sts::123456789012:role/x",
            "aws:iam::123456789012:role/x",
            "arn:aws:iam::123456789012:role/with space",
        ] {
            assert!(!is_role_arn(bad), "{bad}");
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
        assert!(registry_host("f", "https://index.docker.io/v1/").is_ok());
        assert!(registry_host("f", "docker.io").is_ok());
    }

    #[test]
    fn static_password_is_never_inline() {
        let yaml = "registries:\n  - name: hub\n    static: { server: quay.io, username: u, password: p }\nsecrets:\n  - name: s\n    registries: [hub]\n";
        let err = check(yaml).unwrap_err();
        assert!(err.contains("unknown field `password`"), "{err}");
        assert!(err.contains("passwordFile"), "{err}");
    }

    #[test]
    fn region_shapes() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "cn-north-1",
            "ap-southeast-5",
        ] {
            assert!(is_aws_region(ok), "{ok}");
        }
        for bad in ["us-east", "US-EAST-1", "useast1", "us--1", "us-east-0"] {
            assert!(!is_aws_region(bad), "{bad}");
        }
    }
}
