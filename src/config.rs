//! The configuration: a YAML file (or the quick ECR flags) turned into one validated
//! [`Config`], built once at start. Nothing downstream re-validates; every check that can be
//! made before touching the cluster is made here, so bad input exits 2 with a message that
//! names the field, the value and the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{Cli, DryRun, QuickEcr};
use crate::namespaces::NamespaceFilter;

mod daemon;
mod formats;
mod sections;
mod yaml_error;

pub use crate::config_error::ConfigError;
pub use crate::input::ValueFrom;
use crate::input::read_small_file;
use crate::names;
pub use crate::secret_format::{ArgoCd, SecretFormat};
use crate::sources::RegistryFile;
pub use crate::sources::acr::{AcrConfig, AzureCredential};
pub use crate::sources::aws::AssumeRole;
pub use crate::sources::ecr::EcrConfig;
use crate::sources::ecr::EcrFile;
pub use crate::sources::ecr_public::EcrPublicConfig;
pub use crate::sources::google::GoogleConfig;
pub use crate::sources::static_creds::StaticConfig;
pub use crate::sources::{SourceConfig, SourceKind};

/// What one run does with the secrets it computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Apply,
    /// Print the manifests; no request that changes anything.
    DryRunClient,
    /// Send every write with `dryRun=All`.
    DryRunServer,
    /// Print what would change per namespace; no writes.
    Diff,
}

#[derive(Debug)]
pub struct Config {
    pub sources: Vec<SourceConfig>,
    pub secrets: Vec<SecretConfig>,
    pub namespaces: NamespaceFilter,
    pub service_accounts: Vec<String>,
    pub once: bool,
    /// `--force`: write every target whatever its freshness.
    pub force: bool,
    pub write_mode: WriteMode,
    pub concurrency: usize,
    /// Fraction of a credential's lifetime left at which it is renewed (both modes).
    pub refresh_margin: f64,
    pub provider_timeout: Duration,
    pub field_manager: String,
    /// Value of the instance label on everything we write.
    pub instance: String,
    /// What makes a `--once` run fail.
    pub fail_on: crate::cli::FailOn,
    pub daemon: DaemonConfig,
}

/// Daemon-only settings, validated even in `--once` runs so a bad value fails at deploy time.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub policy: crate::schedule::Policy,
    pub admin_addr: std::net::SocketAddr,
    pub leader: Option<LeaderConfig>,
    pub prune: bool,
    /// Names no longer configured whose managed secrets are pruned too.
    pub prune_also: Vec<String>,
    pub events: bool,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub lease_name: String,
    pub lease_namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
}

#[derive(Debug, Clone)]
pub struct SecretConfig {
    pub name: String,
    pub sources: Vec<String>,
    /// Take over a same-named secret that we did not create.
    pub adopt: bool,
    /// The shape it is written in, for its consumer.
    pub format: SecretFormat,
}

