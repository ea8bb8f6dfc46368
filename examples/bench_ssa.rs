//! Baseline B of the benchmark (`make bench`): the raw-client limit. Server-side-applies one
//! identical `kubernetes.io/dockerconfigjson` secret into each of N namespaces at a given
//! concurrency and does nothing else: no token call, no namespace list, no read-before-write.
//!
//! usage: bench_ssa <namespace-prefix> <count> <concurrency> <secret-name> <dockerconfigjson-file>

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, prefix, count, concurrency, name, payload] = args.as_slice() else {
        anyhow::bail!(
            "usage: bench_ssa <prefix> <count> <concurrency> <secret-name> <dockerconfigjson-file>"
        );
    };
    let (count, concurrency): (usize, usize) = (count.parse()?, concurrency.parse()?);
    let payload = std::fs::read(payload)?;
    let client = kube::Client::try_default().await?;
    let pp = PatchParams::apply("bench-ssa").force();
    let started = std::time::Instant::now();
    let failures = futures::stream::iter(0..count)
        .map(|i| {
            let ns = format!("{prefix}{i}");
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    ..Default::default()
                },
                type_: Some("kubernetes.io/dockerconfigjson".into()),
                data: Some([(".dockerconfigjson".to_string(), ByteString(payload.clone()))].into()),
                ..Default::default()
            };
            let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let pp = &pp;
            async move {
                api.patch(
                    &secret.metadata.name.clone().unwrap_or_default(),
                    pp,
                    &Patch::Apply(&secret),
                )
                .await
                .is_err()
            }
        })
        .buffer_unordered(concurrency)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    println!(
        "{{\"seconds\": {:.4}, \"failures\": {failures}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
