//! Soak (`make soak`, ignored in `make test`): the daemon refreshing every second against the
//! world for `REGCRED_SOAK_SECS` (default 600 s), with two sources that both force a refresh
//! at the 1 s floor: ECR straight from moto (its tokens arrive expired) and Google through a
//! proxy that shortens each token to 1 s, so every cycle also rewrites a secret in each
//! namespace. Samples RSS, threads, open fds, sockets and tokio tasks of the process, and
//! asserts they stay flat after warm-up.

use std::time::{Duration, Instant};

use serde_json::json;

use super::common::*;
use super::faults_proxy::FaultProxy;

#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: u64,
    rss_kib: u64,
    threads: u64,
    fds: u64,
    sockets: u64,
    tasks: u64,
}

async fn sample(d: &DaemonProc, started: Instant) -> Sample {
    let pid = d.child.id().expect("daemon runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let (mut fds, mut sockets) = (0, 0);
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        fds += 1;
        if std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")) {
            sockets += 1;
        }
    }
    Sample {
        secs: started.elapsed().as_secs(),
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
        fds,
        sockets,
        tasks: d.metric("regcred_runtime_tasks").await.unwrap_or(0.0) as u64,
    }
}

#[tokio::test]
#[ignore = "10 minutes: run with `make soak`"]
async fn soak_refreshing_every_second_stays_flat() {
    let secs: u64 = std::env::var("REGCRED_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let s = Scratch::new().await;
    let p = unique("soak");
    let mut namespaces = Vec::new();
    for _ in 0..3 {
        let ns = s.namespace(&p, &[], &[]).await;
        default_service_account(&s.client, &ns).await; // kube-controller-manager's
        namespaces.push(ns);
    }
    let proxy = FaultProxy::http(
        &env("REGCRED_TEST_GOOGLE_FIXTURE_URL"),
        json!([{"method": "POST", "path": "^/token", "json_set": [[["expires_in"], 1]]}]),
    )
    .await;
    let keyfile = google_key_via(&s, &proxy.url()).await;
    let cfg = s.file(
        "soak.yaml",
        &format!(
            "registries:\n  - name: ecr\n    ecr: {{ region: us-east-1 }}\n  - name: gar\n    google: {{ hosts: [gcr.io], keyFile: {} }}\nsecrets:\n  - name: regcred-ecr\n    registries: [ecr]\n  - name: regcred-gar\n    registries: [gar]\nnamespaces:\n  include: [\"{p}-*\"]\nserviceAccounts: [default]\n",
            keyfile.display()
        ),
    );
    let d = DaemonProc::start(
        &s,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--min-refresh-interval",
            "1",
            "--log-level",
            "warn",
        ],
        &[],
    )
    .await;
    let started = Instant::now();
    let series =
        |src: &str| format!("regcred_refreshes_total{{source=\"{src}\",result=\"success\"}}");
    let mut samples = Vec::new();
    // Warm-up: connection pools, the watches' first lists, lazy statics.
    tokio::time::sleep(Duration::from_secs(secs.min(600) / 10)).await;
    let warm = sample(&d, started).await;
    samples.push(warm);
    eprintln!("soak sample {warm:?}");
    let step = Duration::from_secs((secs / 20).max(1));
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(step).await;
        let x = sample(&d, started).await;
        eprintln!("soak sample {x:?}");
        samples.push(x);
    }
    let end = *samples.last().unwrap();
    let ecr = d.metric(&series("ecr")).await.unwrap_or(0.0);
    let gar = d.metric(&series("gar")).await.unwrap_or(0.0);
    let cycles = d
        .metric("regcred_cycle_duration_seconds_count")
        .await
        .unwrap_or(0.0);
    let updated = d
        .metric("regcred_secret_writes_total{result=\"updated\"}")
        .await
        .unwrap_or(0.0);
    let failed = d
        .metric("regcred_secret_writes_total{result=\"failed\"}")
        .await
        .unwrap_or(0.0);
    eprintln!(
        "soak result: {secs}s (last sample at {}s), ecr fetches {ecr}, gar fetches {gar}, full cycles {cycles}, secret updates {updated}, failed writes {failed}, start {warm:?}, end {end:?}",
        end.secs
    );
    let min_fetches = secs as f64 * 0.5;
    assert!(
        ecr >= min_fetches && gar >= min_fetches,
        "did not refresh every second: ecr {ecr}, gar {gar}"
    );
    assert_eq!(failed, 0.0, "{}", d.logs());
    for ns in &namespaces {
        assert!(s.secret(ns, "regcred-gar").await.is_some());
        assert!(s.secret(ns, "regcred-ecr").await.is_some());
    }
    // Flat: memory within 25 % (or 4 MiB) of the warm figure, everything else within a few.
    let peak_rss = samples.iter().map(|x| x.rss_kib).max().unwrap();
    assert!(
        end.rss_kib <= warm.rss_kib + (warm.rss_kib / 4).max(4096),
        "RSS grew: {samples:#?}"
    );
    assert!(peak_rss <= warm.rss_kib * 2, "RSS spiked: {samples:#?}");
    assert!(
        end.threads <= warm.threads + 4,
        "threads grew: {samples:#?}"
    );
    assert!(end.fds <= warm.fds + 6, "fds grew: {samples:#?}");
    assert!(
        end.sockets <= warm.sockets + 6,
        "sockets grew: {samples:#?}"
    );
    assert!(end.tasks <= warm.tasks + 6, "tasks grew: {samples:#?}");
}
