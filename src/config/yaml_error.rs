//! Turns a serde-saphyr error into one line that names the field path, the value found there
//! and the fix. serde-saphyr reports only a line and column (and a multi-line source snippet);
//! the field path (`registries[0].google.hosts`) is recovered here by walking the YAML events
//! up to that position.

use serde_saphyr::Error;
use serde_saphyr::granit_parser::{Event, Parser};

/// The longest value quoted back in a message (a config holds no secrets, but a pasted blob
/// should not flood the log).
const MAX_VALUE: usize = 60;

/// `path (line L, column C): problem; fix: fix`
pub(super) fn describe(text: &str, e: &Error) -> String {
    let loc = e.location().map(|l| (l.line(), l.column()));
    let mut nodes = loc
        .map(|(line, col)| nodes_at(text, line, col))
        .unwrap_or_default();
    // A type error is about the value (the outermost node there); anything else, such as an
    // unknown field, about the key (the innermost).
    let node = if matches!(
        e,
        Error::Unexpected { .. } | Error::SerdeMissingField { .. }
    ) {
        nodes.drain(..).next()
    } else {
        nodes.pop()
    };
    let at = match (&node, loc) {
        (Some(n), Some((l, c))) => format!("{} (line {l}, column {c})", n.path_or_top()),
        (None, Some((l, c))) => format!("line {l}, column {c}"),
        (Some(n), None) => n.path_or_top(),
        (None, None) => "the file".to_string(),
    };
    let found = node
        .as_ref()
        .map(|n| n.found.clone())
        .unwrap_or_else(|| "this".into());
    let (problem, fix) = match e {
        Error::SerdeUnknownField {
            field, expected, ..
        } => {
            let hint = if field == "password" && expected.contains(&"passwordFile") {
                "a password never sits in the config: use passwordFile (a mounted Secret) or passwordEnv; ".to_string()
            } else {
                crate::config::closest_field(field, expected.iter().copied())
                    .map(|f| format!("did you mean `{f}`? "))
                    .unwrap_or_default()
            };
            (
                format!("unknown field `{}`", shorten(field)),
                format!("{hint}the fields allowed here are {}", expected.join(", ")),
            )
        }
        Error::SerdeMissingField { field, .. } => (
            format!("missing field `{field}`"),
            format!("add `{field}:` to this entry"),
        ),
        Error::QuotingRequired { value, .. } => (
            format!(
                "{} is read as a number or boolean, not a string",
                shorten(value)
            ),
            format!("quote it: \"{}\"", shorten(value)),
        ),
        Error::Unexpected { expected, .. } => {
            let (want, example) = match *expected {
                e if e.contains("sequence") => ("a list", "[a, b], or one `- item` per line"),
                e if e.contains("mapping") => ("a mapping", "`key: value` pairs, or {key: value}"),
                e if e.contains("string") => ("a single string", "name: value"),
                _ => (*expected, "see the README's Configuration section"),
            };
            (
                format!("expected {want}, found {found}"),
                format!("write {want}, e.g. {example}"),
            )
        }
        Error::DuplicateMappingKey { key, .. } => (
            match key {
                Some(k) => format!("`{}` appears twice", shorten(k)),
                None => "a key appears twice".into(),
            },
            "keep one of them".into(),
        ),
        other => {
            let raw = other.to_string();
            let msg = raw
                .rsplit_once(" at line ")
                .map(|(m, _)| m.to_string())
                .unwrap_or(raw);
            let fix = if msg.contains("boolean") {
                "use true or false"
            } else {
                "fix the YAML at that position (indentation, brackets, quotes)"
            };
            (format!("{msg} (found {found})"), fix.into())
        }
    };
    format!("{at}: {problem}; fix: {fix}")
}

fn shorten(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_VALUE)
        .collect();
    if s.chars().count() > MAX_VALUE {
        out.push('…');
    }
    out
}

