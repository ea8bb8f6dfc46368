//! Command-line flags, each also readable from an environment variable. Raw input only:
//! `config::Config::from_cli` turns it into the validated configuration.

use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "regcred-refresher",
    version,
    about = "Keeps Kubernetes image pull secrets for private registries valid",
    after_help = "Exit codes: 0 every target written or unchanged (with --fail-on=sources: every source read); 1 a source or namespace failed; 2 bad configuration."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// YAML configuration file (registries, secrets, namespaces, serviceAccounts).
    #[arg(long, env = "REGCRED_CONFIG", value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,

    /// Run one refresh cycle and exit (for CronJobs and CI); without it, run as a daemon.
    #[arg(long, env = "REGCRED_ONCE", value_parser = clap::builder::BoolishValueParser::new())]
    pub once: bool,

    /// none: apply; client: print the manifests, touch nothing; server: the API server
    /// validates and authorizes every write and persists nothing.
    #[arg(long, env = "REGCRED_DRY_RUN", value_enum, default_value_t = DryRun::None)]
    pub dry_run: DryRun,

    /// Report, per namespace, what an apply would change (never the secret values); writes nothing.
    #[arg(long, env = "REGCRED_DIFF", conflicts_with = "dry_run", value_parser = clap::builder::BoolishValueParser::new())]
    pub diff: bool,

    /// With --once: fetch every token and write every target, however fresh what is in
    /// place is (by default a run writes only where something changed or the credentials
    /// reached the renewal margin).
    #[arg(long, env = "REGCRED_FORCE", requires = "once", value_parser = clap::builder::BoolishValueParser::new())]
    pub force: bool,

    /// What makes a --once run exit 1: `any` failure, or only `sources` (a source failed, the
    /// cluster or its namespaces could not be read). With `sources` a problem on the tenants'
    /// side (a secret we do not manage, a missing or forbidden namespace) is logged and
    /// counted in the summary, and the run exits 0: an install hook or CronJob then fails only
    /// for what its owner can fix.
    #[arg(long, env = "REGCRED_FAIL_ON", value_enum, default_value_t = FailOn::Any)]
    pub fail_on: FailOn,

    #[command(flatten)]
    pub quick: QuickEcr,

    #[command(flatten)]
    pub tuning: Tuning,

    #[command(flatten)]
    pub daemon: Daemon,

    #[command(flatten)]
    pub logging: Logging,
}

/// The single-ECR-registry case, without a configuration file. Every flag conflicts with
/// `--config` itself: clap drops a `requires` on an argument that conflicts with one given, so
/// `--config f --secret-name x` would otherwise run the file's secret name in silence.
#[derive(Debug, Args, Default)]
pub struct QuickEcr {
    /// AWS region of the ECR registry (turns on flag-only configuration).
    #[arg(long, env = "REGCRED_ECR_REGION", conflicts_with = "config")]
    pub ecr_region: Option<String>,

    /// Account that owns the registry (default: the caller's own account).
    #[arg(
        long,
        env = "REGCRED_ECR_ACCOUNT_ID",
        requires = "ecr_region",
        conflicts_with = "config"
    )]
    pub ecr_account_id: Option<String>,

    /// IAM role to assume through STS before asking ECR for a token.
    #[arg(
        long,
        env = "REGCRED_ECR_ROLE_ARN",
        requires = "ecr_region",
        conflicts_with = "config"
    )]
    pub ecr_role_arn: Option<String>,

    /// Name of the image pull secret to write.
    #[arg(
        long,
        env = "REGCRED_SECRET_NAME",
        requires = "ecr_region",
        conflicts_with = "config"
    )]
    pub secret_name: Option<String>,

    /// Target namespaces: names and globs, comma-separated (default: `*`).
    #[arg(
        long,
        env = "REGCRED_NAMESPACES",
        value_delimiter = ',',
        requires = "ecr_region",
        conflicts_with = "config"
    )]
    pub namespaces: Vec<String>,

    /// Namespaces never targeted, names and globs (default: kube-system,kube-public,kube-node-lease).
    #[arg(
        long,
        env = "REGCRED_EXCLUDE_NAMESPACES",
        value_delimiter = ',',
        requires = "ecr_region",
        conflicts_with = "config"
    )]
    pub exclude_namespaces: Vec<String>,

    /// Only namespaces whose labels match this selector (`team in (a,b)`).
    #[arg(
        long,
        env = "REGCRED_NAMESPACE_SELECTOR",
        requires = "ecr_region",
        conflicts_with = "config"
    )]
    pub namespace_selector: Option<String>,

    /// ServiceAccounts to reference the secret from, comma-separated (e.g. `default`).
    #[arg(
        long,
        env = "REGCRED_SERVICE_ACCOUNTS",
        value_delimiter = ',',
        requires = "ecr_region",
        conflicts_with = "config"
    )]
    pub service_accounts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct Tuning {
    /// Namespaces written at the same time.
    #[arg(long, env = "REGCRED_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,

    /// Seconds one provider fetch may take before it counts as failed.
    #[arg(long, env = "REGCRED_PROVIDER_TIMEOUT", default_value_t = 30)]
    pub provider_timeout: u64,

    /// Name of this installation, written as the `regcred-refresher.io/instance` label: secrets
    /// of another instance are never overwritten, watched or pruned by this one.
    #[arg(
        long,
        env = "REGCRED_INSTANCE",
        default_value = "default",
        global = true
    )]
    pub instance: String,

    /// Refresh when this fraction of a credential's lifetime remains (0.25 of a 12 h ECR token:
    /// 3 h before expiry). Both modes: `--once` renews what reached it, the daemon times it.
    #[arg(long, env = "REGCRED_REFRESH_MARGIN", default_value_t = 0.25)]
    pub refresh_margin: f64,

    /// Field manager name for server-side apply.
    #[arg(
        long,
        env = "REGCRED_FIELD_MANAGER",
        default_value = "regcred-refresher"
    )]
    pub field_manager: String,
}

