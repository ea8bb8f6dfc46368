//! An `acr` registry entry checked: the registry's login server, the Entra tenant and client,
//! and which credential proves the client: a federated token file (Entra Workload Identity)
//! or a client secret file (a service principal). Fields left out are taken from the variables
//! the Azure Workload Identity webhook injects (AZURE_TENANT_ID, AZURE_CLIENT_ID,
//! AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST), so a pod set up for the webhook needs
//! only `loginServer`. The files are read again at every fetch: both rotate.

use std::path::PathBuf;

use super::{AcrConfig, AcrFile, AzureCredential};
use crate::config_error::{Checked, ConfigError};
use crate::input::{self, AzureEnv, is_guid};

/// The public cloud's Entra endpoint, as the Azure SDKs default to it.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The registry audience, which ACR accepts whether or not ARM-audience tokens are allowed.
pub const DEFAULT_SCOPE: &str = "https://containerregistry.azure.net/.default";

pub(super) fn acr(field: &str, a: AcrFile) -> Checked<AcrConfig> {
    acr_with(field, a, &input::azure())
}

fn acr_with(field: &str, a: AcrFile, env: &AzureEnv) -> Checked<AcrConfig> {
    let login_server = login_server(&format!("{field}.loginServer"), a.login_server)?;
    let (tenant_field, tenant_id) = from_field_or_env(
        field,
        "tenantId",
        a.tenant_id,
        "AZURE_TENANT_ID",
        &env.tenant_id,
    )?;
    // Entra refuses the tenant-independent names (common, organizations) for client credentials.
    if !(is_guid(&tenant_id) || (is_domain(&tenant_id) && tenant_id.contains('.'))) {
        return Err(ConfigError::invalid(
            &tenant_field,
            &format!("{tenant_id:?} is not a tenant ID"),
            "use the directory (tenant) ID, a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47, or the tenant's domain (contoso.onmicrosoft.com)",
        ));
    }
    let (client_field, client_id) = from_field_or_env(
        field,
        "clientId",
        a.client_id,
        "AZURE_CLIENT_ID",
        &env.client_id,
    )?;
    if !is_guid(&client_id) {
        return Err(ConfigError::invalid(
            &client_field,
            &format!("{client_id:?} is not a client ID"),
            "use the application (client) ID of the app registration or managed identity, a GUID",
        ));
    }
    let (authority_field, authority) = match (a.authority_host, &env.authority_host) {
        (Some(h), _) => (format!("{field}.authorityHost"), h),
        (None, Some(h)) => ("env AZURE_AUTHORITY_HOST".to_string(), h.clone()),
        (None, None) => (String::new(), DEFAULT_AUTHORITY.to_string()),
    };
    let authority = authority.trim_end_matches('/').to_string();
    if authority.contains('@') {
        return Err(ConfigError::invalid(
            &authority_field,
            "the URL holds user info (user:password@ before the host), which would reach every log line",
            "use the cloud's Entra endpoint, e.g. https://login.microsoftonline.com",
        ));
    }
    if !is_https_origin(&authority) {
        return Err(ConfigError::invalid(
            &authority_field,
            &format!("{authority:?} is not an https:// host"),
            "use the cloud's Entra endpoint, e.g. https://login.microsoftonline.com (https://login.microsoftonline.us, https://login.chinacloudapi.cn)",
        ));
    }
    let scope = a.scope.unwrap_or_else(|| DEFAULT_SCOPE.to_string());
    if !scope.strip_suffix("/.default").is_some_and(is_https_origin) {
        let shown = if scope.contains('@') {
            "the value (it holds user info, not shown)".to_string()
        } else {
            format!("{scope:?}")
        };
        return Err(ConfigError::invalid(
            &format!("{field}.scope"),
            &format!("{shown} is not a resource's /.default scope"),
            "leave it out (the registry audience, https://containerregistry.azure.net/.default), or name another cloud's, e.g. https://management.usgovcloudapi.net/.default",
        ));
    }
    let credential = credential(field, a.client_secret_file, a.federated_token_file, env)?;
    Ok(AcrConfig {
        login_server,
        tenant_id,
        client_id,
        authority,
        scope,
        credential,
    })
}

