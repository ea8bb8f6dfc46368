use std::process::ExitCode;

use clap::Parser;
use regcred_refresher::cli::{Cli, Command, FailOn};
use regcred_refresher::config::Config;
use regcred_refresher::once::OnceRun;
use regcred_refresher::{daemon, error_chain, telemetry};

/// Exit codes (also in the README): 0 every target written or unchanged, 1 a source or
/// namespace failed (or the cluster was unreachable), 2 bad configuration.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init(&cli.logging) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let config = match Config::from_cli(&cli) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let status = cli.command == Some(Command::Status);
    match run(config, status).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            // Not `{e:#}`: causes repeat their sources, and parse errors quote their input.
            tracing::error!("{}", error_chain::one_line(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

async fn run(config: Config, status: bool) -> anyhow::Result<bool> {
    use regcred_refresher::kube_client::{REQUEST_TIMEOUT, client};
    let requests = client(Some(REQUEST_TIMEOUT)).await?;
    if status {
        return Ok(regcred_refresher::status::print(&config, &requests).await?);
    }
    let mode = config.write_mode;
    if !config.once {
        let state = daemon::DaemonState::new(config, requests, client(None).await?).await;
        daemon::run(state, shutdown_signal()).await?;
        return Ok(true);
    }
    // SIGTERM during a run (a CronJob's pod evicted, a deadline reached): no new namespace is
    // started, the writes under way finish, the partial summary is printed, and the run fails.
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            tracing::warn!("stop requested: finishing the writes under way");
            stop.cancel();
        }
    });
    let fail_on = config.fail_on;
    let refresher = OnceRun::new(config, requests).await.stopped_by(stop);
    let report = refresher.run_once().await;
    report.print_outputs(mode);
    report.log_summary(mode, true);
    Ok(match fail_on {
        FailOn::Any => report.success(),
        FailOn::Sources => report.sources_ok(),
    })
}

/// SIGTERM (Kubernetes) or SIGINT (a terminal).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
