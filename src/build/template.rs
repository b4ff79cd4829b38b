//! Templates (`*.j2` overlay files, inline file contents, hostname and repository lines),
//! rendered with minijinja; an undefined variable is an error, never an empty string. Every
//! render has a work limit ([`FUEL`] instructions) and an output limit ([`MAX_OUTPUT`]), so a
//! template such as nested `range(100000)` loops is an error naming its file, not a hang; one
//! that keeps running out of fuel is not run again for every device ([`RUNAWAY_AFTER`]).
//! Errors name the place — `file:line:col` in a template file, the line and column in the
//! profile file for a template written as a TOML string — and an undefined value by its name,
//! with the nearest defined one ([`template_error`](crate::build::template_error)).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Mutex;

use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};

use crate::build::template_error::{describe, key_name, line_col, value_location};
use crate::error::{Error, Location, Result};

/// Instructions one render may run (minijinja's fuel): far beyond what a configuration file
/// needs (a loop printing 10,000 numbers takes about 70,000), and about 15 ms of work when spent.
pub(crate) const FUEL: u64 = 1_000_000;
/// Bytes one render may produce: 32 MiB.
pub(crate) const MAX_OUTPUT: usize = 32 << 20;
/// After a template ran out of fuel for this many devices and rendered for none, the others
/// get the same error without running it: a runaway template in a 50,000-device site costs
/// three renders, not 50,000 (about 15 ms each).
const RUNAWAY_AFTER: u32 = 3;

/// Templates that ran out of fuel, by [`cache_key`]: how often, whether one ever rendered, and the
/// error to repeat. Forgotten when a project is loaded ([`forget_runaways`]), so a fix made
/// in the TOML files (a smaller loop bound in `vars`) is tried afresh.
#[derive(Default)]
struct Runaway {
    failures: u32,
    rendered: bool,
    error: Option<Error>,
}

static RUNAWAYS: Mutex<Option<HashMap<String, Runaway>>> = Mutex::new(None);

/// Forget which templates ran out of fuel (called when a project is loaded).
pub(crate) fn forget_runaways() {
    if let Ok(mut r) = RUNAWAYS.lock() {
        *r = None;
    }
}

/// The error to repeat for the template `key`, if it ran out of fuel often enough and never
/// rendered.
fn known_runaway(key: &str) -> Option<Error> {
    let r = RUNAWAYS.lock().ok()?;
    let entry = r.as_ref()?.get(key)?;
    (!entry.rendered && entry.failures >= RUNAWAY_AFTER)
        .then(|| entry.error.clone())
        .flatten()
}

/// Note how the template `key` ended: rendered, or out of fuel with `error`.
fn note_runaway(key: &str, out_of_fuel: Option<&Error>) {
    let Ok(mut r) = RUNAWAYS.lock() else { return };
    match out_of_fuel {
        Some(e) => {
            let entry = r
                .get_or_insert_with(HashMap::new)
                .entry(key.to_string())
                .or_default();
            entry.failures += 1;
            entry.error.get_or_insert_with(|| e.clone());
        }
        None => {
            if let Some(entry) = r.as_mut().and_then(|m| m.get_mut(key)) {
                entry.rendered = true;
            }
        }
    }
}

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
fn cache_key(file: &Path, what: Option<&str>, source: &str) -> String {
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

/// Render the template file `file` (its text is `source`) with `ctx`.
pub(crate) fn render(file: &Path, source: &str, ctx: &Value) -> Result<String> {
    run(file, None, source, ctx)
}

/// Render `source`, the string at `key` of the TOML file `file` (e.g. `["files", "etc/motd",
/// "content"]`; a number indexes an array), with `ctx`. Errors are located in `file`.
pub(crate) fn render_value(file: &Path, key: &[&str], source: &str, ctx: &Value) -> Result<String> {
    run(file, Some(key), source, ctx)
}

/// Render `source`, read from `file` (at `key` when it is a value inside a TOML file).
fn run(file: &Path, key: Option<&[&str]>, source: &str, ctx: &Value) -> Result<String> {
    let what = key.map(key_name);
    let name = cache_key(file, what.as_deref(), source);
    if let Some(e) = known_runaway(&name) {
        return Err(e);
    }
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
        Ok(()) => {
            note_runaway(&name, None);
            String::from_utf8(out.bytes)
                .map_err(|_| Error::at_path(file, "template output is not valid UTF-8"))
        }
        Err(e) => {
            let error = located(file, key, source, &e, out.too_large, ctx);
            if e.kind() == ErrorKind::OutOfFuel {
                note_runaway(&name, Some(&error));
            }
            Err(error)
        }
    }
}

