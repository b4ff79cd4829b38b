//! Writing results: text or JSON on stdout, diagnostics on stderr. A closed stdout pipe
//! (`ovl list | head`) ends the program quietly with exit code 0.

use std::io::Write;

use crate::error::{EXIT_OK, Error};

/// Print `text` to stdout as is.
pub(crate) fn text(text: &str) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(text.as_bytes()).and_then(|_| o.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(EXIT_OK);
    }
}

/// Print `v` to stdout as pretty JSON and a newline.
pub(crate) fn json(v: &serde_json::Value) {
    text(&format!(
        "{}\n",
        serde_json::to_string_pretty(v).unwrap_or_default()
    ));
}

/// Print `v` to stdout as one line of JSON.
pub(crate) fn json_line(v: &impl serde::Serialize) {
    text(&format!(
        "{}\n",
        serde_json::to_string(v).unwrap_or_default()
    ));
}

/// Print `error: …` on stderr.
pub(crate) fn error(e: &impl std::fmt::Display) {
    eprintln!("error: {e}");
}

/// Print `warning: …` on stderr.
pub(crate) fn warning(w: &impl std::fmt::Display) {
    eprintln!("warning: {w}");
}

/// `e` as `{"error": …, "kind": …}`, the JSON shape of every error.
pub(crate) fn error_json(e: &Error) -> serde_json::Value {
    serde_json::json!({ "error": e.to_string(), "kind": e.kind() })
}
