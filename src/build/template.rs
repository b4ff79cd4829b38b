//! Templates (`*.j2` overlay files, inline file contents, hostname and repository lines),
//! rendered with minijinja; an undefined variable is an error, never an empty string.

use std::path::Path;
use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior, Value};

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

/// Render `source`, read from `file`, with `ctx`. `what` says which part of the file it is
/// (e.g. `hostname`) when the template is a value inside a TOML file.
pub(crate) fn render(file: &Path, what: Option<&str>, source: &str, ctx: &Value) -> Result<String> {
    env()
        .render_named_str(&file.display().to_string(), source, ctx)
        .map_err(|e| {
            let loc = match (what, e.range(), e.line()) {
                (None, Some(r), _) => Location::at_offset(file, source, r.start),
                (None, None, Some(line)) => Location {
                    path: file.to_path_buf(),
                    line_col: Some((line, 1)),
                },
                _ => Location::path(file),
            };
            let detail = match e.detail() {
                Some(d) => format!("{}: {d}", e.kind()),
                None => e.kind().to_string(),
            };
            match what {
                Some(w) => Error::input(loc, format!("template in {w}: {detail}")),
                None => Error::input(loc, format!("template: {detail}")),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undefined_is_an_error_with_line() {
        let ctx = minijinja::context! { hostname => "h" };
        assert_eq!(
            render(Path::new("t.j2"), None, "{{ hostname }}\n", &ctx).unwrap(),
            "h\n"
        );
        let e = render(Path::new("t.j2"), None, "ok\n{{ nope }}\n", &ctx)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.j2:2:"), "{e}");
        assert!(e.contains("undefined"), "{e}");
        let e = render(Path::new("t.j2"), None, "{{ vars.screen }}", &ctx)
            .unwrap_err()
            .to_string();
        assert!(e.contains("undefined"), "{e}");
    }
}
