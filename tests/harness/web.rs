//! The web peers of the status page and `/metrics`: headless Chromium (the page's DOM after
//! its script ran, and screenshots) and Prometheus' reference Python parser.

use std::path::Path;
use std::process::{Command, Stdio};

/// Checks a Prometheus text exposition with `prometheus_client`'s parser (the reference
/// Python client); returns `name{labels} value` lines as it read them.
pub fn prometheus_parse(text: &str) -> String {
    let code = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in f.samples:\n\
        \x20       labels = ','.join(k + '=' + v for k, v in sorted(s.labels.items()))\n\
        \x20       print(f'{s.name}{{{labels}}} {s.value}')\n";
    // Debian's python3, where python3-prometheus-client is installed (not a pyenv one).
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", code])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The page after its script ran for a few seconds, as Chromium's DOM; with `shot`, also a
/// screenshot there. Chromium runs in `ns` (`ip netns exec`).
pub fn chromium(ns: &str, url: &str, scratch: &Path, shot: Option<&Path>) -> String {
    let profile = scratch.join("chromium-profile");
    let mut args = vec![
        "ip".to_owned(),
        "netns".into(),
        "exec".into(),
        ns.into(),
        "timeout".into(),
        "60".into(),
        "chromium".into(),
        "--headless".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--hide-scrollbars".into(),
        format!("--user-data-dir={}", profile.display()),
        "--window-size=1280,420".into(),
        "--virtual-time-budget=6000".into(),
    ];
    match shot {
        Some(p) => args.push(format!("--screenshot={}", p.display())),
        None => args.push("--dump-dom".into()),
    }
    args.push(url.into());
    let out = Command::new(&args[0])
        .args(&args[1..])
        .env("HOME", scratch)
        .stdin(Stdio::null())
        .output()
        .expect("chromium");
    assert!(out.status.success(), "chromium: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