fn login_server(field: &str, v: Option<String>) -> Checked<String> {
    let Some(v) = v else {
        return Err(ConfigError::invalid(
            field,
            "missing",
            "set the registry's login server, e.g. myregistry.azurecr.io",
        ));
    };
    let host = v.to_ascii_lowercase();
    if !is_domain(&host) || !host.contains('.') {
        return Err(ConfigError::invalid(
            field,
            &format!("{v:?} is not a login server"),
            "use the registry's host name alone, e.g. myregistry.azurecr.io (no https://, no path)",
        ));
    }
    Ok(host)
}

fn from_field_or_env(
    field: &str,
    name: &str,
    value: Option<String>,
    var: &str,
    from_env: &Option<String>,
) -> Checked<(String, String)> {
    match (value, from_env) {
        (Some(v), _) => Ok((format!("{field}.{name}"), v)),
        (None, Some(v)) => Ok((format!("env {var}"), v.clone())),
        (None, None) => Err(ConfigError::invalid(
            &format!("{field}.{name}"),
            &format!("missing, and {var} is not set"),
            &format!("set {name}, or run the pod with Azure Workload Identity (which sets {var})"),
        )),
    }
}

fn credential(
    field: &str,
    secret_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    env: &AzureEnv,
) -> Checked<AzureCredential> {
    let (name, cred) = match (secret_file, token_file, &env.federated_token_file) {
        (Some(_), Some(_), _) => {
            return Err(ConfigError::invalid(
                &format!("{field}.clientSecretFile/federatedTokenFile"),
                "both are set",
                "keep one: federatedTokenFile for Workload Identity, clientSecretFile for a service principal",
            ));
        }
        (Some(p), None, _) => (
            format!("{field}.clientSecretFile"),
            AzureCredential::ClientSecret(p),
        ),
        (None, Some(p), _) => (
            format!("{field}.federatedTokenFile"),
            AzureCredential::FederatedToken(p),
        ),
        (None, None, Some(p)) => (
            "env AZURE_FEDERATED_TOKEN_FILE".to_string(),
            AzureCredential::FederatedToken(p.clone()),
        ),
        (None, None, None) => {
            return Err(ConfigError::invalid(
                field,
                "no Azure credential: no clientSecretFile, no federatedTokenFile, and AZURE_FEDERATED_TOKEN_FILE is not set",
                "use Workload Identity (label the pod azure.workload.identity/use: \"true\" and annotate its ServiceAccount with azure.workload.identity/client-id), or mount a service principal's secret and set clientSecretFile",
            ));
        }
    };
    let path = match &cred {
        AzureCredential::ClientSecret(p) | AzureCredential::FederatedToken(p) => p,
    };
    // A missing mount stops the start; the contents are read at each fetch.
    input::read_small_file(path).map_err(|problem| {
        ConfigError::invalid(
            &name,
            &problem,
            "mount the file there (the projected token volume, or the Secret with the client secret), or fix the path",
        )
    })?;
    Ok(cred)
}

