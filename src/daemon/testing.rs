//! A fake API server for the daemon's world-free tests: a tower-test mock behind a real
//! `kube::Client`, answering each request from a closure and keeping what it was asked, so a
//! test asserts method, path, query and body as the API server would have received them.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use k8s_openapi::api::core::v1::Namespace;
use kube::client::Body;
use kube::core::{ObjectMeta, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::DaemonState;
use super::watch::{NamespaceMeta, SecretMeta};
use crate::config::Config;

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The query string, decoded into pairs.
    pub query: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// "METHOD /path", what most assertions compare.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

pub type Log = Arc<Mutex<Vec<Seen>>>;

/// A client whose every request is answered by `answer` (status, JSON body).
pub fn server(answer: impl Fn(&Seen) -> (u16, Value) + Send + 'static) -> (kube::Client, Log) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log = Log::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let s = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, reply) = answer(&s);
            seen.lock().unwrap().push(s);
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            respond.send_response(response);
        }
    });
    (kube::Client::new(service, "default"), log)
}

/// A client nothing should be asked of: every request is kept and refused, and the test
/// asserts the log is empty (a panic here would only end the server's task).
pub fn no_server() -> (kube::Client, Log) {
    server(|_| status(500, "InternalError"))
}

/// The API server's answer for an error.
pub fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": reason, "message": format!("{reason} (test)"), "code": code}),
    )
}

pub fn requests(log: &Log) -> Vec<Seen> {
    log.lock().unwrap().clone()
}

/// The daemon's state over `client`, without sources (the tests store credentials).
pub fn state(config: Config, client: kube::Client) -> Arc<DaemonState> {
    Arc::new(DaemonState::with_sources(
        config,
        client.clone(),
        client,
        vec![],
    ))
}

pub fn namespace(name: &str, labels: &[(&str, &str)]) -> NamespaceMeta {
    PartialObjectMeta::<Namespace> {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn secret_meta(namespace: &str, name: &str, uid: &str) -> SecretMeta {
    SecretMeta {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A store holding `objects`, listed (ready), as a watch would leave it.
pub fn listed<K>(objects: Vec<K>) -> Store<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}
