//! An error and its causes as one line for the log: each cause once, first lines only.
//!
//! Library errors repeat their source in their own message (`"auth error: {0}"`) and parse
//! errors append a snippet of the input after a newline. `{e:#}` therefore printed a cause
//! two to four times, and a kubeconfig exec plugin's unparsable output, token included, with
//! every copy. What must never happen here: quote input that followed a message's first line.

use std::error::Error;

/// `outer: cause: root cause`, each message cut at its first line break and stripped of the
/// cause it already repeats, consecutive duplicates dropped.
pub fn one_line(e: &(dyn Error + 'static)) -> String {
    let mut chain: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = cur {
        chain.push(first_line(&err.to_string()).to_string());
        cur = err.source();
    }
    // Strip from each message the text of the next one when it ends with it.
    let mut parts: Vec<String> = Vec::with_capacity(chain.len());
    for (i, msg) in chain.iter().enumerate() {
        let mut own = msg.as_str();
        if let Some(next) = chain.get(i + 1).filter(|n| !n.is_empty())
            && let Some(head) = own.strip_suffix(next.as_str())
        {
            own = head.trim_end_matches([' ', ':', ';', ',']);
        }
        if !own.is_empty() && parts.last().map(String::as_str) != Some(own) {
            parts.push(own.to_string());
        }
    }
    parts.join(": ")
}

fn first_line(s: &str) -> &str {
    s.split(['\n', '\r']).next().unwrap_or_default().trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot build the client: {0}")]
    struct Build(#[source] Auth);

    #[derive(Debug, thiserror::Error)]
    #[error("auth error: {0}")]
    struct Auth(#[source] Parse);

    #[derive(Debug, thiserror::Error)]
    #[error(
        "line 1 column 82: unclosed bracket\n --> <input>:1:66\n1 | {{\"token\":\"S3CRET-T0KEN\"\n  |  ^"
    )]
    struct Parse;

    #[test]
    fn each_cause_once_and_no_input_snippet() {
        let e = Build(Auth(Parse));
        assert!(format!("{:#}", anyhow::Error::new(Build(Auth(Parse)))).contains("S3CRET"));
        let line = one_line(&e);
        assert_eq!(
            line,
            "cannot build the client: auth error: line 1 column 82: unclosed bracket"
        );
        assert!(!line.contains("S3CRET"));
    }

    #[test]
    fn causes_that_do_not_repeat_their_source_are_all_kept() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading the config")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("permission denied"));
        assert_eq!(one_line(&e), "reading the config: permission denied");
    }
}
