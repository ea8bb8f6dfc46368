//! The shapes a secret of ours can take, for the consumers that read registry credentials:
//! pods (`kubernetes.io/dockerconfigjson`, the default), Argo CD (a `repository` or a
//! `repo-creds` credential template, labelled `argocd.argoproj.io/secret-type`), and tools
//! that read `username`/`password` (`kubernetes.io/basic-auth`).
//!
//! Every shape is made from the same rendered `.dockerconfigjson` and read back into the same
//! `auths` view, so deciding whether to write, pinning a user's values, ownership, expiry and
//! the renewal margin work the same for all. The one-credential shapes hold exactly one
//! registry host (the configuration refuses more at start); their view keys it [`SINGLE`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::dockerconfig;

/// The label Argo CD reads to find its repository and credential-template secrets.
pub const ARGOCD_LABEL: &str = "argocd.argoproj.io/secret-type";

/// The key of the one entry of a one-credential shape's view.
pub const SINGLE: &str = "-";

const DOCKER_TYPE: &str = "kubernetes.io/dockerconfigjson";
const DOCKER_KEY: &str = ".dockerconfigjson";
const BASIC_AUTH_TYPE: &str = "kubernetes.io/basic-auth";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SecretFormat {
    /// What `kubectl create secret docker-registry` writes; pods' `imagePullSecrets`, Flux.
    #[default]
    DockerConfigJson,
    /// `kubernetes.io/basic-auth`: `username` and `password`.
    BasicAuth,
    /// An Argo CD repository (`repository`) or credential template (`repo-creds`).
    ArgoCd(ArgoCd),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgoCd {
    /// A credential template (`repo-creds`, matched by URL prefix) instead of one repository.
    pub template: bool,
    /// The repository URL (or prefix); `None`: the registry host the credential is for.
    pub url: Option<String>,
    /// Argo CD's native OCI repositories (`type: oci`, `oci://` URLs) rather than Helm charts
    /// in an OCI registry (`type: helm`, `enableOCI: "true"`).
    pub oci: bool,
    pub name: Option<String>,
    pub project: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "the {format} format holds one registry's credentials, and {found} were rendered; fix: give the secret exactly one source with one registry host"
    )]
    NotOne { format: &'static str, found: usize },
}