/// A render error as an input error at its place: the line and column in a template file, or
/// in the TOML file that holds the template at `key`.
fn located(
    file: &Path,
    key: Option<&[&str]>,
    source: &str,
    e: &minijinja::Error,
    too_large: bool,
    ctx: &Value,
) -> Error {
    let detail = if too_large {
        format!("output larger than {MAX_OUTPUT} bytes")
    } else if e.kind() == ErrorKind::OutOfFuel {
        format!("too much work (more than {FUEL} instructions); is a loop running away?")
    } else {
        describe(e, ctx)
    };
    match key {
        None => {
            let loc = match (e.range(), e.line()) {
                (Some(r), _) => Location::at_offset(file, source, r.start),
                (None, Some(line)) => Location {
                    path: file.to_path_buf(),
                    line_col: Some((line, 1)),
                },
                _ => Location::path(file),
            };
            Error::input(loc, format!("template: {detail}"))
        }
        Some(k) => {
            let (line, col) = match (e.range(), e.line()) {
                (Some(r), _) => line_col(source, r.start),
                (None, Some(line)) => (line, 1),
                _ => (1, 1),
            };
            Error::input(
                value_location(file, k, line, col),
                format!("template in {}: {detail}", key_name(k)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runaway_template_is_run_only_a_few_times() {
        let loops =
            "{% for i in range(100000) %}{% for j in range(vars.n) %}x{% endfor %}{% endfor %}";
        let file = Path::new("runaway-test.j2");
        let big = minijinja::context! { vars => minijinja::context! { n => 100000 } };
        let first = render(file, loops, &big).unwrap_err().to_string();
        for _ in 1..RUNAWAY_AFTER {
            assert_eq!(render(file, loops, &big).unwrap_err().to_string(), first);
        }
        // Now known: even a device for which it would render gets the error at once.
        let small = minijinja::context! { vars => minijinja::context! { n => 0 } };
        let t = std::time::Instant::now();
        assert_eq!(render(file, loops, &small).unwrap_err().to_string(), first);
        assert!(t.elapsed() < std::time::Duration::from_millis(5));
        // Until a project is loaded again.
        forget_runaways();
        assert_eq!(render(file, loops, &small).unwrap(), "");
    }

    #[test]
    fn a_long_but_finite_loop_renders() {
        let ctx = minijinja::context! {};
        let text = "{% for i in range(10000) %}{{ i }}\n{% endfor %}";
        let out = render(Path::new("t.j2"), text, &ctx).unwrap();
        assert_eq!(out.lines().count(), 10000);
    }

    #[test]
    fn runaway_templates_stop_with_their_file() {
        let ctx = minijinja::context! {};
        let loops =
            "a\n{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let e = render(Path::new("t.j2"), loops, &ctx)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.j2:2:"), "{e}");
        assert!(e.contains("too much work"), "{e}");
        let big = "{% for i in range(3) %}{{ 'x' * 20000000 }}{% endfor %}";
        let e = render_value(Path::new("t.j2"), &["hostname"], big, &ctx)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.j2: template in hostname: output larger than"),
            "{e}"
        );
    }

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
