//! One registry entry checked: which source it is (ECR, ECR Public, Google, static) and that source's
//! fields. Files and variables a source names are looked at now, through `environment`, so
//! a missing mount stops the start instead of failing every cycle.

use std::path::PathBuf;

use super::environment;
use super::error::{Checked, ConfigError};
use super::names::{dns_label, registry_host};
use super::{
    AssumeRole, EcrConfig, EcrFile, EcrPublicConfig, EcrPublicFile, RegistryFile, SourceConfig,
    SourceKind, StaticConfig, StaticFile, ValueFrom,
};

pub(super) fn source(i: usize, r: RegistryFile) -> Checked<SourceConfig> {
    let field = format!("registries[{i}]");
    dns_label(&format!("{field}.name"), &r.name, "registry name")?;
    let given = [
        r.ecr.is_some(),
        r.ecr_public.is_some(),
        r.google.is_some(),
        r.static_.is_some(),
        r.acr.is_some(),
    ];
    let kind = match given.iter().filter(|g| **g).count() {
        0 => {
            return Err(ConfigError::invalid(
                &field,
                &format!("registry {:?} has no source", r.name),
                "add one of `ecr`, `ecrPublic`, `google`, `static` or `acr`",
            ));
        }
        1 => {
            if let Some(e) = r.ecr {
                SourceKind::Ecr(ecr(&format!("{field}.ecr"), e)?)
            } else if let Some(p) = r.ecr_public {
                SourceKind::EcrPublic(ecr_public(&format!("{field}.ecrPublic"), p)?)
            } else if let Some(g) = r.google {
                SourceKind::Google(super::google::google(&format!("{field}.google"), g)?)
            } else if let Some(s) = r.static_ {
                SourceKind::Static(static_(&format!("{field}.static"), s)?)
            } else if let Some(a) = r.acr {
                SourceKind::Acr(super::azure::acr(&format!("{field}.acr"), a)?)
            } else {
                unreachable!("exactly one source is given")
            }
        }
        _ => {
            return Err(ConfigError::invalid(
                &field,
                &format!("registry {:?} has more than one source", r.name),
                "keep one of `ecr`, `ecrPublic`, `google`, `static`, `acr` and move the others to registries of their own",
            ));
        }
    };
    Ok(SourceConfig { name: r.name, kind })
}

fn ecr(field: &str, e: EcrFile) -> Checked<EcrConfig> {
    if !is_aws_region(&e.region) {
        return Err(ConfigError::invalid(
            &format!("{field}.region"),
            &format!("{:?} is not an AWS region", e.region),
            "use a region code such as us-east-1 or eu-central-1",
        ));
    }
    if let Some(acct) = &e.account_id
        && !(acct.len() == 12 && acct.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ConfigError::invalid(
            &format!("{field}.accountId"),
            &format!("{acct:?} is not a 12-digit AWS account ID"),
            "quote it as a string of 12 digits, e.g. accountId: \"123456789012\"",
        ));
    }
    let assume_role = assume_role(field, e.role_arn, e.external_id, e.session_name)?;
    Ok(EcrConfig {
        region: e.region,
        account_id: e.account_id,
        assume_role,
    })
}

fn ecr_public(field: &str, p: EcrPublicFile) -> Checked<EcrPublicConfig> {
    if let Some(region) = p.region {
        return Err(ConfigError::invalid(
            &format!("{field}.region"),
            &format!(
                "{region:?}: ECR Public has no region setting; its authorization API exists only in us-east-1, which is always used"
            ),
            "remove `region` (a pull from public.ecr.aws works from any region)",
        ));
    }
    Ok(EcrPublicConfig {
        assume_role: assume_role(field, p.role_arn, p.external_id, p.session_name)?,
    })
}

