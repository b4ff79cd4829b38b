//! Writing results: text or JSON on stdout, diagnostics on stderr. A closed stdout pipe
//! (`ovl list | head`) ends the program quietly with exit code 0.
//!
//! Every JSON object printed carries `"schema": SCHEMA` (`docs/json.md`); errors met for
//! several devices are printed once, with the devices they concern.

use std::io::Write;

use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{EXIT_OK, Error, JsonError};
use crate::mac::Mac;

/// The version of the JSON output's shape, in every object printed as `"schema"`. It changes
/// only when a key is renamed or removed, or a value changes meaning; new keys may appear.
pub(crate) const SCHEMA: u32 = 1;

/// Beyond this many, the MACs of one error are cut short in text (JSON lists them all).
const MACS_SHOWN: usize = 8;

/// Print `text` to stdout as is.
pub(crate) fn text(text: &str) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(text.as_bytes()).and_then(|_| o.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(EXIT_OK);
    }
}

/// `v` as a JSON value with `"schema"` added when it is an object.
fn with_schema(v: &impl Serialize) -> Value {
    let mut v = serde_json::to_value(v).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("schema".into(), json!(SCHEMA));
    }
    v
}

/// Print `v` to stdout as pretty JSON (with `"schema"`) and a newline.
pub(crate) fn json(v: &impl Serialize) {
    text(&format!(
        "{}\n",
        serde_json::to_string_pretty(&with_schema(v)).unwrap_or_default()
    ));
}

/// Print `v` to stdout as one line of JSON (with `"schema"`).
pub(crate) fn json_line(v: &impl Serialize) {
    text(&format!(
        "{}\n",
        serde_json::to_string(&with_schema(v)).unwrap_or_default()
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

/// What a failed command prints on stdout with `--json`: `{"schema", "error": {…}}`.
pub(crate) fn error_json(e: &Error) -> Value {
    json!({ "error": JsonError::new(e, None) })
}

/// One error and every device it was met for (none: an error of the site as a whole).
#[derive(Debug)]
pub(crate) struct ErrorGroup<'a> {
    /// The error as met for the first device.
    pub(crate) error: &'a Error,
    /// The devices, in the order met.
    pub(crate) macs: Vec<Mac>,
}

/// Errors grouped by their text, in the order first met: an error shared by many devices
/// (a template of a common overlay, an unreadable layer) becomes one group.
pub(crate) fn group_errors<'a>(
    items: impl IntoIterator<Item = (Option<Mac>, &'a Error)>,
) -> Vec<ErrorGroup<'a>> {
    let mut groups: Vec<ErrorGroup<'a>> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (mac, e) in items {
        let i = *index.entry(e.to_string()).or_insert_with(|| {
            groups.push(ErrorGroup {
                error: e,
                macs: Vec::new(),
            });
            groups.len() - 1
        });
        if let Some(m) = mac {
            groups[i].macs.push(m);
        }
    }
    groups
}

/// `e` followed by the devices it concerns: nothing when it names its one device itself,
/// `(device M)`, or `(N devices: M1, M2, … and K more)`.
pub(crate) fn group_text(g: &ErrorGroup) -> String {
    let e = g.error;
    match g.macs.as_slice() {
        [] => e.to_string(),
        [m] if e.mac() == Some(m.to_string().as_str()) => e.to_string(),
        macs => format!("{e} ({})", macs_text(macs)),
    }
}

/// `device M`, or `N devices: M1, M2, … and K more` (at most [`MACS_SHOWN`] named).
pub(crate) fn macs_text(macs: &[Mac]) -> String {
    if let [m] = macs {
        return format!("device {m}");
    }
    let shown: Vec<String> = macs.iter().take(MACS_SHOWN).map(Mac::to_string).collect();
    let more = macs.len().saturating_sub(MACS_SHOWN);
    format!(
        "{} devices: {}{}",
        macs.len(),
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

/// Print each group once on stderr: `error: … (N devices: …)`.
pub(crate) fn errors(groups: &[ErrorGroup]) {
    for g in groups {
        error(&group_text(g));
    }
}

/// The exit code of the worst error among the groups; `None` when there is none.
pub(crate) fn worst_exit(groups: &[ErrorGroup]) -> Option<i32> {
    groups.iter().map(|g| g.error.exit_code()).max()
}

/// The groups as JSON: each error's object with `"devices"`, every MAC it was met for.
pub(crate) fn errors_json(groups: &[ErrorGroup]) -> Value {
    Value::Array(
        groups
            .iter()
            .map(|g| {
                let mut v =
                    serde_json::to_value(JsonError::new(g.error, None)).unwrap_or(Value::Null);
                v["devices"] = json!(g.macs);
                v
            })
            .collect(),
    )
}

/// `{"created": n, …}` with every word of `order`, zero counts included.
pub(crate) fn counts_json<T: Copy + Eq>(
    states: impl IntoIterator<Item = T>,
    order: &[T],
    name: impl Fn(T) -> &'static str,
) -> Value {
    let states: Vec<T> = states.into_iter().collect();
    let mut m = serde_json::Map::new();
    for s in order {
        m.insert(
            name(*s).into(),
            json!(states.iter().filter(|x| *x == s).count()),
        );
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Location;

    #[test]
    fn one_error_of_many_devices_is_printed_once() {
        let macs: Vec<Mac> = (1..=10u8).map(|i| Mac([2, 0, 0, 0, 0, i])).collect();
        let shared = Error::input(
            Location {
                path: "overlays/base/etc/app.conf.j2".into(),
                line_col: Some((2, 8)),
            },
            "template: undefined value `vars.x`",
        );
        let own = Error::device(macs[0], "symlink loop");
        let mut items: Vec<(Option<Mac>, &Error)> =
            macs.iter().map(|m| (Some(*m), &shared)).collect();
        items.insert(1, (Some(macs[0]), &own));
        let groups = group_errors(items);
        assert_eq!(groups.len(), 2);
        assert_eq!(
            group_text(&groups[0]),
            "overlays/base/etc/app.conf.j2:2:8: template: undefined value `vars.x` (10 devices: \
             02:00:00:00:00:01, 02:00:00:00:00:02, 02:00:00:00:00:03, 02:00:00:00:00:04, \
             02:00:00:00:00:05, 02:00:00:00:00:06, 02:00:00:00:00:07, 02:00:00:00:00:08 and 2 more)"
        );
        assert_eq!(
            group_text(&groups[1]),
            "device 02:00:00:00:00:01: symlink loop"
        );
        let j = errors_json(&groups);
        assert_eq!(j[0]["devices"].as_array().unwrap().len(), 10);
        assert_eq!(j[0]["line"], 2);
        assert_eq!(j[0]["column"], 8);
        assert_eq!(j[1]["mac"], "02:00:00:00:00:01");
    }

    #[test]
    fn every_object_carries_the_schema() {
        let v = with_schema(&json!({"a": 1}));
        assert_eq!(v["schema"], SCHEMA);
        let e = error_json(&Error::Usage("bad".into()));
        assert_eq!(e["error"]["kind"], "usage");
        assert_eq!(e["error"]["file"], Value::Null);
        assert_eq!(with_schema(&e)["schema"], SCHEMA);
    }
}