/// A DNS name: dot-separated labels of letters, digits and inner hyphens.
fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_https_origin(s: &str) -> bool {
    s.strip_prefix("https://").is_some_and(|rest| {
        let host =
            rest.split_once(':').map_or(
                rest,
                |(h, port)| {
                    if port.parse::<u16>().is_ok() { h } else { "" }
                },
            );
        is_domain(host)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "00000000-1111-2222-3333-444444444444";

    // Only existence is checked at start; a file of the checkout serves and leaves nothing in /tmp.
    fn file() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
    }

    fn entry() -> AcrFile {
        AcrFile {
            login_server: Some("MyReg.azurecr.io".into()),
            tenant_id: None,
            client_id: None,
            federated_token_file: None,
            client_secret_file: None,
            authority_host: None,
            scope: None,
        }
    }

    fn webhook_env() -> AzureEnv {
        AzureEnv {
            tenant_id: Some(TENANT.into()),
            client_id: Some(CLIENT.into()),
            federated_token_file: Some(file()),
            authority_host: Some("https://login.microsoftonline.com/".into()),
        }
    }

    fn err(a: AcrFile, env: &AzureEnv) -> String {
        acr_with("registries[0].acr", a, env)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_webhook_variables_complete_a_login_server() {
        let c = acr_with("f", entry(), &webhook_env()).unwrap();
        assert_eq!(c.login_server, "myreg.azurecr.io");
        assert_eq!(c.tenant_id, TENANT);
        assert_eq!(c.client_id, CLIENT);
        assert_eq!(c.authority, "https://login.microsoftonline.com");
        assert_eq!(c.scope, DEFAULT_SCOPE);
        assert!(matches!(c.credential, AzureCredential::FederatedToken(_)));
    }

    #[test]
    fn fields_win_over_variables_and_a_secret_file_is_a_service_principal() {
        let mut a = entry();
        a.tenant_id = Some("contoso.onmicrosoft.com".into());
        a.client_secret_file = Some(file());
        a.authority_host = Some("https://login.microsoftonline.us".into());
        let c = acr_with("f", a, &webhook_env()).unwrap();
        assert_eq!(c.tenant_id, "contoso.onmicrosoft.com");
        assert_eq!(c.authority, "https://login.microsoftonline.us");
        assert!(matches!(c.credential, AzureCredential::ClientSecret(_)));
    }

    #[test]
    fn each_problem_names_its_field_and_the_fix() {
        let none = AzureEnv::default();
        let e = err(entry(), &none);
        assert!(
            e.contains("registries[0].acr.tenantId: missing, and AZURE_TENANT_ID is not set"),
            "{e}"
        );

        let mut a = entry();
        a.login_server = Some("https://myreg.azurecr.io/v2".into());
        let e = err(a, &webhook_env());
        assert!(
            e.contains("registries[0].acr.loginServer") && e.contains("no https://"),
            "{e}"
        );

        let mut a = entry();
        a.tenant_id = Some("organizations".into());
        let e = err(a, &webhook_env());
        assert!(
            e.contains("registries[0].acr.tenantId: \"organizations\" is not a tenant ID"),
            "{e}"
        );

        let mut env = webhook_env();
        env.client_id = Some("my-app".into());
        let e = err(entry(), &env);
        assert!(
            e.starts_with("env AZURE_CLIENT_ID: \"my-app\" is not a client ID"),
            "{e}"
        );

        let mut env = webhook_env();
        env.federated_token_file = None;
        let e = err(entry(), &env);
        assert!(
            e.contains("no Azure credential") && e.contains("azure.workload.identity/use"),
            "{e}"
        );

        let mut a = entry();
        a.client_secret_file = Some(file());
        a.federated_token_file = Some(file());
        let e = err(a, &webhook_env());
        assert!(
            e.contains("clientSecretFile/federatedTokenFile: both are set"),
            "{e}"
        );

        let mut a = entry();
        a.federated_token_file = Some("/nonexistent/azure-identity-token".into());
        let e = err(a, &webhook_env());
        assert!(
            e.contains("registries[0].acr.federatedTokenFile: the file cannot be read"),
            "{e}"
        );

        let mut a = entry();
        a.scope = Some("https://containerregistry.azure.net".into());
        let e = err(a, &webhook_env());
        assert!(
            e.contains("registries[0].acr.scope") && e.contains("/.default"),
            "{e}"
        );

        let mut a = entry();
        a.authority_host = Some("http://login.microsoftonline.com".into());
        let e = err(a, &webhook_env());
        assert!(
            e.contains("authorityHost") && e.contains("not an https:// host"),
            "{e}"
        );
    }

    #[test]
    fn guids_and_domains() {
        assert!(is_guid(TENANT));
        assert!(!is_guid("72f988bf86f141af91ab2d7cd011db47"));
        assert!(!is_guid("72f988bf-86f1-41af-91ab-2d7cd011db4g"));
        assert!(is_domain("contoso.onmicrosoft.com"));
        assert!(!is_domain("contoso..com") && !is_domain("-a.com") && !is_domain("a/b"));
        assert!(is_https_origin("https://127.0.0.1:8443") && !is_https_origin("https://a:b"));
    }
}