impl SecretFormat {
    /// The format's name as the configuration writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::DockerConfigJson => "dockerconfigjson",
            Self::BasicAuth => "basic-auth",
            Self::ArgoCd(a) if a.template => "argocd-repo-creds",
            Self::ArgoCd(_) => "argocd-repository",
        }
    }

    pub fn secret_type(&self) -> &'static str {
        match self {
            Self::DockerConfigJson => DOCKER_TYPE,
            Self::BasicAuth => BASIC_AUTH_TYPE,
            Self::ArgoCd(_) => "Opaque",
        }
    }

    /// Labels the consumer needs beside ours.
    pub fn labels(&self) -> Vec<(String, String)> {
        match self {
            Self::ArgoCd(a) => vec![(
                ARGOCD_LABEL.to_string(),
                if a.template {
                    "repo-creds"
                } else {
                    "repository"
                }
                .to_string(),
            )],
            _ => vec![],
        }
    }

    /// The recipe words of the fingerprint; empty for the default, so the fingerprints of
    /// secrets written before formats existed stay as they were.
    pub fn recipe(&self) -> String {
        match self {
            Self::DockerConfigJson => String::new(),
            Self::BasicAuth => "format=basic-auth".into(),
            Self::ArgoCd(a) => format!(
                "format={} url={} oci={} name={} project={}",
                self.name(),
                a.url.as_deref().unwrap_or("-"),
                a.oci,
                a.name.as_deref().unwrap_or("-"),
                a.project.as_deref().unwrap_or("-"),
            ),
        }
    }

    /// The secret's `data` from the rendered `.dockerconfigjson`.
    pub fn data(&self, doc: &[u8]) -> Result<BTreeMap<String, ByteString>, FormatError> {
        if *self == Self::DockerConfigJson {
            return Ok([(DOCKER_KEY.to_string(), ByteString(doc.to_vec()))].into());
        }
        let auths = dockerconfig::auths_of(doc);
        let [(host, entry)] =
            <[_; 1]>::try_from(auths.into_iter().collect::<Vec<_>>()).map_err(|v| {
                FormatError::NotOne {
                    format: self.name(),
                    found: v.len(),
                }
            })?;
        let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let mut data: BTreeMap<String, String> = [
            ("username".to_string(), field("username").to_string()),
            ("password".to_string(), field("password").to_string()),
        ]
        .into();
        if let Self::ArgoCd(a) = self {
            let url = a.url.clone().unwrap_or_else(|| {
                let host = host.trim_start_matches("https://").trim_end_matches('/');
                if a.oci {
                    format!("oci://{host}")
                } else {
                    host.to_string()
                }
            });
            data.insert("url".into(), url);
            if a.oci {
                data.insert("type".into(), "oci".into());
            } else {
                data.insert("type".into(), "helm".into());
                data.insert("enableOCI".into(), "true".into());
            }
            for (k, v) in [("name", &a.name), ("project", &a.project)] {
                if let Some(v) = v {
                    data.insert(k.into(), v.clone());
                }
            }
        }
        Ok(data
            .into_iter()
            .map(|(k, v)| (k, ByteString(v.into_bytes())))
            .collect())
    }

    /// The `auths` view of a live secret's data (what deciding on a write reads): the
    /// document's for the default, else one entry [`SINGLE`] shaped as our render writes it,
    /// so its digest matches a pinned value's.
    pub fn view(&self, data: &BTreeMap<String, ByteString>) -> BTreeMap<String, serde_json::Value> {
        if *self == Self::DockerConfigJson {
            return dockerconfig::auths_of(
                data.get(DOCKER_KEY).map_or(&[][..], |b| b.0.as_slice()),
            );
        }
        single_view(data).into_iter().collect()
    }

    /// The view of what we would write: the rendered document's, re-keyed for one-credential
    /// shapes.
    pub fn desired_view(&self, doc: &[u8]) -> BTreeMap<String, serde_json::Value> {
        rekey(self, dockerconfig::auths_of(doc))
    }

    /// A user's values as compared in every namespace, re-keyed like the view.
    pub fn pinned(
        &self,
        auths: BTreeMap<String, serde_json::Value>,
    ) -> BTreeMap<String, serde_json::Value> {
        rekey(self, auths)
    }

    /// What a decision keeps of a live secret of this shape: its view, reduced to usernames
    /// and digests, in place of the values (held for every namespace at once otherwise).
    pub fn reduce_live(secret: &mut Secret) {
        let Some(data) = secret.data.as_mut() else {
            return;
        };
        if secret.type_.as_deref() == Some(DOCKER_TYPE) || data.contains_key(DOCKER_KEY) {
            data.retain(|k, _| k == DOCKER_KEY);
            if let Some(doc) = data.get_mut(DOCKER_KEY) {
                doc.0 = dockerconfig::reduce(&doc.0);
            }
            return;
        }
        let view = single_view(data);
        data.clear();
        if let Some((_, entry)) = view {
            let doc = serde_json::json!({ "auths": { SINGLE: entry } });
            let bytes = serde_json::to_vec(&doc).unwrap_or_default();
            data.insert(
                DOCKER_KEY.to_string(),
                ByteString(dockerconfig::reduce(&bytes)),
            );
        }
    }
}

fn rekey(
    format: &SecretFormat,
    auths: BTreeMap<String, serde_json::Value>,
) -> BTreeMap<String, serde_json::Value> {
    if *format == SecretFormat::DockerConfigJson {
        auths
    } else {
        auths
            .into_values()
            .map(|v| (SINGLE.to_string(), v))
            .take(1)
            .collect()
    }
}

