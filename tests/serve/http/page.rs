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

/// `/status` and the page list the boot files the site names (Alpine's three of the flavor
/// and, with DHCP on, the iPXE binaries it hands out): size, the version `ovl fetch` recorded
/// (`unknown` otherwise), and missing or broken ones flagged; a file put in place shows up
/// within the kept document's age.
#[test]
fn status_lists_the_boot_files_with_size_and_version() {
    let lab = Lab::with("dhcp = \"proxy\"", |_| {});
    lab.file("vmlinuz-lts", b"kernel");
    lab.file("initramfs-lts", b"initramfs!");
    lab.file("undionly.kpxe", b"");
    // What `ovl fetch` records for a file it placed: valid while size and mtime match.
    let kernel = std::fs::metadata(lab.root.join("vmlinuz-lts")).unwrap();
    let mtime_ns = kernel
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    lab.file(
        ".ovl-state/fetch.json",
        format!(
            "{{\"files\": {{\"vmlinuz-lts\": {{\"sha256\": \"{}\", \"size\": 6, \
             \"mtime_ns\": {mtime_ns}, \"source\": \"test\", \"version\": \"3.20.3\"}}}}}}",
            "ab".repeat(32)
        )
        .as_bytes(),
    );

    let s: serde_json::Value = serde_json::from_slice(&lab.get("/status").body).unwrap();
    let files = s["boot_files"].as_array().expect("boot_files").clone();
    let names: Vec<&str> = files.iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "vmlinuz-lts",
            "initramfs-lts",
            "modloop-lts",
            "undionly.kpxe",
            "ipxe.efi"
        ],
        "{s:#}"
    );
    let by = |n: &str| files.iter().find(|f| f["name"] == n).unwrap().clone();
    let k = by("vmlinuz-lts");
    assert_eq!(
        (
            &k["role"],
            &k["size"],
            &k["version"],
            &k["missing"],
            &k["problem"]
        ),
        (
            &"kernel".into(),
            &6.into(),
            &"3.20.3".into(),
            &false.into(),
            &serde_json::Value::Null
        ),
        "{k}"
    );
    assert_eq!(k["sha256"], "ab".repeat(32));
    let i = by("initramfs-lts");
    assert_eq!(
        (&i["size"], &i["version"]),
        (&10.into(), &"unknown".into()),
        "{i}"
    );
    let m = by("modloop-lts");
    assert_eq!(
        (&m["missing"], &m["problem"], &m["size"]),
        (&true.into(), &"missing".into(), &serde_json::Value::Null),
        "{m}"
    );
    let u = by("undionly.kpxe");
    assert_eq!(
        (&u["role"], &u["missing"], &u["problem"]),
        (&"dhcp".into(), &false.into(), &"empty".into()),
        "{u}"
    );
    assert_eq!(by("ipxe.efi")["missing"], true);

    let html = String::from_utf8_lossy(&lab.get("/").body).into_owned();
    let row = |n: &str| {
        html.split("<tr ")
            .find(|r| r.starts_with(&format!("data-file=\"{n}\"")))
            .unwrap_or_else(|| panic!("{n}: {html}"))
            .to_owned()
    };
    assert!(row("modloop-lts").contains("data-missing=\"true\""));
    assert!(row("modloop-lts").contains("<td class=\"bootfile missing\">missing</td>"));
    assert!(
        row("vmlinuz-lts").contains("<td>6</td><td>3.20.3</td><td class=\"bootfile ok\">ok</td>")
    );
    assert!(row("undionly.kpxe").contains("<td class=\"bootfile problem\">empty</td>"));

    // Put in place, it is listed with its size within the kept document's second.
    lab.file("modloop-lts", b"modloop");
    assert!(eventually(10, || {
        let s: serde_json::Value = serde_json::from_slice(&lab.get("/status").body).unwrap();
        s["boot_files"][2]["size"] == 7 && s["boot_files"][2]["missing"] == false
    }));
}
