//! Brace groups in namespace patterns, as a shell expands them.

/// Shell-style brace groups, one level deep: `g-{a,b}*` is `g-a*` and `g-b*` (the glob crate
/// matches `{` literally, which would silently match nothing).
pub(super) fn expand_braces(p: &str) -> Result<Vec<String>, String> {
    let Some(open) = p.find('{') else {
        return if p.contains('}') {
            Err("a '}' without its '{'".into())
        } else {
            Ok(vec![p.to_string()])
        };
    };
    let close = p[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| "a '{' without its '}'".to_string())?;
    let inner = &p[open + 1..close];
    if inner.contains('{') {
        return Err("brace groups cannot nest".into());
    }
    let mut out = Vec::new();
    for tail in expand_braces(&p[close + 1..])? {
        for alt in inner.split(',') {
            out.push(format!("{}{alt}{tail}", &p[..open]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_level_of_braces_expands_and_anything_else_is_refused() {
        assert_eq!(
            expand_braces("g-{a,b}-{x,y}*").unwrap(),
            ["g-a-x*", "g-b-x*", "g-a-y*", "g-b-y*"]
        );
        assert!(expand_braces("g-{a,{b}}").is_err());
        assert!(expand_braces("g-{a").is_err());
        assert!(expand_braces("g-a}").is_err());
    }
}