/// Daemon mode only (without --once).
#[derive(Debug, Args)]
pub struct Daemon {
    /// Refresh every source on this schedule (5-field cron, UTC, as in a Kubernetes CronJob),
    /// and earlier when a credential nears its expiry.
    #[arg(long, env = "REGCRED_SCHEDULE", default_value = "0 * * * *")]
    pub schedule: String,

    /// Floor, in seconds, between two refreshes of one source (guards against clock skew and
    /// already-expired tokens).
    #[arg(long, env = "REGCRED_MIN_REFRESH_INTERVAL", default_value_t = 60)]
    pub min_refresh_interval: u64,

    /// Cap, in seconds, of the retry backoff after a failed fetch.
    #[arg(long, env = "REGCRED_MAX_BACKOFF", default_value_t = 300)]
    pub max_backoff: u64,

    /// Address of the admin server: /healthz, /readyz, /metrics. The default `[::]:8080`
    /// answers on IPv4 and IPv6 (IPv4 only where the pod has no IPv6).
    #[arg(long, env = "REGCRED_ADMIN_ADDR", default_value = "[::]:8080")]
    pub admin_addr: std::net::SocketAddr,

    /// Elect a leader through a coordination.k8s.io Lease, so several replicas are safe.
    #[arg(long, env = "REGCRED_LEADER_ELECTION", value_parser = clap::builder::BoolishValueParser::new())]
    pub leader_election: bool,

    /// Name of the Lease used for leader election.
    #[arg(long, env = "REGCRED_LEASE_NAME", default_value = "regcred-refresher")]
    pub lease_name: String,

    /// Namespace of the Lease (default: POD_NAMESPACE, else the in-cluster namespace).
    #[arg(long, env = "REGCRED_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, env = "REGCRED_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration: u64,

    /// Delete the secrets we manage (and our ServiceAccount references) from namespaces that
    /// stop matching, and secrets removed from the configuration. Never anything else.
    #[arg(long, env = "REGCRED_PRUNE", value_parser = clap::builder::BoolishValueParser::new())]
    pub prune: bool,

    /// With --prune: names no longer in the configuration whose secrets (ours only) are pruned
    /// too, comma-separated. Read by name, so RBAC can stay restricted to names.
    #[arg(long, env = "REGCRED_PRUNE_SECRET_NAMES", value_delimiter = ',')]
    pub prune_secret_names: Vec<String>,

    /// Record Kubernetes Events for failures users should see.
    #[arg(long, env = "REGCRED_EVENTS", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub events: bool,

    /// Seconds in-flight writes may take to finish on SIGTERM.
    #[arg(long, env = "REGCRED_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u64,
}

#[derive(Debug, Args)]
pub struct Logging {
    #[arg(long, env = "REGCRED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax (`info`, `regcred_refresher=debug`).
    #[arg(long, env = "REGCRED_LOG", default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    None,
    Client,
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// For every target namespace and configured secret, read from the cluster: ours or not,
    /// its sources, when its credentials expire and are due for renewal. Fetches nothing,
    /// writes nothing. Exit 0 when every secret is usable by pulls, 1 otherwise.
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Any,
    Sources,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn quick_flags_conflict_with_a_config_file() {
        let err = Cli::try_parse_from(["x", "--config", "c.yaml", "--ecr-region", "us-east-1"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn every_quick_subflag_conflicts_with_a_config_file() {
        for args in [
            &["--namespaces", "a"][..],
            &["--secret-name", "s"],
            &["--ecr-role-arn", "arn:aws:iam::123456789012:role/r"],
            &["--ecr-account-id", "123456789012"],
            &["--exclude-namespaces", "b"],
            &["--namespace-selector", "a=b"],
            &["--service-accounts", "default"],
        ] {
            let argv = ["x", "--once", "--config", "c.yaml"].iter().chain(args);
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{args:?}"
            );
        }
    }

    #[test]
    fn quick_subflags_need_a_region() {
        let err =
            Cli::try_parse_from(["x", "--ecr-role-arn", "arn:aws:iam::1:role/r"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }
}
