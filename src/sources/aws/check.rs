//! What `ecr` and `ecrPublic` both check: the region's shape, and the optional role to assume
//! through STS with its external ID and session name.

use crate::config_error::{Checked, ConfigError};

/// A role assumed through STS before the registry call.
#[derive(Debug, Clone)]
pub struct AssumeRole {
    pub role_arn: String,
    pub external_id: Option<String>,
    pub session_name: String,
}

/// The optional role to assume through STS, as `ecr` and `ecrPublic` both take it.
pub(in crate::sources) fn assume_role(
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

pub(in crate::sources) fn is_aws_region(r: &str) -> bool {
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
