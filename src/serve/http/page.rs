//! The status page at `/`: one table of every device (inventory devices and devices seen on
//! the network but not in the inventory) with its profile, hostname, address, archive state
//! (built, stale, missing, error), drift when `/status` reports it, last boot event, and the
//! progress of its current boot (DHCP → TFTP → script → kernel → initramfs → config).
//!
//! The HTML is rendered by the server from the `/status` document, every value escaped;
//! `/status.js` (same origin, no inline script: the page's `Content-Security-Policy` is
//! `default-src 'self'`) then fetches `/status` every 2 seconds and redraws the rows with DOM
//! text nodes, keeping the filter (free text and a state menu). `/status.css` styles it.
//! No build step, no external asset.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::build::compare::{self, ArchiveState};
use crate::build::project::{Project, Selection};
use crate::mac::Mac;
use crate::serve::events::{BootEvent, EventKind};

use super::live::Snapshot;
use super::respond::{bytes_response, status_response};
use super::{NO_CACHE, Shared};

/// The page's script, served at `/status.js`.
const SCRIPT: &str = include_str!("page/status.js");
/// The page's style sheet, served at `/status.css`.
const STYLE: &str = include_str!("page/status.css");
/// The page's `Content-Security-Policy`.
const CSP: &str =
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'";

/// The boot stages shown, in order.
pub(crate) const STAGES: [&str; 6] = ["dhcp", "tftp", "script", "kernel", "initramfs", "config"];

/// A pause between two events this long starts a new boot.
const NEW_BOOT_GAP: u64 = 120;
/// A DHCP offer this long after a finished boot starts a new one.
const NEW_BOOT_AFTER_CONFIG: u64 = 60;
/// A boot with no event for this long is no longer "booting".
const BOOTING_FOR: u64 = 600;
/// How long archive states are reused within one project generation.
const STATE_TTL: Duration = Duration::from_secs(5);
/// How long `/status` waits for archive states being computed before it goes on without.
const STATE_WAIT: Duration = Duration::from_millis(500);

/// The stage an event belongs to, and whether it failed there.
fn stage(e: &BootEvent) -> (usize, bool) {
    let failed = e.status >= 400;
    match e.kind {
        EventKind::DhcpOffer | EventKind::DhcpAck => (0, false),
        EventKind::DhcpNak => (0, true),
        EventKind::Ipxe => (1, failed),
        EventKind::Script => (2, failed),
        EventKind::Kernel => (3, failed),
        EventKind::Initramfs | EventKind::Modloop => (4, failed),
        EventKind::ConfigServed => (5, failed),
        EventKind::ConfigRefused | EventKind::ConfigNotFound => (5, true),
    }
}

/// Does `b` start a new boot after `a`? A request for iPXE after the script, or for the
/// script after the kernel, certainly does; a DHCP offer (a DISCOVER: firmware starting over)
/// a minute or more after the current boot got its config (`config_at`) does (the booted
/// system's own DHCP comes sooner); any event after two quiet minutes does.
fn starts_boot(a: &BootEvent, b: &BootEvent, config_at: Option<u64>) -> bool {
    let sa = stage(a).0;
    let since = |t: u64| b.time.saturating_sub(t);
    (b.kind == EventKind::Ipxe && sa >= 2)
        || (b.kind == EventKind::Script && sa >= 3)
        || (b.kind == EventKind::DhcpOffer
            && config_at.is_some_and(|t| since(t) >= NEW_BOOT_AFTER_CONFIG))
        || since(a.time) > NEW_BOOT_GAP
}

