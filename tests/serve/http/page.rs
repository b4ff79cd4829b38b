//! The status page, its assets and `/metrics` over HTTP (the page in a browser:
//! `tests/serve/dhcp/service.rs`, `tests/boot_chain/zero.rs`).

use super::{Lab, XL_MAC};
use crate::harness::proc::eventually;

/// `/`, `/status.js`, `/status.css` and `/metrics`: the page is server-rendered with every
/// value escaped and a CSP that allows only same-origin scripts; `/metrics` passes
/// Prometheus' parser and counts what was served; `/status` carries archive states and boot
/// progress. (The page in a browser: `tests/serve/dhcp/service.rs`, `tests/boot_chain/zero.rs`.)
#[test]
fn status_page_and_metrics() {
    let lab = Lab::new();
    lab.file("vmlinuz-lts", b"kernel");
    // A hostname with markup in it comes out as text.
    let devices = std::fs::read_to_string(lab.root.join("devices.toml")).unwrap();
    std::fs::write(
        lab.root.join("devices.toml"),
        devices.replacen("kiosk-hall", "<b>hall</b>", 1),
    )
    .unwrap();
    assert!(eventually(10, || {
        String::from_utf8_lossy(&lab.get("/status").body).contains("<b>hall</b>")
    }));
    assert_eq!(lab.get(&format!("/boot.ipxe?mac={XL_MAC}")).status, 200);
    assert_eq!(lab.get("/vmlinuz-lts").status, 200);

    let page = lab.get("/");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(
        page.header("content-security-policy")
            .starts_with("default-src 'self'"),
        "{}",
        page.header("content-security-policy")
    );
    let html = String::from_utf8_lossy(&page.body).into_owned();
    assert!(
        html.contains("&lt;b&gt;hall&lt;/b&gt;") && !html.contains("<b>hall"),
        "{html}"
    );
    assert!(html.contains("<script src=\"/status.js\" defer></script>"));
    assert!(
        !html.contains("<script>") && !html.contains("<style"),
        "no inline script or style"
    );
    let row = html
        .split("<tr ")
        .find(|r| r.contains(&format!("data-mac=\"{XL_MAC}\"")))
        .unwrap();
    assert!(row.contains("data-state=\"booting\""), "{row}");
    assert!(
        row.contains("class=\"stage done\" data-stage=\"kernel\""),
        "{row}"
    );
    assert_eq!(
        lab.get("/status.js").header("content-type"),
        "text/javascript; charset=utf-8"
    );
    assert!(
        lab.get("/status.css")
            .header("content-type")
            .starts_with("text/css")
    );

    let s: serde_json::Value = serde_json::from_slice(&lab.get("/status").body).unwrap();
    let xl = s["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["mac"] == XL_MAC)
        .unwrap()
        .clone();
    assert_eq!(xl["archive"]["state"], "built", "{xl}");
    assert_eq!(
        xl["boot"]["stages"],
        serde_json::json!(["script", "kernel"]),
        "{xl}"
    );

    let m = lab.get("/metrics");
    assert!(
        m.header("content-type")
            .starts_with("text/plain; version=0.0.4")
    );
    let parsed = crate::harness::web::prometheus_parse(&String::from_utf8_lossy(&m.body));
    for sample in [
        "ovl_boot_events_total{kind=script,status=200} 1.0",
        "ovl_boot_events_total{kind=kernel,status=200} 1.0",
        "ovl_devices{} 5.0",
    ] {
        assert!(parsed.contains(sample), "{sample}:\n{parsed}");
    }
    let http_bytes: f64 = parsed
        .lines()
        .find_map(|l| l.strip_prefix("ovl_served_bytes_total{protocol=http} "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(http_bytes >= 6.0, "{parsed}");
}
