//! Logging setup: `tracing` to stderr, as text or JSON. Stdout is kept for the manifests of
//! `--dry-run=client` and the `--diff` report.

use tracing_subscriber::EnvFilter;

use crate::cli::{LogFormat, Logging};

pub fn init(logging: &Logging) -> Result<(), String> {
    let filter = EnvFilter::try_new(&logging.log_level).map_err(|e| {
        format!(
            "--log-level: {:?} is not a valid filter ({e}); fix: use e.g. info or regcred_refresher=debug",
            logging.log_level
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match logging.log_format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}