/// The progress of the current boot, from a device's events (oldest first): the stages
/// reached, the state (`booting`, `booted`, `failed`, `idle`, or `none` without events) and
/// the last event. Where the current boot starts: see `starts_boot`.
pub(crate) fn progress(events: &[BootEvent], now: u64) -> Value {
    let Some(last) = events.last() else {
        return json!({ "state": "none", "stages": [], "last": null });
    };
    let mut start = 0;
    let mut config_at = None;
    for (i, pair) in events.windows(2).enumerate() {
        if stage(&pair[0]).0 == 5 {
            config_at = Some(pair[0].time);
        }
        if starts_boot(&pair[0], &pair[1], config_at) {
            start = i + 1;
            config_at = None;
        }
    }
    let mut reached = [false; STAGES.len()];
    let mut failed = None;
    for e in &events[start..] {
        let (s, bad) = stage(e);
        if bad {
            failed = Some(STAGES[s]);
        } else {
            reached[s] = true;
        }
    }
    let state = if reached[5] {
        "booted"
    } else if failed.is_some() {
        "failed"
    } else if now.saturating_sub(last.time) <= BOOTING_FOR {
        "booting"
    } else {
        "idle"
    };
    let stages: Vec<&str> = STAGES
        .iter()
        .zip(reached)
        .filter_map(|(s, r)| r.then_some(*s))
        .collect();
    json!({
        "state": state,
        "stages": stages,
        "failed_at": failed,
        "since": events[start].time,
        "last": { "kind": last.kind, "file": last.file, "status": last.status,
                  "time": last.time, "date": last.date },
    })
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Archive states (built, stale, missing, error) of every device, computed by planning each
/// device and comparing with its published archive, and reused for a few seconds within one
/// project generation (so that `/status` every 2 s does not rebuild every archive each time).
/// The computation runs on a thread of its own, one at a time: `/status` waits for it a
/// moment (a small site's states are there at once) and otherwise goes on with the last
/// states of the same generation, or none, so a large site never holds `/status` back.
#[derive(Debug, Default)]
pub(crate) struct ArchiveStates(Arc<(Mutex<StatesSlot>, Condvar)>);

/// What [`ArchiveStates`] holds.
#[derive(Debug, Default)]
struct StatesSlot {
    /// The last states computed.
    last: Option<StatesAt>,
    /// Whether a computation is running.
    computing: bool,
}

/// Archive states computed for one generation at one instant.
type StatesAt = (u64, Instant, Arc<BTreeMap<Mac, &'static str>>);

impl ArchiveStates {
    /// The states for the project of `snap`: fresh ones, or after at most [`STATE_WAIT`] the
    /// last ones of its generation, or none yet. Blocking (for at most that wait).
    pub(crate) fn get(&self, snap: &Arc<Snapshot>) -> Option<Arc<BTreeMap<Mac, &'static str>>> {
        let (slot, done) = &*self.0;
        let generation = snap.generation;
        let mut g = slot.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = |g: &StatesSlot| match &g.last {
            Some((gen_, at, states)) if *gen_ == generation && at.elapsed() < STATE_TTL => {
                Some(Arc::clone(states))
            }
            _ => None,
        };
        if let Some(states) = fresh(&g) {
            return Some(states);
        }
        if !g.computing {
            g.computing = true;
            let (inner, snap) = (Arc::clone(&self.0), Arc::clone(snap));
            std::thread::spawn(move || {
                let states = Arc::new(compute(&snap.project));
                let (slot, done) = &*inner;
                let mut g = slot.lock().unwrap_or_else(|p| p.into_inner());
                g.last = Some((snap.generation, Instant::now(), states));
                g.computing = false;
                done.notify_all();
            });
        }
        let (g, _) = done
            .wait_timeout_while(g, STATE_WAIT, |g| g.computing)
            .unwrap_or_else(|p| p.into_inner());
        match &g.last {
            Some((gen_, _, states)) if *gen_ == generation => Some(Arc::clone(states)),
            _ => None,
        }
    }
}

fn compute(p: &Project) -> BTreeMap<Mac, &'static str> {
    let Ok(specs) = p.select(&Selection {
        all: true,
        ..Default::default()
    }) else {
        return BTreeMap::new();
    };
    let cache = p.read_layers(&specs);
    specs
        .iter()
        .map(|spec| {
            let state = match p.plan(spec, &cache) {
                Ok(plan) => compare::archive_state(p, &plan).unwrap_or(ArchiveState::Stale),
                Err(_) => ArchiveState::Failed,
            };
            (spec.mac, state.name())
        })
        .collect()
}