/// The optional role to assume through STS, as `ecr` and `ecrPublic` both take it.
fn assume_role(
    field: &str,
    role_arn: Option<String>,
    external_id: Option<String>,
    session_name: Option<String>,
) -> Checked<Option<AssumeRole>> {
    let Some(arn) = role_arn else {
        if external_id.is_some() || session_name.is_some() {
            return Err(ConfigError::invalid(
                &format!("{field}.externalId/sessionName"),
                "only apply when a role is assumed",
                "add roleArn, or remove externalId and sessionName",
            ));
        }
        return Ok(None);
    };
    if !is_role_arn(&arn) {
        return Err(ConfigError::invalid(
            &format!("{field}.roleArn"),
            &format!("{arn:?} is not an IAM role ARN"),
            "use arn:aws:iam::<12-digit account>:role/<name>",
        ));
    }
    if let Some(id) = &external_id
        && !(2..=1224).contains(&id.len())
    {
        return Err(ConfigError::invalid(
            &format!("{field}.externalId"),
            &format!("an external ID of {} characters", id.len()),
            "use 2 to 1224 characters, as the role's trust policy expects",
        ));
    }
    let session_name = session_name.unwrap_or_else(|| "regcred-refresher".to_string());
    if !(2..=64).contains(&session_name.len())
        || !session_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=,.@-_".contains(&b))
    {
        return Err(ConfigError::invalid(
            &format!("{field}.sessionName"),
            &format!("{session_name:?} is not a valid role session name"),
            "use 2 to 64 characters from [A-Za-z0-9=,.@_-]",
        ));
    }
    Ok(Some(AssumeRole {
        role_arn: arn,
        external_id,
        session_name,
    }))
}

/// `arn:<partition>:iam::<12 digits>:role/<path/name>`.
fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [arn_, partition, service, region, account, resource] = parts.as_slice() else {
        return false;
    };
    let name = resource.strip_prefix("role/").unwrap_or_default();
    *arn_ == "arn"
        && partition.starts_with("aws")
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-')
        && *service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
        && !name.ends_with('/')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
}

fn is_aws_region(r: &str) -> bool {
    // partition-prefix, geography words, number: us-east-1, us-gov-west-1, cn-north-1, eusc-de-east-1
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[0].len() >= 2
        && parts[parts.len() - 1]
            .parse::<u8>()
            .is_ok_and(|n| (1..=20).contains(&n))
}

fn static_(field: &str, s: StaticFile) -> Checked<StaticConfig> {
    let login_fields = s.server.is_some()
        || s.username.is_some()
        || s.username_file.is_some()
        || s.username_env.is_some()
        || s.password_file.is_some()
        || s.password_env.is_some()
        || s.email.is_some();
    let docker = one_of(
        &format!("{field}.dockerConfigJsonFile/dockerConfigJsonEnv"),
        None,
        s.docker_config_json_file,
        s.docker_config_json_env,
    )?;
    if let Some(d) = docker {
        if login_fields {
            return Err(ConfigError::invalid(
                field,
                "a dockerConfigJson source cannot also have server/username/password/email",
                "use either dockerConfigJsonFile/Env or server + username + password",
            ));
        }
        docker_config(&format!("{field}.{}", docker_field(&d)), &d)?;
        return Ok(StaticConfig::DockerConfigJson(d));
    }
    let Some(server) = s.server else {
        return Err(ConfigError::invalid(
            &format!("{field}.server"),
            "missing",
            "set the registry, e.g. https://index.docker.io/v1/ or quay.io (or use dockerConfigJsonFile)",
        ));
    };
    let server = registry_host(&format!("{field}.server"), &server)?;
    let username = one_of(
        &format!("{field}.username/usernameFile/usernameEnv"),
        s.username,
        s.username_file,
        s.username_env,
    )?
    .ok_or_else(|| {
        ConfigError::invalid(
            &format!("{field}.username"),
            "missing",
            "set one of username, usernameFile, usernameEnv",
        )
    })?;
    let password = one_of(
        &format!("{field}.passwordFile/passwordEnv"),
        None,
        s.password_file,
        s.password_env,
    )?
    .ok_or_else(|| {
        ConfigError::invalid(
            &format!("{field}.passwordFile"),
            "missing",
            "set passwordFile (a mounted Secret) or passwordEnv; a password is never taken from the config or argv",
        )
    })?;
    // Read once here so a bad value stops the start, not every cycle.
    for (name, from) in [("username", &username), ("password", &password)] {
        let field = format!("{field}.{name}");
        let raw = environment::read_value(from).map_err(|problem| {
            ConfigError::invalid(&field, &problem, "fix the path or the mount")
        })?;
        credential_value(&field, &raw)?;
    }
    Ok(StaticConfig::Login {
        server,
        username,
        password,
        email: s.email,
    })
}

