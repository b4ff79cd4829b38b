//! Reading TOML files into typed settings, with errors that name file, line and column and
//! suggest the nearest key when one is misspelt.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, IoContext, Location, Result};

/// Read `path` and deserialize it; errors carry `path:line:col`.
pub(crate) fn load<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).at(path)?;
    parse(path, &text)
}

/// Deserialize `text`, the contents of `path`.
pub(crate) fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let loc = match e.span() {
            Some(span) => Location::at_offset(path, text, span.start),
            None => Location::path(path),
        };
        Error::input(loc, describe(e.message()))
    })
}

/// Turn serde's message into one an administrator can act on, adding "did you mean" for
/// unknown keys.
fn describe(message: &str) -> String {
    let message = message.trim().trim_end_matches('.').to_string();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message;
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message;
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let mut best: Option<(f64, &str)> = None;
    for c in &candidates {
        let score = strsim::jaro_winkler(field, c);
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    let list = candidates.join(", ");
    match best {
        Some((score, c)) if score >= 0.8 => {
            format!("unknown key `{field}`; did you mean `{c}`? (known keys: {list})")
        }
        _ if candidates.is_empty() => format!("unknown key `{field}`"),
        _ => format!("unknown key `{field}` (known keys: {list})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        packages: Vec<String>,
        hostname: Option<String>,
    }

    #[test]
    fn unknown_key_suggests() {
        let err =
            parse::<T>(Path::new("p.toml"), "packages = []\npakages = [\"a\"]\n").unwrap_err();
        let s = err.to_string();
        assert!(
            s.starts_with("p.toml:2:1: unknown key `pakages`; did you mean `packages`?"),
            "{s}"
        );
    }

    #[test]
    fn syntax_error_located() {
        let err =
            parse::<T>(Path::new("p.toml"), "packages = [\n  \"a\",\n  oops\n]\n").unwrap_err();
        assert!(err.to_string().starts_with("p.toml:3:"), "{err}");
    }
}
