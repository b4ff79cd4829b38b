//! Templates (`*.j2` overlay files, inline file contents, hostname and repository lines),
//! rendered with minijinja; an undefined variable is an error, never an empty string. Errors
//! name the place: `file:line:col` in a template file, and for a template written as a TOML
//! string the line of the profile file it is on; an undefined variable is named, with the
//! nearest defined one when there is one (`vars.start_ulr` → `vars.start_url`).

use std::path::Path;
use std::sync::OnceLock;

use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};

use crate::error::{Error, Location, Result};

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        env
    })
}

/// Render the template file `file` (its text is `source`) with `ctx`.
pub(crate) fn render(file: &Path, source: &str, ctx: &Value) -> Result<String> {
    env()
        .render_named_str(&file.display().to_string(), source, ctx)
        .map_err(|e| {
            let loc = match (e.range(), e.line()) {
                (Some(r), _) => Location::at_offset(file, source, r.start),
                (None, Some(line)) => Location {
                    path: file.to_path_buf(),
                    line_col: Some((line, 1)),
                },
                _ => Location::path(file),
            };
            Error::input(loc, format!("template: {}", describe(&e, ctx)))
        })
}

/// Render `source`, the string at `key` of the TOML file `file` (e.g. `["files", "etc/motd",
/// "content"]`; a number indexes an array), with `ctx`. Errors are located in `file`.
pub(crate) fn render_value(file: &Path, key: &[&str], source: &str, ctx: &Value) -> Result<String> {
    env()
        .render_named_str(&file.display().to_string(), source, ctx)
        .map_err(|e| {
            let (line, col) = match (e.range(), e.line()) {
                (Some(r), _) => line_col(source, r.start),
                (None, Some(line)) => (line, 1),
                _ => (1, 1),
            };
            Error::input(
                value_location(file, key, line, col),
                format!("template in {}: {}", key_name(key), describe(&e, ctx)),
            )
        })
}

/// 1-based line and column of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    Location::at_offset("", text, offset)
        .line_col
        .unwrap_or((1, 1))
}

/// `key` as TOML writes a dotted key: `network.interfaces`, `files."etc/motd".content`,
/// `repositories[0]`.
fn key_name(key: &[&str]) -> String {
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
fn describe(e: &minijinja::Error, ctx: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Value {
        minijinja::context! {
            hostname => "h",
            vars => minijinja::context! { start_url => "http://x", screen => "portrait" },
        }
    }

    #[test]
    fn undefined_is_an_error_with_line() {
        let ctx = ctx();
        assert_eq!(
            render(Path::new("t.j2"), "{{ hostname }}\n", &ctx).unwrap(),
            "h\n"
        );
        let e = render(Path::new("t.j2"), "ok\n{{ nope }}\n", &ctx)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.j2:2:4: template: undefined value `nope`"),
            "{e}"
        );
        let e = render(Path::new("t.j2"), "{{ vars.start_ulr }}", &ctx)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "t.j2:1:4: template: undefined value `vars.start_ulr`; did you mean `vars.start_url`?"
        );
        let e = render(Path::new("t.j2"), "{% if vars.zzz %}{% endif %}", &ctx)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("undefined value `vars.zzz` (defined: vars.screen, vars.start_url)"),
            "{e}"
        );
        let e = render(Path::new("t.j2"), "{{ vars.a.b }}", &ctx)
            .unwrap_err()
            .to_string();
        assert!(e.contains("undefined value `vars.a`"), "{e}");
    }

    #[test]
    fn toml_strings_are_located_in_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("S.toml");
        std::fs::write(
            &f,
            "hostname = \"x-{{ mac_sufix }}\"\nrepositories = [\"a\", \"{{ nope }}\"]\n\n[files.\"etc/motd\"]\nmode = \"0644\"\ncontent = \"\"\"\nWelcome\n  to {{ vars.start_ulr }}\n\"\"\"\n",
        )
        .unwrap();
        let ctx = ctx();
        let at = |key: &[&str], src: &str| {
            let e = render_value(&f, key, src, &ctx).unwrap_err().to_string();
            e.strip_prefix(&format!("{}:", f.display()))
                .unwrap()
                .to_string()
        };
        assert_eq!(
            at(
                &["files", "etc/motd", "content"],
                "Welcome\n  to {{ vars.start_ulr }}\n"
            ),
            "8:9: template in files.\"etc/motd\".content: undefined value `vars.start_ulr`; did you mean `vars.start_url`?"
        );
        assert!(at(&["hostname"], "x-{{ mac_sufix }}").starts_with("1:18: template in hostname:"));
        assert!(
            at(&["repositories", "1"], "{{ nope }}")
                .starts_with("2:26: template in repositories[1]:")
        );
        let e = render_value(
            Path::new("/nonexistent.toml"),
            &["hostname"],
            "{{ x }}",
            &ctx,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("/nonexistent.toml: template in hostname:"),
            "{e}"
        );
    }
}