fn docker_field(from: &ValueFrom) -> &'static str {
    match from {
        ValueFrom::Env(_) => "dockerConfigJsonEnv",
        _ => "dockerConfigJsonFile",
    }
}

/// The document as each fetch will read it, checked now: JSON of the right shape, every key a
/// registry the kubelet matches (what `server` would accept). Its values are never quoted.
fn docker_config(field: &str, from: &ValueFrom) -> Checked<()> {
    let raw = environment::read_value(from)
        .map_err(|problem| ConfigError::invalid(field, &problem, "fix the path or the mount"))?;
    crate::dockerconfig::parse(raw.as_bytes())
        .map(drop)
        .map_err(|e| {
            ConfigError::invalid(
                field,
                &e.to_string(),
                "give a .dockerconfigjson document (what kubectl create secret docker-registry writes), keyed on registry hosts such as quay.io or https://index.docker.io/v1/",
            )
        })
}

/// A username or password as each fetch will clean it: present, not blank, small enough for
/// a Secret.
fn credential_value(field: &str, raw: &str) -> Checked<()> {
    crate::providers::static_creds::clean_value(raw)
        .map(|_| ())
        .map_err(|problem| {
            ConfigError::invalid(
                field,
                &problem,
                "put the credential itself in the file or variable (one trailing newline and a byte-order mark are ignored)",
            )
        })
}

fn one_of(
    field: &str,
    literal: Option<String>,
    file: Option<PathBuf>,
    env: Option<String>,
) -> Checked<Option<ValueFrom>> {
    let given = [literal.is_some(), file.is_some(), env.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ConfigError::invalid(
            field,
            "more than one is set",
            "keep exactly one",
        ));
    }
    if let Some(path) = &file {
        environment::regular_file(path).map_err(|problem| {
            ConfigError::invalid(
                field,
                &problem,
                "mount the file there (e.g. from a Secret) or fix the path",
            )
        })?;
    }
    if let Some(var) = &env
        && !environment::is_set(var)
    {
        return Err(ConfigError::invalid(
            field,
            // Not named: a password pasted here is a value, not a variable name.
            "the environment variable it names is not set",
            "set it (e.g. from a Secret with env.valueFrom) or use the File form",
        ));
    }
    Ok(literal
        .map(ValueFrom::Literal)
        .or(file.map(ValueFrom::File))
        .or(env.map(ValueFrom::Env)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns() {
        for ok in [
            "arn:aws:iam::123456789012:role/pull",
            "arn:aws-us-gov:iam::123456789012:role/path/to/pull",
            "arn:aws-cn:iam::123456789012:role/a+b=c,d.e@f_g-h",
        ] {
            assert!(is_role_arn(ok), "{ok}");
        }
        for bad in [
            "arn:aws:iam::12345:role/pull",
            "arn:aws:iam::123456789012:user/pull",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam:us-east-1:123456789012:role/x",
            "arn:aws:sts::123456789012:role/x",
            "aws:iam::123456789012:role/x",
            "arn:aws:iam::123456789012:role/with space",
        ] {
            assert!(!is_role_arn(bad), "{bad}");
        }
    }

    #[test]
    fn region_shapes() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "cn-north-1",
            "ap-southeast-5",
        ] {
            assert!(is_aws_region(ok), "{ok}");
        }
        for bad in ["us-east", "US-EAST-1", "useast1", "us--1", "us-east-0"] {
            assert!(!is_aws_region(bad), "{bad}");
        }
    }
}