/// Escapes text for HTML content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as display text: strings as they are, null as an empty string.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One table row: the cells the script also draws (see `status.js`, `row`).
fn row(out: &mut String, d: &Value, known: bool) {
    let boot = &d["boot"];
    let state = text(&boot["state"]);
    let archive = if known {
        text(&d["archive"]["state"])
    } else {
        "unknown device".into()
    };
    let ip = match (&d["ip"], &d["lease"]) {
        (Value::Null, l) => text(l),
        (ip, _) => text(ip),
    };
    let last = &boot["last"];
    let last = if last.is_null() {
        String::new()
    } else {
        format!(
            "{} {} ({})",
            text(&last["kind"]),
            text(&last["file"]),
            text(&last["date"])
        )
    };
    let _ = write!(
        out,
        "<tr data-mac=\"{mac}\" data-state=\"{st}\" data-archive=\"{ar}\"><td class=\"mac\">{mac}</td>\
         <td>{host}</td><td>{prof}</td><td>{ip}</td><td class=\"archive {ar}\">{ar}</td><td>{drift}</td>\
         <td class=\"boot {st}\">{st}</td><td class=\"progress\">",
        mac = escape(&text(&d["mac"])),
        st = escape(&state),
        ar = escape(&archive),
        host = escape(&text(&d["hostname"])),
        prof = escape(&text(&d["profile"])),
        ip = escape(&ip),
        drift = escape(&text(&d["drift"])),
    );
    let reached: Vec<String> = boot["stages"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    let failed = text(&boot["failed_at"]);
    for s in STAGES {
        let class = if reached.iter().any(|r| r == s) {
            "done"
        } else if failed == s {
            "failed"
        } else {
            "todo"
        };
        let _ = write!(
            out,
            "<span class=\"stage {class}\" data-stage=\"{s}\">{s}</span>"
        );
    }
    let _ = write!(out, "</td><td class=\"last\">{}</td></tr>", escape(&last));
}

/// The boot files' table: name, role, size, version and state (`ok`, `missing`, or what
/// else is wrong), the cells the script also draws (see `status.js`, `bootFile`).
fn boot_files(out: &mut String, files: &Value) {
    out.push_str(
        "<h2>boot files</h2>\n<table id=\"boot-files\"><thead><tr><th>file</th><th>role</th>\
         <th>size</th><th>version</th><th>state</th></tr></thead><tbody>\n",
    );
    for f in files.as_array().into_iter().flatten() {
        let state = match &f["problem"] {
            Value::Null => "ok".to_string(),
            p => text(p),
        };
        let class = match state.as_str() {
            "ok" | "missing" => state.as_str(),
            _ => "problem",
        };
        let _ = writeln!(
            out,
            "<tr data-file=\"{name}\" data-missing=\"{missing}\"><td class=\"file\">{name}</td>\
             <td>{role}</td><td>{size}</td><td>{version}</td><td class=\"bootfile {class}\">{state}</td></tr>",
            name = escape(&text(&f["name"])),
            missing = f["missing"].as_bool().unwrap_or(false),
            role = escape(&text(&f["role"])),
            size = escape(&text(&f["size"])),
            version = escape(&text(&f["version"])),
            state = escape(&state),
        );
    }
    out.push_str("</tbody></table>\n");
}

/// The page for the `/status` document `doc`.
fn html(doc: &Value) -> String {
    let server = &doc["server"];
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>ovl status</title><link rel=\"stylesheet\" href=\"/status.css\">\
         <script src=\"/status.js\" defer></script></head><body>\n",
    );
    let _ = writeln!(
        out,
        "<header><h1>ovl</h1><span id=\"site\">{}</span> <span id=\"version\">ovl {}</span> \
         <span id=\"updated\"></span><p id=\"reload-error\">{}</p></header>",
        escape(&text(&server["site"])),
        escape(&text(&server["version"])),
        escape(&text(&server["reload_error"])),
    );
    out.push_str(
        "<form id=\"filters\"><input id=\"filter\" type=\"search\" placeholder=\"filter: MAC, hostname, profile, address\" \
         aria-label=\"filter\"> <select id=\"state\" aria-label=\"state\"><option value=\"\">all</option>\
         <option>booting</option><option>booted</option><option>failed</option><option>idle</option>\
         <option>none</option><option value=\"stale\">stale archive</option></select> \
         <span id=\"counts\"></span></form>\n<table id=\"devices\"><thead><tr><th>MAC</th>\
         <th>hostname</th><th>profile</th><th>IP</th><th>archive</th><th>drift</th><th>boot</th>\
         <th>progress</th><th>last boot event</th></tr></thead><tbody>\n",
    );
    for d in doc["devices"].as_array().into_iter().flatten() {
        row(&mut out, d, true);
    }
    for d in doc["other_devices"].as_array().into_iter().flatten() {
        row(&mut out, d, false);
    }
    out.push_str("</tbody></table>\n");
    boot_files(&mut out, &doc["boot_files"]);
    out.push_str("</body></html>\n");
    out
}

/// The generated pages besides `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Page {
    /// `/`: the status page.
    Html,
    /// `/status.js`.
    Script,
    /// `/status.css`.
    Style,
    /// `/metrics`.
    Metrics,
}

