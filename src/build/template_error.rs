//! Template errors that name the thing: where a template written as a TOML string is in its
//! profile file (line and column of the string's own line), how a key reads
//! (`files."etc/motd".content`), and an undefined value named with the nearest defined one
//! (`vars.start_ulr` → `vars.start_url`) or the names defined beside it.

use std::path::Path;

use minijinja::{ErrorKind, Value};

use crate::error::Location;

/// 1-based line and column of byte `offset` of `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    Location::at_offset("", text, offset)
        .line_col
        .unwrap_or((1, 1))
}

/// `key` as TOML writes a dotted key: `network.interfaces`, `files."etc/motd".content`,
/// `repositories[0]`.
pub(crate) fn key_name(key: &[&str]) -> String {
    let mut out = String::new();
    for k in key {
        if k.bytes().all(|b| b.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{k}]"));
            continue;
        }
        if !out.is_empty() {
            out.push('.');
        }
        if k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            out.push_str(k);
        } else {
            out.push_str(&format!("{k:?}"));
        }
    }
    out
}

/// Where line `line`, column `col` of the string at `key` of the TOML file `file` is in that
/// file; the file alone when it cannot be read or the key is not found in it.
pub(crate) fn value_location(file: &Path, key: &[&str], line: usize, col: usize) -> Location {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Location::path(file);
    };
    match string_start(&text, key) {
        Some((start, multiline)) => {
            let (l0, c0) = line_col(&text, start);
            let at = match (line, multiline) {
                (1, _) => (l0, c0 + col - 1),
                (l, true) => (l0 + l - 1, col),
                // A one-line string with escaped newlines: its start.
                (_, false) => (l0, c0),
            };
            Location {
                path: file.to_path_buf(),
                line_col: Some(at),
            }
        }
        None => Location::path(file),
    }
}

/// The byte offset in `text` where the contents of the string at `key` begin, and whether it
/// is a multi-line string.
fn string_start(text: &str, key: &[&str]) -> Option<(usize, bool)> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let (first, rest) = key.split_first()?;
    let mut item = doc.as_table().get(first)?;
    for k in rest {
        item = match k.parse::<usize>() {
            Ok(i) if item.as_array().is_some() => item.get(i)?,
            _ => item.get(*k)?,
        };
    }
    let span = item.span()?;
    let raw = text.get(span.start..)?;
    for delim in ["\"\"\"", "'''"] {
        if raw.starts_with(delim) {
            let after = span.start + delim.len();
            let skip = match text.get(after..) {
                Some(t) if t.starts_with("\r\n") => 2,
                Some(t) if t.starts_with('\n') => 1,
                _ => 0,
            };
            return Some((after + skip, true));
        }
    }
    Some((span.start + 1, false))
}

/// The error in words; an undefined value is named, with the nearest defined name.
pub(crate) fn describe(e: &minijinja::Error, ctx: &Value) -> String {
    let detail = e.detail().unwrap_or_default();
    if e.kind() != ErrorKind::UndefinedError {
        return match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        };
    }
    let Some(name) = detail.split('`').nth(1).filter(|n| !n.is_empty()) else {
        return e.kind().to_string();
    };
    let (near, known) = nearest(name, ctx);
    match (near, known) {
        (Some(n), _) => format!("undefined value `{name}`; did you mean `{n}`?"),
        (None, Some(k)) if !k.is_empty() => format!("undefined value `{name}` (defined: {k})"),
        _ => format!("undefined value `{name}`"),
    }
}

/// For an undefined dotted name (`vars.start_ulr`), the closest defined name beside it
/// (`vars.start_url`), and the defined names beside it when they are few.
fn nearest(name: &str, ctx: &Value) -> (Option<String>, Option<String>) {
    if name.contains(['[', ']', '(', ' ']) {
        return (None, None);
    }
    let parts: Vec<&str> = name.split('.').collect();
    let Some((last, parents)) = parts.split_last() else {
        return (None, None);
    };
    let mut v = ctx.clone();
    for p in parents {
        match v.get_attr(p) {
            Ok(x) if !x.is_undefined() => v = x,
            _ => return (None, None),
        }
    }
    let Ok(keys) = v.try_iter() else {
        return (None, None);
    };
    let keys: Vec<String> = keys
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    let prefix: String = parents.iter().map(|p| format!("{p}.")).collect();
    let best = keys
        .iter()
        .map(|k| (strsim::jaro_winkler(last, k), k))
        .filter(|(score, k)| *score >= 0.8 || k.eq_ignore_ascii_case(last))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!("{prefix}{k}"));
    let known = (keys.len() <= 12).then(|| {
        let mut k: Vec<String> = keys.iter().map(|k| format!("{prefix}{k}")).collect();
        k.sort();
        k.join(", ")
    });
    (best, known)
}
