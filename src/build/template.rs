//! Templates (`*.j2` overlay files, inline file contents, hostname and repository lines),
//! rendered with minijinja; an undefined variable is an error, never an empty string. Every
//! render has a work limit ([`FUEL`] instructions) and an output limit ([`MAX_OUTPUT`]), so a
//! template such as nested `range(100000)` loops is an error naming its file, not a hang.

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::path::Path;

use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};

use crate::error::{Error, Location, Result};

/// Instructions one render may run (minijinja's fuel): far beyond what a configuration file
/// needs (a loop printing 10,000 numbers takes about 70,000), and about 15 ms of work when spent.
pub(crate) const FUEL: u64 = 1_000_000;
/// Bytes one render may produce: 32 MiB.
pub(crate) const MAX_OUTPUT: usize = 32 << 20;

/// Templates compiled per thread: one `*.j2` file or TOML value is rendered for every device,
/// and is compiled once. Keyed by file, part and a hash of the source, so an edited template
/// is compiled anew; cleared when it holds [`MAX_CACHED`] templates.
struct Compiled {
    env: Environment<'static>,
    count: usize,
}

/// Compiled templates kept per thread.
const MAX_CACHED: usize = 512;

thread_local! {
    static COMPILED: RefCell<Compiled> = RefCell::new(Compiled {
        env: new_env(),
        count: 0,
    });
}

fn new_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env
}

/// The cache key of `source`, read from `file` (`what` part of it).
fn key(file: &Path, what: Option<&str>, source: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut h);
    format!(
        "{}\u{0}{}\u{0}{:016x}",
        file.display(),
        what.unwrap_or(""),
        h.finish()
    )
}

/// The rendered text, refusing to grow past [`MAX_OUTPUT`].
#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    too_large: bool,
}

impl std::io::Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT {
            self.too_large = true;
            return Err(std::io::Error::other("output too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Render `source`, read from `file`, with `ctx`. `what` says which part of the file it is
/// (e.g. `hostname`) when the template is a value inside a TOML file.
pub(crate) fn render(file: &Path, what: Option<&str>, source: &str, ctx: &Value) -> Result<String> {
    let name = key(file, what, source);
    let mut out = Output::default();
    let rendered = COMPILED.with(|cell| {
        let mut c = cell.borrow_mut();
        if c.env.get_template(&name).is_err() {
            if c.count >= MAX_CACHED {
                c.env.clear_templates();
                c.count = 0;
            }
            c.env.add_template_owned(name.clone(), source.to_string())?;
            c.count += 1;
        }
        c.env
            .get_template(&name)?
            .render_captured_to(ctx, &mut out)
            .map(|_| ())
    });
    match rendered {
        Ok(()) => String::from_utf8(out.bytes)
            .map_err(|_| Error::at_path(file, "template output is not valid UTF-8")),
        Err(e) => Err(located(file, what, source, &e, out.too_large)),
    }
}

/// A render error as an input error at the template's file (and line, for a file template).
fn located(
    file: &Path,
    what: Option<&str>,
    source: &str,
    e: &minijinja::Error,
    too_large: bool,
) -> Error {
    let loc = match (what, e.range(), e.line()) {
        (None, Some(r), _) => Location::at_offset(file, source, r.start),
        (None, None, Some(line)) => Location {
            path: file.to_path_buf(),
            line_col: Some((line, 1)),
        },
        _ => Location::path(file),
    };
    let detail = if too_large {
        format!("output larger than {MAX_OUTPUT} bytes")
    } else if e.kind() == ErrorKind::OutOfFuel {
        format!("too much work (more than {FUEL} instructions); is a loop running away?")
    } else {
        match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        }
    };
    match what {
        Some(w) => Error::input(loc, format!("template in {w}: {detail}")),
        None => Error::input(loc, format!("template: {detail}")),
    }
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

    #[test]
    fn a_long_but_finite_loop_renders() {
        let ctx = minijinja::context! {};
        let text = "{% for i in range(10000) %}{{ i }}\n{% endfor %}";
        let out = render(Path::new("t.j2"), None, text, &ctx).unwrap();
        assert_eq!(out.lines().count(), 10000);
    }

    #[test]
    fn runaway_templates_stop_with_their_file() {
        let ctx = minijinja::context! {};
        let loops =
            "a\n{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let e = render(Path::new("t.j2"), None, loops, &ctx)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.j2:2:"), "{e}");
        assert!(e.contains("too much work"), "{e}");
        let big = "{% for i in range(3) %}{{ 'x' * 20000000 }}{% endfor %}";
        let e = render(Path::new("t.j2"), Some("hostname"), big, &ctx)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.j2: template in hostname: output larger than"),
            "{e}"
        );
    }
}
