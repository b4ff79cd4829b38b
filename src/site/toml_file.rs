//! Reading TOML files into typed settings, with errors that name file, line and column and
//! suggest the nearest key when one is misspelt.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, IoContext, Location, Result};

/// Read `path` and deserialize it; errors carry `path:line:col`.
pub(crate) fn load<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = read_text(path)?;
    parse(path, &text)
}

/// The text of the TOML file `path`. Bytes that are not UTF-8 are invalid input (exit 1)
/// located at the first bad byte, not an I/O error.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    decode(path, std::fs::read(path).at(path)?)
}

/// Like [`read_text`], but a missing file is `None`.
pub(crate) fn read_text_if_exists(path: &Path) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => decode(path, bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// `bytes`, read from `path`, as text.
fn decode(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let text = String::from_utf8_lossy(&bytes[..valid]);
        Error::input(
            Location::at_offset(path, &text, valid),
            "not valid UTF-8 (TOML files are UTF-8 text)",
        )
    })
}

/// Deserialize `text`, the contents of `path`.
pub(crate) fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let loc = match e.span() {
            Some(span) => Location::at_offset(path, text, span.start),
            None => Location::path(path),
        };
        let mut message = describe(e.message());
        if message.contains("is a TOML integer")
            && let Some(literal) = e.span().and_then(|s| text.get(s))
        {
            message.push_str(&quote_hint(literal.trim()));
        }
        Error::input(loc, message)
    })
}

/// The hint for a mode written as a TOML integer: the same digits as a string (`600` →
/// `"0600"`, `0o640` → `"0640"`).
fn quote_hint(literal: &str) -> String {
    let digits = literal
        .strip_prefix("0o")
        .unwrap_or(literal)
        .replace('_', "");
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..b'8').contains(&b)) {
        return String::new();
    }
    format!("; write mode = \"{digits:0>4}\"")
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
    fn invalid_utf8_is_located_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.toml");
        std::fs::write(&p, b"packages = []\nhostname = \"a\xff\"\n").unwrap();
        let e = load::<T>(&p).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_INPUT);
        assert!(
            e.to_string().contains("p.toml:2:14: not valid UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_located() {
        let err =
            parse::<T>(Path::new("p.toml"), "packages = [\n  \"a\",\n  oops\n]\n").unwrap_err();
        assert!(err.to_string().starts_with("p.toml:3:"), "{err}");
    }
}