#[derive(Debug, PartialEq)]
pub(super) struct Node {
    /// `registries[0].ecr.region`; empty for the document itself.
    pub path: String,
    /// `"gcr.io"`, `a list`, `a mapping`.
    pub found: String,
}

impl Node {
    fn path_or_top(&self) -> String {
        if self.path.is_empty() {
            "the top level".into()
        } else {
            self.path.clone()
        }
    }
}

enum Frame {
    Map { key: Option<String>, want_key: bool },
    Seq { index: usize },
}

fn path(stack: &[Frame]) -> String {
    let mut out = String::new();
    for f in stack {
        match f {
            Frame::Map {
                key: Some(k),
                want_key: false,
            } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&shorten(k));
            }
            Frame::Map { .. } => {}
            Frame::Seq { index } => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

fn value_done(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Map { key, want_key }) => {
            *key = None;
            *want_key = true;
        }
        Some(Frame::Seq { index }) => *index += 1,
        None => {}
    }
}

/// The nodes (keys or values) that start at `line`/`column` (both 1-based, as serde-saphyr
/// reports them), outermost first (a block mapping starts where its first key does); or else
/// the last node before it (a syntax error stops the walk there).
pub(super) fn nodes_at(text: &str, line: u64, column: u64) -> Vec<Node> {
    let target = (line as usize, column as usize);
    let mut stack: Vec<Frame> = Vec::new();
    let mut last: Option<Node> = None;
    let mut here = Vec::new();
    for ev in Parser::new_from_str(text) {
        let Ok((ev, span)) = ev else { break };
        let pos = (span.start.line(), span.start.col() + 1);
        if pos > target {
            break;
        }
        let found = match &ev {
            Event::Scalar(v, ..) => format!("{:?}", shorten(v)),
            Event::SequenceStart(..) => "a list".into(),
            Event::MappingStart(..) => "a mapping".into(),
            Event::Alias(..) => "an alias".into(),
            Event::SequenceEnd | Event::MappingEnd => {
                stack.pop();
                value_done(&mut stack);
                continue;
            }
            _ => continue,
        };
        let is_key = matches!(stack.last(), Some(Frame::Map { want_key: true, .. }));
        let node_path = if is_key {
            let key = match &ev {
                Event::Scalar(v, ..) => v.to_string(),
                _ => "?".into(),
            };
            if let Some(Frame::Map { key: k, want_key }) = stack.last_mut() {
                *k = Some(key);
                *want_key = false;
            }
            path(&stack)
        } else {
            path(&stack)
        };
        let node = Node {
            path: node_path,
            found,
        };
        if pos == target {
            here.push(node);
        } else {
            last = Some(node);
        }
        match ev {
            Event::SequenceStart(..) => stack.push(Frame::Seq { index: 0 }),
            Event::MappingStart(..) => stack.push(Frame::Map {
                key: None,
                want_key: true,
            }),
            _ if !is_key => value_done(&mut stack),
            _ => {}
        }
    }
    if here.is_empty() {
        here.extend(last);
    }
    here
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_text;

    fn at(text: &str, line: u64, col: u64) -> (String, String) {
        let n = nodes_at(text, line, col).pop().unwrap();
        (n.path, n.found)
    }

    #[test]
    fn finds_the_path_of_values_and_keys() {
        let y = "registries:\n  - name: a\n    google: {hosts: gcr.io}\n  - name: b\n    ecr: {regoin: x}\nsecrets: [{name: s, registries: [a, [b]]}]\n";
        assert_eq!(
            at(y, 3, 21),
            ("registries[0].google.hosts".into(), "\"gcr.io\"".into())
        );
        assert_eq!(
            at(y, 5, 11),
            ("registries[1].ecr.regoin".into(), "\"regoin\"".into())
        );
        assert_eq!(at(y, 4, 11), ("registries[1].name".into(), "\"b\"".into()));
        assert_eq!(
            at(y, 6, 37),
            ("secrets[0].registries[1]".into(), "a list".into())
        );
        assert_eq!(at(y, 1, 1), ("registries".into(), "\"registries\"".into()));
    }

    /// serde-saphyr reports only a line and column; every parse error still names the
    /// field path, what was found there and the fix, on one line.
    #[test]
    fn parse_errors_name_the_path_the_value_and_the_fix() {
        let cases: &[(&str, &str)] = &[
            (
                "registries: foo\n",
                "registries (line 1, column 13): expected a list, found \"foo\"",
            ),
            (
                "registries:\n  - name: 5\n    ecr: {region: us-east-1}\n",
                "registries[0].name (line 2, column 11): 5 is read as a number or boolean, not a string; fix: quote it: \"5\"",
            ),
            (
                "registries:\n  - name: a\n    google: {hosts: gcr.io}\n",
                "registries[0].google.hosts (line 3, column 21): expected a list, found \"gcr.io\"",
            ),
            (
                "registries:\n  - name: a\n    ecr: {region: true}\n",
                "registries[0].ecr.region (line 3, column 19): true is read as",
            ),
            (
                "registries:\n  - name: a\n    ecr: {region: us-east-1, accountId: 123456789012}\n",
                "registries[0].ecr.accountId (line 3, column 41)",
            ),
            (
                "secrets:\n  - name: s\n    adopt: maybe\n",
                "secrets[0].adopt (line 3, column 12): invalid boolean (found \"maybe\"); fix: use true or false",
            ),
            (
                "secrets:\n  - name: s\n    registries: [a, [b]]\n",
                "secrets[0].registries[1] (line 3, column 21): expected a single string, found a list",
            ),
            (
                "registries:\n  - name: a\n    ecr: {regoin: us-east-1}\n",
                "registries[0].ecr.regoin (line 3, column 11): unknown field `regoin`; fix: did you mean `region`?",
            ),
            (
                "registrys: []\n",
                "registrys (line 1, column 1): unknown field `registrys`; fix: did you mean `registries`?",
            ),
            (
                "namespaces:\n  include: team-*\n",
                "namespaces.include (line 2, column 12): expected a list",
            ),
            (
                "registries: [\n",
                "registries (line 1, column 13): unclosed bracket",
            ),
            (
                "- a\n- b\n",
                "the top level (line 1, column 1): expected a mapping, found a list",
            ),
            (
                "registries:\n  - name: a\n    ecr: null\n  - foo\n",
                "registries[1] (line 4, column 5): expected a mapping, found \"foo\"",
            ),
            (
                "registries:\n  - ecr: {region: us-east-1}\n",
                "registries[0] (line 2, column 5): missing field `name`; fix: add `name:`",
            ),
            (
                "registries:\n  - name: a\n    ecr: {region: us-east-1}\n    ecr: {region: us-east-2}\n",
                "registries[0].ecr (line 4, column 5): `ecr` appears twice",
            ),
            (
                "registries:\n  - name: b\n    static:\n      server: quay.io\n      username: x\n      password: y\n",
                "registries[0].static.password (line 6, column 7): unknown field `password`; fix: a password never sits in the config",
            ),
            ("  \n", "the file is empty; fix:"),
        ];
        for (yaml, want) in cases {
            let err = parse_text(yaml)
                .err()
                .unwrap_or_else(|| panic!("accepted: {yaml}"));
            assert!(err.contains(want), "{yaml:?}: want {want:?} in {err:?}");
            assert!(err.contains("; fix: "), "no fix in {err:?}");
            assert!(!err.contains('\n'), "not one line: {err:?}");
        }
    }

    #[test]
    fn static_password_is_never_inline() {
        let yaml = "registries:\n  - name: hub\n    static: { server: quay.io, username: u, password: p }\nsecrets:\n  - name: s\n    registries: [hub]\n";
        let err = parse_text(yaml).unwrap_err();
        assert!(err.contains("unknown field `password`"), "{err}");
        assert!(err.contains("passwordFile"), "{err}");
    }
}
