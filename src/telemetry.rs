//! Logging setup: `tracing` to stderr, as text or JSON. Stdout is kept for the manifests of
//! `--dry-run=client` and the `--diff` report.

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::cli::{LogFormat, Logging};

/// Libraries that log whole HTTP bodies or SDK outputs (tokens included) at trace level.
/// Their trace output is dropped whatever the filter asks for: no token reaches a log.
const TRACE_UNSAFE: &[&str] = &[
    "aws_smithy_",
    "aws_sdk_",
    "aws_config",
    "aws_runtime",
    "gcp_auth",
    "hyper",
    "h2",
    "kube_client",
    "tower",
];

fn secret_safe(meta: &Metadata<'_>) -> bool {
    *meta.level() != Level::TRACE || !TRACE_UNSAFE.iter().any(|p| meta.target().starts_with(p))
}

pub fn env_filter(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(level).map_err(|e| {
        format!(
            "--log-level: {level:?} is not a valid filter ({e}); fix: use e.g. info or regcred_refresher=debug"
        )
    })
}

pub fn init(logging: &Logging) -> Result<(), String> {
    let filter = env_filter(&logging.log_level)?.and(filter_fn(secret_safe));
    let layer = match logging.log_format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_filter_is_a_clear_error() {
        let e = env_filter("info,[=").unwrap_err();
        assert!(e.contains("--log-level"), "{e}");
    }
}
