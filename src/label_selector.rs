//! Parses a Kubernetes label selector string (`team in (a,b),env!=dev,!legacy`) into kube's
//! `Selector`, so a bad selector is refused at start-up rather than by the API server later,
//! and so the daemon can match namespaces it already holds without a round trip.

use std::collections::BTreeSet;

use kube::core::{Expression, Selector};

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct SelectorError(String);

pub fn parse(input: &str) -> Result<Selector, SelectorError> {
    let mut exprs = Vec::new();
    for part in split_top_level(input)? {
        let part = part.trim();
        if part.is_empty() {
            return Err(SelectorError(format!(
                "empty requirement in {input:?}: remove the stray comma"
            )));
        }
        exprs.push(requirement(part)?);
    }
    Ok(exprs.into_iter().collect())
}

fn split_top_level(input: &str) -> Result<Vec<&str>, SelectorError> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, ch) in input.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(SelectorError(format!(
                "unbalanced parentheses in {input:?}"
            )));
        }
    }
    if depth != 0 {
        return Err(SelectorError(format!(
            "unbalanced parentheses in {input:?}"
        )));
    }
    parts.push(&input[start..]);
    Ok(parts)
}

fn requirement(part: &str) -> Result<Expression, SelectorError> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key_ok(key.trim())?));
    }
    for (op, ctor) in [
        (
            "!=",
            Expression::NotEqual as fn(String, String) -> Expression,
        ),
        ("==", Expression::Equal),
        ("=", Expression::Equal),
    ] {
        if let Some((k, v)) = part.split_once(op) {
            return Ok(ctor(key_ok(k.trim())?, value_ok(v.trim())?));
        }
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    let Some(rest) = words.next().map(str::trim) else {
        return Ok(Expression::Exists(key_ok(key)?));
    };
    let (is_in, list) = if let Some(l) = rest.strip_prefix("notin") {
        (false, l)
    } else if let Some(l) = rest.strip_prefix("in") {
        (true, l)
    } else {
        return Err(SelectorError(format!(
            "{part:?}: expected an operator (=, ==, !=, in, notin) after {key:?}"
        )));
    };
    let list = list
        .trim()
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("{part:?}: the values must be in parentheses")))?;
    // The API server refuses an empty set ("values set can't be empty"); so do we, at start.
    if list.trim().is_empty() {
        return Err(SelectorError(format!(
            "{part:?}: the set of values is empty; list at least one"
        )));
    }
    let values = list
        .split(',')
        .map(|v| value_ok(v.trim()))
        .collect::<Result<BTreeSet<_>, _>>()?;
    let key = key_ok(key)?;
    Ok(if is_in {
        Expression::In(key, values)
    } else {
        Expression::NotIn(key, values)
    })
}

fn name_ok(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label value (non-empty): up to 63 alphanumerics, '-', '_', '.', alphanumeric at both ends.
pub(crate) fn is_label_value(v: &str) -> bool {
    name_ok(v, 63)
}

/// One RFC 1123 label without its length bound: lowercase alphanumerics and '-', alphanumeric
/// at both ends. (Object names that are DNS subdomains bound only their total length.)
pub(crate) fn is_dns_label_body(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn key_ok(key: &str) -> Result<String, SelectorError> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253 && p.split('.').all(|l| l.len() <= 63 && is_dns_label_body(l))
    });
    if prefix_ok && name_ok(name, 63) {
        Ok(key.to_string())
    } else {
        Err(SelectorError(format!(
            "{key:?} is not a valid label key: use [prefix/]name, name up to 63 alphanumerics, '-', '_', '.'"
        )))
    }
}

fn value_ok(v: &str) -> Result<String, SelectorError> {
    if v.is_empty() || name_ok(v, 63) {
        Ok(v.to_string())
    } else {
        Err(SelectorError(format!(
            "{v:?} is not a valid label value: up to 63 alphanumerics, '-', '_', '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::core::SelectorExt;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_empty_set_is_refused() {
        for bad in ["team in ()", "team notin ( )"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("empty"), "{bad}: {e}");
        }
        assert!(parse("team in (a)").is_ok());
    }

    #[test]
    fn parses_every_operator_and_matches() {
        let s = parse("team in (a, b),env!=dev,tier==gold, managed ,!legacy,x notin (y)").unwrap();
        let ok = labels(&[
            ("team", "a"),
            ("env", "prod"),
            ("tier", "gold"),
            ("managed", ""),
        ]);
        assert!(s.matches(&ok));
        let mut bad = ok.clone();
        bad.insert("legacy".into(), "1".into());
        assert!(!s.matches(&bad));
        let mut wrong_team = ok.clone();
        wrong_team.insert("team".into(), "c".into());
        assert!(!s.matches(&wrong_team));
        assert_eq!(
            s.to_string(),
            parse(&s.to_string()).unwrap().to_string(),
            "selector must round-trip through its API form"
        );
    }

    #[test]
    fn prefixed_keys_are_valid() {
        assert!(parse("kubernetes.io/metadata.name=team-a").is_ok());
    }

    #[test]
    fn rejects_malformed_selectors() {
        for bad in [
            "team in (a,b",
            "team in a,b",
            "team ~ a",
            "a,,b",
            "-bad=x",
            "k=bad value",
            "UPPER.Prefix/x=y",
            "k=)",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