/// A one-credential shape's data as a docker entry, in the key order our render writes (so
/// the digest matches), or the reduced form [`SecretFormat::reduce_live`] left.
fn single_view(data: &BTreeMap<String, ByteString>) -> Option<(String, serde_json::Value)> {
    if let Some(doc) = data.get(DOCKER_KEY) {
        return dockerconfig::auths_of(&doc.0).into_iter().next();
    }
    let text = |k: &str| {
        data.get(k)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    let (user, pass) = (text("username")?, text("password").unwrap_or_default());
    let rendered = dockerconfig::render([(
        "live",
        &crate::credentials::RegistryCredential::new(SINGLE, user, &pass),
    )])
    .ok()?;
    dockerconfig::auths_of(&rendered).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::RegistryCredential;

    fn doc(host: &str, user: &str, pass: &str) -> Vec<u8> {
        dockerconfig::render([("s", &RegistryCredential::new(host, user, pass))]).unwrap()
    }

    fn argo(template: bool, oci: bool, url: Option<&str>) -> SecretFormat {
        SecretFormat::ArgoCd(ArgoCd {
            template,
            url: url.map(str::to_string),
            oci,
            name: Some("ecr".into()),
            project: None,
        })
    }

    fn text(d: &BTreeMap<String, ByteString>) -> BTreeMap<String, String> {
        d.iter()
            .map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).unwrap()))
            .collect()
    }

    #[test]
    fn each_shape_holds_what_its_consumer_reads() {
        let d = doc("123.dkr.ecr.us-east-1.amazonaws.com", "AWS", "tok");
        let basic = text(&SecretFormat::BasicAuth.data(&d).unwrap());
        assert_eq!(
            basic,
            [
                ("password".to_string(), "tok".to_string()),
                ("username".to_string(), "AWS".to_string())
            ]
            .into()
        );
        let helm = text(&argo(false, false, None).data(&d).unwrap());
        assert_eq!(helm["url"], "123.dkr.ecr.us-east-1.amazonaws.com");
        assert_eq!(
            (helm["type"].as_str(), helm["enableOCI"].as_str()),
            ("helm", "true")
        );
        assert_eq!(helm["name"], "ecr");
        assert!(!helm.contains_key("project"));
        let oci = text(&argo(true, true, None).data(&d).unwrap());
        assert_eq!(oci["url"], "oci://123.dkr.ecr.us-east-1.amazonaws.com");
        assert_eq!(oci["type"], "oci");
        assert!(!oci.contains_key("enableOCI"));
        let given = text(
            &argo(false, false, Some("r.example/charts"))
                .data(&d)
                .unwrap(),
        );
        assert_eq!(given["url"], "r.example/charts");
        assert_eq!(argo(true, false, None).labels()[0].1, "repo-creds");
        assert_eq!(argo(false, false, None).labels()[0].1, "repository");
        assert_eq!(
            SecretFormat::BasicAuth.secret_type(),
            "kubernetes.io/basic-auth"
        );
    }

    #[test]
    fn a_one_credential_shape_refuses_two_hosts() {
        let two = dockerconfig::render([
            ("a", &RegistryCredential::new("a.example", "u", "p")),
            ("b", &RegistryCredential::new("b.example", "u", "p")),
        ])
        .unwrap();
        let e = SecretFormat::BasicAuth.data(&two).unwrap_err().to_string();
        assert!(e.contains("2 were rendered"), "{e}");
    }

    #[test]
    fn the_view_of_a_written_secret_matches_what_was_rendered_and_survives_reduction() {
        let d = doc("quay.io", "bot", "s3cret");
        for f in [SecretFormat::BasicAuth, argo(false, false, None)] {
            let data = f.data(&d).unwrap();
            let live = f.view(&data);
            let want = f.desired_view(&d);
            assert_eq!(
                dockerconfig::entry_digest(&live[SINGLE]),
                dockerconfig::entry_digest(&want[SINGLE])
            );
            let mut s = Secret {
                type_: Some(f.secret_type().into()),
                data: Some(data),
                ..Default::default()
            };
            SecretFormat::reduce_live(&mut s);
            let reduced = f.view(s.data.as_ref().unwrap());
            let text = format!("{reduced:?}");
            assert!(!text.contains("s3cret"), "{text}");
            assert_eq!(reduced[SINGLE]["username"], "bot");
            assert_eq!(
                dockerconfig::entry_digest(&reduced[SINGLE]),
                dockerconfig::entry_digest(&want[SINGLE])
            );
        }
        assert_eq!(SecretFormat::DockerConfigJson.recipe(), "");
    }
}