/// `/`, `/status.js`, `/status.css`, `/metrics`, for a request that arrived at `arrived`.
/// The page is made from the kept `/status` document (`status::current`), once per document.
pub(super) async fn respond(
    st: &Arc<Shared>,
    req: Request,
    which: Page,
    arrived: Instant,
) -> Response<Body> {
    let (body, content_type) = match which {
        Page::Script => (
            Bytes::from_static(SCRIPT.as_bytes()),
            "text/javascript; charset=utf-8",
        ),
        Page::Style => (
            Bytes::from_static(STYLE.as_bytes()),
            "text/css; charset=utf-8",
        ),
        Page::Metrics => {
            let s = Arc::clone(st);
            let made = tokio::task::spawn_blocking(move || {
                super::metrics::render(&s.metrics, &s.events, &s.live)
            })
            .await;
            let Ok(body) = made else {
                return status_response(StatusCode::INTERNAL_SERVER_ERROR);
            };
            (Bytes::from(body), super::metrics::CONTENT_TYPE)
        }
        Page::Html => {
            let Some(doc) = super::status::current(st, arrived).await else {
                return status_response(StatusCode::INTERNAL_SERVER_ERROR);
            };
            let body = match doc.html.get() {
                Some(b) => b.clone(),
                None => {
                    let made = tokio::task::spawn_blocking(move || {
                        doc.html
                            .get_or_init(|| Bytes::from(html(&doc.value)))
                            .clone()
                    })
                    .await;
                    let Ok(body) = made else {
                        return status_response(StatusCode::INTERNAL_SERVER_ERROR);
                    };
                    body
                }
            };
            (body, "text/html; charset=utf-8")
        }
    };
    let mut r = bytes_response(
        req.method(),
        req.headers(),
        body,
        content_type,
        Some(NO_CACHE),
    );
    if which == Page::Html {
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        r.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, time: u64, status: u16) -> BootEvent {
        let mut e = BootEvent::now(kind, "f".into(), "10.0.0.1".parse().unwrap(), status, 1, 1);
        e.time = time;
        e
    }

    #[test]
    fn progress_follows_the_current_boot() {
        use EventKind::*;
        let t = 1000;
        let evs = vec![
            ev(DhcpAck, t, 0),
            ev(Ipxe, t + 1, 0),
            ev(DhcpAck, t + 2, 0),
            ev(Script, t + 3, 200),
            ev(Kernel, t + 4, 200),
        ];
        let p = progress(&evs, t + 5);
        assert_eq!(p["state"], "booting");
        assert_eq!(p["stages"], json!(["dhcp", "tftp", "script", "kernel"]));
        let mut done = evs.clone();
        done.push(ev(Initramfs, t + 5, 200));
        done.push(ev(DhcpAck, t + 9, 0));
        done.push(ev(ConfigServed, t + 10, 200));
        assert_eq!(progress(&done, t + 11)["state"], "booted");
        // The booted system's own DHCP does not start a new boot.
        done.push(ev(DhcpOffer, t + 25, 0));
        done.push(ev(DhcpAck, t + 25, 0));
        assert_eq!(progress(&done, t + 26)["state"], "booted");
        // A firmware DISCOVER a while later does.
        done.push(ev(DhcpOffer, t + 100, 0));
        let p = progress(&done, t + 101);
        assert_eq!(p["stages"], json!(["dhcp"]));
        assert_eq!(p["state"], "booting");
        assert_eq!(progress(&done, t + 5000)["state"], "idle");
        // iPXE fetched again after the script: a new boot at once.
        let again = vec![
            ev(Script, t, 200),
            ev(Kernel, t + 1, 200),
            ev(Ipxe, t + 5, 0),
        ];
        assert_eq!(progress(&again, t + 6)["stages"], json!(["tftp"]));
        let bad = vec![ev(Script, t, 200), ev(Kernel, t + 1, 404)];
        let p = progress(&bad, t + 2);
        assert_eq!(p["state"], "failed");
        assert_eq!(p["failed_at"], "kernel");
        assert_eq!(progress(&[], t)["state"], "none");
    }

    #[test]
    fn everything_is_escaped() {
        let doc = json!({
            "server": { "site": "/s<i>te", "version": "1" },
            "devices": [{ "mac": "52:54:00:00:00:01", "hostname": "<script>alert(1)</script>",
                "profile": "a\"b", "ip": null, "lease": "10.0.0.9",
                "archive": { "state": "stale" },
                "boot": progress(&[], 0) }],
            "other_devices": [{ "mac": "<img src=x>", "boot": progress(&[], 0) }],
        });
        let page = html(&doc);
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("a&quot;b"));
        assert!(page.contains("10.0.0.9"));
        assert!(page.contains("data-archive=\"stale\""));
        assert_eq!(page.matches("<tr data-mac").count(), 2);
    }
}
