//! Why a write failed, in words that name the secret and the fix, and whether trying again
//! soon can help.

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(
        "secret {namespace}/{secret}: forbidden to {verb}; fix: grant {verb} on secrets in namespace {namespace} to the refresher's identity ({message})"
    )]
    Forbidden {
        namespace: String,
        secret: String,
        verb: &'static str,
        message: String,
    },
    #[error(
        "secret {namespace}/{secret} has type {found:?}, not {want}; the type is immutable: fix: delete that secret or configure another name"
    )]
    WrongType {
        namespace: String,
        secret: String,
        found: String,
        want: &'static str,
    },
    #[error(
        "secret {namespace}/{secret} is immutable (immutable: true), so its credentials can never be renewed; fix: delete it (it is written again, mutable) or configure another name"
    )]
    Immutable { namespace: String, secret: String },
    #[error("secret {namespace}/{secret}: namespace not found")]
    NamespaceGone { namespace: String, secret: String },
    /// Deleted while we wrote: the API server refuses new content with a 403 that is no RBAC
    /// problem, so it must not be reported as one.
    #[error(
        "secret {namespace}/{secret}: namespace is being deleted (Terminating); not written, and skipped from the next cycle on"
    )]
    NamespaceTerminating { namespace: String, secret: String },
    // The cause once and on one line: a kube error may quote what it failed to parse.
    #[error("secret {namespace}/{secret}: {op} failed: {}", crate::error_chain::one_line(.source))]
    Api {
        namespace: String,
        secret: String,
        op: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(
        "secret {secret}: not written because source(s) {sources} failed; the last good secret stays in place"
    )]
    SourceFailed { secret: String, sources: String },
}

impl WriteError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Forbidden { .. } => "forbidden",
            Self::WrongType { .. } => "wrong_type",
            Self::Immutable { .. } => "immutable",
            Self::NamespaceGone { .. } => "namespace_gone",
            Self::NamespaceTerminating { .. } => "namespace_terminating",
            Self::Api { .. } => "api",
            Self::SourceFailed { .. } => "source_failed",
        }
    }

    /// Whether the same write may succeed if tried again soon, with nothing else changed: an
    /// API server away, overloaded or in conflict. What only a change of the cluster fixes
    /// (RBAC, the secret's type, immutability, a namespace going away) or a failed source
    /// (its own timer retries it) is not.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Api { .. })
    }

    pub(super) fn from_kube(
        namespace: &str,
        secret: &str,
        op: &'static str,
        e: kube::Error,
    ) -> Self {
        match &e {
            kube::Error::Api(s) if is_terminating(s) => Self::NamespaceTerminating {
                namespace: namespace.into(),
                secret: secret.into(),
            },
            kube::Error::Api(s) if s.code == 403 => Self::Forbidden {
                namespace: namespace.into(),
                secret: secret.into(),
                verb: refused_verb(&s.message).unwrap_or(op),
                message: s.message.clone(),
            },
            kube::Error::Api(s) if s.code == 404 && op != "get" => Self::NamespaceGone {
                namespace: namespace.into(),
                secret: secret.into(),
            },
            _ => Self::Api {
                namespace: namespace.into(),
                secret: secret.into(),
                op,
                source: e,
            },
        }
    }
}

/// The verb an RBAC refusal names (`… cannot create resource "secrets" …`): a server-side
/// apply is authorized as patch and, for a new object, as create, so the failed call's own
/// verb may not be the one to grant.
fn refused_verb(message: &str) -> Option<&'static str> {
    let verb = message.split("cannot ").nth(1)?.split_whitespace().next()?;
    [
        "create", "patch", "update", "get", "list", "watch", "delete",
    ]
    .into_iter()
    .find(|v| *v == verb)
}

/// The NamespaceLifecycle admission plugin's refusal: a 403 whose cause is
/// `NamespaceTerminating` (the message is the fallback for servers that omit the cause).
fn is_terminating(s: &kube::core::Status) -> bool {
    s.code == 403
        && (s
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
            || s.message.contains("because it is being terminated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_names_its_cause_once_without_what_the_cause_quotes() {
        let quoted = std::io::Error::other("bad exec output\n1 | {\"token\":\"S3CRET\"");
        let e = WriteError::from_kube(
            "t",
            "regcred",
            "patch",
            kube::Error::Service(Box::new(quoted)),
        );
        let line = crate::error_chain::one_line(&e);
        assert!(!e.to_string().contains("S3CRET"), "{e}");
        assert!(!line.contains("S3CRET"), "{line}");
        assert_eq!(line.matches("bad exec output").count(), 1, "{line}");
    }

    #[test]
    fn a_refusal_names_the_verb_the_server_refused() {
        let forbidden = |message: &str| {
            let s: kube::core::Status = serde_json::from_value(serde_json::json!({
                "status": "Failure", "code": 403, "reason": "Forbidden", "message": message,
            }))
            .unwrap();
            kube::Error::Api(s.boxed())
        };
        let msg = r#"secrets "regcred" is forbidden: User "u" cannot create resource "secrets" in API group "" in the namespace "t""#;
        let e = WriteError::from_kube("t", "regcred", "patch", forbidden(msg));
        assert!(e.to_string().contains("grant create on secrets"), "{e}");
        let e = WriteError::from_kube("t", "regcred", "patch", forbidden("no verb here"));
        assert!(e.to_string().contains("grant patch on secrets"), "{e}");
    }

    #[test]
    fn a_terminating_namespace_is_not_reported_as_an_rbac_problem() {
        let status = |cause: &str, message: &str| {
            let s: kube::core::Status = serde_json::from_value(serde_json::json!({
                "status": "Failure", "code": 403, "reason": "Forbidden", "message": message,
                "details": {"kind": "secrets", "name": "regcred",
                            "causes": [{"reason": cause, "message": message, "field": "metadata.namespace"}]}
            }))
            .unwrap();
            kube::Error::Api(s.boxed())
        };
        let msg = "unable to create new content in namespace t because it is being terminated";
        let e = WriteError::from_kube("t", "regcred", "patch", status("NamespaceTerminating", msg));
        assert_eq!(e.metric_label(), "namespace_terminating");
        assert!(e.to_string().contains("being deleted"), "{e}");
        assert!(!e.to_string().contains("grant"), "{e}");
        let e = WriteError::from_kube("t", "regcred", "patch", status("", "nope"));
        assert_eq!(e.metric_label(), "forbidden");
    }
}