// ---- the file format ----

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct FileConfig {
    #[serde(default)]
    registries: Vec<RegistryFile>,
    #[serde(default)]
    secrets: Vec<SecretFile>,
    #[serde(default)]
    namespaces: NamespacesFile,
    #[serde(default)]
    service_accounts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SecretFile {
    name: String,
    #[serde(default)]
    registries: Vec<String>,
    #[serde(default)]
    adopt: bool,
    /// `dockerconfigjson` (default), `basic-auth`, `argocd-repository`, `argocd-repo-creds`.
    format: Option<String>,
    argocd: Option<ArgoCdFile>,
}

/// `secrets[].argocd`: the Argo CD fields of an `argocd-*` format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ArgoCdFile {
    url: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    project: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NamespacesFile {
    #[serde(default = "default_include")]
    include: Vec<String>,
    #[serde(default = "default_exclude")]
    exclude: Vec<String>,
    selector: Option<String>,
}

impl Default for NamespacesFile {
    fn default() -> Self {
        Self {
            include: default_include(),
            exclude: default_exclude(),
            selector: None,
        }
    }
}

fn default_include() -> Vec<String> {
    vec!["*".into()]
}

pub const DEFAULT_EXCLUDE: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

fn default_exclude() -> Vec<String> {
    DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect()
}

impl Config {
    /// Builds the validated configuration from the flags and, if given, the file.
    pub fn from_cli(cli: &Cli) -> Result<Self, ConfigError> {
        let file = match (&cli.config, &cli.quick.ecr_region) {
            (Some(path), _) => read_file(path)?,
            (None, Some(_)) => from_quick_flags(&cli.quick),
            (None, None) => {
                return Err(ConfigError::invalid(
                    "--config",
                    "no configuration given",
                    "pass --config FILE (or REGCRED_CONFIG), or --ecr-region for a single ECR registry",
                ));
            }
        };
        let write_mode = match (cli.dry_run, cli.diff) {
            (_, true) => WriteMode::Diff,
            (DryRun::None, false) => WriteMode::Apply,
            (DryRun::Client, false) => WriteMode::DryRunClient,
            (DryRun::Server, false) => WriteMode::DryRunServer,
        };
        if !cli.once && write_mode != WriteMode::Apply {
            let given = match write_mode {
                WriteMode::DryRunClient => "--dry-run=client",
                WriteMode::DryRunServer => "--dry-run=server",
                _ => "--diff",
            };
            return Err(ConfigError::invalid(
                given,
                "is given without --once, but a dry run or diff is a single cycle, not a daemon",
                "add --once",
            ));
        }
        let t = &cli.tuning;
        if !(1..=1000).contains(&t.concurrency) {
            return Err(ConfigError::invalid(
                "--concurrency",
                &format!("{} is out of range", t.concurrency),
                "use a number from 1 to 1000",
            ));
        }
        if !(1..=3600).contains(&t.provider_timeout) {
            return Err(ConfigError::invalid(
                "--provider-timeout",
                &format!("{} is out of range", t.provider_timeout),
                "use a number of seconds from 1 to 3600",
            ));
        }
        names::label_value("--instance", &t.instance)?;
        if t.field_manager.is_empty()
            || t.field_manager.len() > 128
            || t.field_manager.chars().any(|c| c.is_control())
        {
            return Err(ConfigError::invalid(
                "--field-manager",
                &format!("{:?} is not a valid field manager", t.field_manager),
                "use 1 to 128 printable characters (default regcred-refresher)",
            ));
        }
        if !(t.refresh_margin > 0.0 && t.refresh_margin < 1.0) {
            return Err(ConfigError::invalid(
                "--refresh-margin",
                &format!("{} is not a fraction between 0 and 1", t.refresh_margin),
                "use e.g. 0.25 to refresh with a quarter of the lifetime left",
            ));
        }
        let daemon = daemon::settings(&cli.daemon, t.refresh_margin)?;
        let quick = cli.config.is_none();
        let v =
            sections::validate(file).map_err(|e| if quick { quick_flag_field(e) } else { e })?;
        Ok(Config {
            sources: v.sources,
            secrets: v.secrets,
            namespaces: v.namespaces,
            service_accounts: v.service_accounts,
            once: cli.once,
            force: cli.force,
            write_mode,
            concurrency: t.concurrency,
            refresh_margin: t.refresh_margin,
            provider_timeout: Duration::from_secs(t.provider_timeout),
            field_manager: t.field_manager.clone(),
            instance: t.instance.clone(),
            fail_on: cli.fail_on,
            daemon,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = read_small_file(path).map_err(|problem| {
        ConfigError::invalid(
            "--config",
            // The one path quoted: it names the configuration, given on the command line.
            &format!("{}: {problem}", path.display()),
            "pass the path of a readable YAML file (or set REGCRED_CONFIG)",
        )
    })?;
    parse_text(&text).map_err(|message| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    })
}

/// With the quick ECR flags, errors name the flag the value came from, not the file field
/// that the flags are turned into.
fn quick_flag_field(e: ConfigError) -> ConfigError {
    const FLAGS: &[(&str, &str)] = &[
        ("registries[0].ecr.region", "--ecr-region"),
        ("registries[0].ecr.accountId", "--ecr-account-id"),
        ("registries[0].ecr.roleArn", "--ecr-role-arn"),
        ("secrets[0].name", "--secret-name"),
        ("namespaces.include", "--namespaces"),
        ("namespaces.exclude", "--exclude-namespaces"),
        ("namespaces.selector", "--namespace-selector"),
        ("serviceAccounts", "--service-accounts"),
    ];
    match e {
        ConfigError::Invalid {
            field,
            problem,
            fix,
        } => {
            let field = FLAGS
                .iter()
                .find_map(|(file, flag)| {
                    field.strip_prefix(file).map(|rest| format!("{flag}{rest}"))
                })
                .unwrap_or(field);
            ConfigError::Invalid {
                field,
                problem,
                fix,
            }
        }
        other => other,
    }
}

pub(crate) fn parse_text(text: &str) -> Result<FileConfig, String> {
    if text.trim().is_empty() {
        return Err(
            "the file is empty; fix: define at least `registries` and `secrets` (see the README's Configuration section)"
                .into(),
        );
    }
    let mut options = serde_saphyr::Options::default();
    // A string field takes only strings: `name: 5` or `username: true` is an error that asks
    // for quotes, rather than a value silently changed by YAML's number and boolean typing.
    options.no_schema = true;
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<FileConfig>(text, options)
        .map_err(|e| yaml_error::describe(text, &e))
}

/// Parses and validates a configuration text as `--config` would, without the flags (for
/// fuzzing and tools). Static credential files and environment variables it names are checked
/// for presence, as at start.
pub fn parse_and_validate_str(text: &str) -> Result<(), ConfigError> {
    let file = parse_text(text).map_err(|message| ConfigError::Parse {
        path: PathBuf::from("<text>"),
        message,
    })?;
    sections::validate(file).map(|_| ())
}

/// The closest of the allowed field names, for a did-you-mean on an unknown field.
pub(crate) fn closest_field<'a>(
    unknown: &str,
    allowed: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = unknown.to_ascii_lowercase();
    allowed
        .into_iter()
        .map(|f| (strsim::jaro_winkler(&lower, &f.to_ascii_lowercase()), f))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, f)| f)
}

fn from_quick_flags(q: &QuickEcr) -> FileConfig {
    let mut namespaces = NamespacesFile::default();
    if !q.namespaces.is_empty() {
        namespaces.include = q.namespaces.clone();
    }
    if !q.exclude_namespaces.is_empty() {
        namespaces.exclude = q.exclude_namespaces.clone();
    }
    namespaces.selector = q.namespace_selector.clone();
    FileConfig {
        registries: vec![RegistryFile {
            name: "ecr".into(),
            ecr: Some(EcrFile {
                region: q.ecr_region.clone().unwrap_or_default(),
                account_id: q.ecr_account_id.clone(),
                role_arn: q.ecr_role_arn.clone(),
                external_id: None,
                session_name: None,
            }),
            ..Default::default()
        }],
        secrets: vec![SecretFile {
            name: q.secret_name.clone().unwrap_or_else(|| "regcred".into()),
            registries: vec!["ecr".into()],
            adopt: false,
            format: None,
            argocd: None,
        }],
        namespaces,
        service_accounts: q.service_accounts.clone(),
    }
}

/// Names used for did-you-mean hints on references between sections.
pub(crate) fn closest<'a>(
    wanted: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(wanted, k), k))
        .filter(|(s, _)| *s > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}
