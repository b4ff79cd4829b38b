//! The HTTP server in-process on 127.0.0.1 port 0 over a temporary copy of the example
//! site (built with the pipeline); real curl drives it, busybox tar checks on-demand
//! archives. Every client runs under `timeout`; every wait is bounded.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovl::build::project::{Project, Selection};
use ovl::mac::Mac;
use ovl::serve::http::{HttpConfig, HttpServer};
use ovl::serve::neighbours::{Neighbours, StaticNeighbours};
use ovl::site::Site;
use tokio_util::sync::CancellationToken;

use crate::harness::proc::{bounded, eventually, noise, sha256};
use crate::harness::site::TestSite;
use crate::stalls::get_from;

mod page;

/// An inventory device of the example site (profile XL, kernel arg `quiet`).
const XL_MAC: &str = "52:54:00:12:34:56";
/// An inventory device of profile S (no extra kernel args).
const S_MAC: &str = "52:54:00:ab:cd:01";
/// A MAC the inventory does not know.
const BLANK_MAC: &str = "52:54:00:99:99:99";

/// A built example site in a temp dir and an HTTP server serving it on its own runtime.
struct Lab {
    site: TestSite,
    root: PathBuf,
    addr: SocketAddr,
    cancel: CancellationToken,
    rt: Option<tokio::runtime::Runtime>,
}

impl Lab {
    fn new() -> Lab {
        Lab::with("", |_| {})
    }

    /// A lab whose `[serve]` table gets `serve_toml` appended, with `adjust` applied to the
    /// server's settings.
    fn with(serve_toml: &str, adjust: impl FnOnce(&mut HttpConfig)) -> Lab {
        let site = TestSite::example();
        let root = site.root().to_path_buf();
        // The tests' own files live in data/, a public folder.
        let serve_toml = format!("public = [\"data/\"]\n{serve_toml}");
        let serve_toml = serve_toml.trim_end();
        {
            // [serve] is the last table of the example: drop its keys that we set, append.
            let toml = std::fs::read_to_string(root.join("ovl.toml")).unwrap();
            let keys: Vec<&str> = serve_toml
                .lines()
                .filter_map(|l| l.split('=').next())
                .map(str::trim)
                .collect();
            let kept: String = toml
                .lines()
                .filter(|l| !keys.contains(&l.split('=').next().unwrap_or("").trim()))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(root.join("ovl.toml"), format!("{kept}{serve_toml}\n")).unwrap();
        }
        let project = Project::load(Site::open(&root).unwrap()).unwrap();
        let specs = project
            .select(&Selection {
                all: true,
                ..Default::default()
            })
            .unwrap();
        let built = project.build(&specs, &|| {});
        assert_eq!(built.len(), 5);
        project.write_boot_scripts().unwrap();

        std::fs::write(site.scratch("outside.txt"), b"OUTSIDE-SECRET").unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::os::unix::fs::symlink("../../outside.txt", root.join("data/out")).unwrap();
        std::os::unix::fs::symlink("../overlays", root.join("data/ov")).unwrap();
        std::fs::write(root.join(".hidden"), b"HIDDEN-SECRET").unwrap();
        std::fs::write(root.join("data/.env"), b"HIDDEN-SECRET").unwrap();
        std::fs::create_dir_all(root.join("captures/elsewhere")).unwrap();
        std::fs::write(root.join("captures/elsewhere/notes"), b"CAPTURE-SECRET").unwrap();
        // An administrator's leftovers: editor backups, copies, a tarball of the overlays.
        for backup in [
            "devices.toml~",
            "#devices.toml#",
            "ovl.toml.bak",
            "profiles.orig/S.toml",
            "overlays.tar.gz",
            "data/notes.txt~",
            "configs/notes.txt",
        ] {
            let p = root.join(backup);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"[alpine] BACKUP-SECRET").unwrap();
        }

        let mut cfg = HttpConfig::new("127.0.0.1:0".parse().unwrap());
        cfg.reload_interval = Duration::from_millis(100);
        adjust(&mut cfg);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let project = Project::load(Site::open(&root).unwrap()).unwrap();
        let server = rt.block_on(HttpServer::bind(cfg, project)).unwrap();
        let addr = server.local_addr();
        let cancel = CancellationToken::new();
        rt.spawn(server.run(cancel.clone()));
        Lab {
            site,
            root,
            addr,
            cancel,
            rt: Some(rt),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Writes a site file (parents created) and returns its bytes' sha256.
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
        sha256(bytes)
    }

    /// Runs curl on `path` with `args`; the body and headers come back.
    fn curl(&self, path: &str, args: &[&str]) -> Resp {
        let body = tempfile::NamedTempFile::new_in(self.site.dir.path()).unwrap();
        let head = tempfile::NamedTempFile::new_in(self.site.dir.path()).unwrap();
        let out = bounded(60, "curl")
            .args(["-s", "--path-as-is", "--max-time", "50"])
            .args(["-w", "%{http_code}", "-o"])
            .arg(body.path())
            .arg("-D")
            .arg(head.path())
            .args(args)
            .arg(self.url(path))
            .output()
            .unwrap();
        let status: u16 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let head = std::fs::read_to_string(head.path()).unwrap_or_default();
        let headers = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Resp {
            status,
            headers,
            body: std::fs::read(body.path()).unwrap_or_default(),
        }
    }

    fn get(&self, path: &str) -> Resp {
        self.curl(path, &[])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(10));
        }
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[test]
fn get_and_head_with_content_length_and_validators() {
    let lab = Lab::new();
    let data = noise(1_000_003, 1);
    let sum = lab.file("data/blob.bin", &data);
    let r = lab.get("/data/blob.bin");
    assert_eq!(r.status, 200);
    assert_eq!(sha256(&r.body), sum);
    assert_eq!(r.header("content-length"), "1000003");
    assert!(r.header("etag").starts_with('"'), "strong ETag: {r:?}");
    assert!(!r.header("last-modified").is_empty());
    assert_eq!(r.header("accept-ranges"), "bytes");
    assert_eq!(r.header("cache-control"), "");

    let h = lab.curl("/data/blob.bin", &["-I"]);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), "1000003");
    assert_eq!(h.header("etag"), r.header("etag"));
    // curl -I writes the headers where the body would go: no file bytes came.
    assert!(h.body.len() < 1000, "{}", h.body.len());
}

#[test]
fn ranges_give_206_and_416_past_the_end() {
    let lab = Lab::new();
    let data = noise(100_000, 2);
    lab.file("data/r.bin", &data);
    let r = lab.curl("/data/r.bin", &["-r", "1000-1999"]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-length"), "1000");
    assert_eq!(r.header("content-range"), "bytes 1000-1999/100000");
    assert_eq!(sha256(&r.body), sha256(&data[1000..2000]));
    let r = lab.curl("/data/r.bin", &["-r", "99000-"]);
    assert_eq!(r.status, 206);
    assert_eq!(sha256(&r.body), sha256(&data[99000..]));
    let r = lab.curl("/data/r.bin", &["-r", "100000-100010"]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), "bytes */100000");
}

#[test]
fn conditional_requests_give_304() {
    let lab = Lab::new();
    lab.file("data/c.bin", &noise(5000, 3));
    let r = lab.get("/data/c.bin");
    let etag = r.header("etag").to_owned();
    let lm = r.header("last-modified").to_owned();
    let inm = format!("If-None-Match: {etag}");
    let r = lab.curl("/data/c.bin", &["-H", &inm]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let ims = format!("If-Modified-Since: {lm}");
    assert_eq!(lab.curl("/data/c.bin", &["-H", &ims]).status, 304);
    let r = lab.curl("/data/c.bin", &["-H", "If-None-Match: \"other\""]);
    assert_eq!(r.status, 200);

    // Generated scripts have a content ETag too.
    let s = lab.get("/boot.ipxe");
    let inm = format!("If-None-Match: {}", s.header("etag"));
    assert_eq!(lab.curl("/boot.ipxe", &["-H", &inm]).status, 304);
}

/// Small files answered from memory (plain GETs of a file version seen before) get the
/// answer tower-http gave, and any change of the file is served at once.
#[test]
fn answers_kept_in_memory_are_the_same_and_follow_every_change_at_once() {
    let lab = Lab::new();
    let path = lab.root.join("data/k.txt");
    let first = noise(3000, 4);
    lab.file("data/k.txt", &first);
    // The same file by another name (a symlink inside the public folder): its own type.
    std::os::unix::fs::symlink("k.txt", lab.root.join("data/k.bin")).unwrap();
    // Files changed in the last 2 s are never kept: wait that out so the memory is used.
    std::thread::sleep(Duration::from_millis(2300));
    let a = lab.get("/data/k.txt");
    let (b, c) = (lab.get("/data/k.txt"), lab.get("/data/k.txt"));
    for r in [&a, &b, &c] {
        assert_eq!(r.status, 200);
        assert_eq!(sha256(&r.body), sha256(&first));
        for h in [
            "etag",
            "last-modified",
            "content-type",
            "content-length",
            "accept-ranges",
        ] {
            assert_eq!(r.header(h), a.header(h), "{h}");
        }
    }
    assert_eq!(a.header("content-length"), "3000");
    assert_eq!(a.header("content-type"), "text/plain");
    for _ in 0..2 {
        let r = lab.get("/data/k.bin");
        assert_eq!((r.status, sha256(&r.body)), (200, sha256(&first)));
        assert_eq!(r.header("content-type"), "application/octet-stream");
    }
    // The other requests of a kept file: HEAD, Range, conditionals.
    let h = lab.curl("/data/k.txt", &["-I"]);
    assert_eq!((h.status, h.header("etag")), (200, a.header("etag")));
    let r = lab.curl("/data/k.txt", &["-r", "10-19"]);
    assert_eq!((r.status, r.body.as_slice()), (206, &first[10..20]));
    let inm = format!("If-None-Match: {}", a.header("etag"));
    assert_eq!(lab.curl("/data/k.txt", &["-H", &inm]).status, 304);
    // Rewritten in place, same size, same mtime put back: the next GET has the new bytes.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let second = noise(3000, 5);
    std::fs::write(&path, &second).unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let r = lab.get("/data/k.txt");
    assert_eq!(sha256(&r.body), sha256(&second));
    // Replaced by a rename, as archives are published: the next GET has the new bytes.
    let third = noise(3000, 6);
    lab.file("data/k.new", &third);
    std::fs::rename(lab.root.join("data/k.new"), &path).unwrap();
    let r = lab.get("/data/k.txt");
    assert_eq!(sha256(&r.body), sha256(&third));
    // Removed: 404 at once.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(lab.get("/data/k.txt").status, 404);
}

#[test]
fn configs_are_served_with_no_cache_and_match_the_published_file() {
    let lab = Lab::new();
    let path = format!("/configs/{XL_MAC}.tar.gz");
    let r = lab.get(&path);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), "no-cache");
    let published = std::fs::read(lab.root.join(format!("configs/{XL_MAC}.tar.gz"))).unwrap();
    assert_eq!(sha256(&r.body), sha256(&published));
    assert_eq!(r.header("content-length"), published.len().to_string());
    let h = lab.curl(&path, &["-I"]);
    assert_eq!(h.header("cache-control"), "no-cache");
    for script in ["/boot.ipxe", "/gpxe-script"] {
        let r = lab.get(script);
        assert_eq!(r.status, 200, "{script}");
        assert_eq!(r.header("cache-control"), "no-cache", "{script}");
        assert!(r.text().starts_with("#!ipxe\n"), "{script}");
        assert_eq!(r.header("content-length"), r.body.len().to_string());
    }
}

#[test]
fn unknown_and_misspelled_configs_are_404() {
    let lab = Lab::new();
    assert_eq!(lab.get(&format!("/configs/{BLANK_MAC}.tar.gz")).status, 404);
    for spelling in [
        S_MAC.to_uppercase(),
        "52-54-00-12-34-56".into(),
        "525400123456".into(),
        "52%3A54%3A00%3A12%3A34%3A56x".into(),
        "nonsense".into(),
    ] {
        let r = lab.get(&format!("/configs/{spelling}.tar.gz"));
        assert_eq!(r.status, 404, "{spelling}");
    }
    // Percent-encoded colons are the same URL.
    let r = lab.get("/configs/52%3A54%3A00%3A12%3A34%3A56.tar.gz");
    assert_eq!(r.status, 200);
}

#[test]
fn only_the_public_set_is_served_everything_else_is_404() {
    // Both ways of doing the file system work: in place and on the blocking pool.
    for offload in [false, true] {
        let lab = Lab::with("", |c| c.fs_offload = Some(offload));
        refusals(&lab);
    }
}

fn refusals(lab: &Lab) {
    let refused = [
        "/ovl.toml",
        "/devices.toml",
        "/profiles/S.toml",
        "/profiles/",
        "/overlays/base/etc/motd",
        "/captures/elsewhere/notes",
        "/.hidden",
        "/data/.env",
        "/OVL.TOML",
        "/../outside.txt",
        "/data/../../outside.txt",
        "/%2e%2e/outside.txt",
        "/data/%2E%2E/%2e%2e/outside.txt",
        "/%2e%2e%2foutside.txt",
        "/data%2f..%2f..%2foutside.txt",
        "/..%5coutside.txt",
        "/data/out",
        "/data/ov/base/etc/motd",
        "/ovl.toml%00",
        "/devices.toml~",
        "/%23devices.toml%23",
        "/ovl.toml.bak",
        "/profiles.orig/S.toml",
        "/overlays.tar.gz",
        "/data/notes.txt~",
        "/configs/notes.txt",
        "/data",
        "/configs",
    ];
    for p in refused {
        let r = lab.get(p);
        assert_eq!(r.status, 404, "{p}: {r:?}");
        let t = r.text();
        assert!(!t.contains("SECRET") && !t.contains("[alpine]"), "{p}");
        // The same answer as for a file that does not exist: no existence oracle.
        assert_eq!(r.body, lab.get("/no-such-file").body, "{p}");
    }
    // Absolute paths name files under the site, never the host's.
    for p in ["//etc/passwd", "/%2Fetc%2Fpasswd", "/etc/passwd"] {
        let r = lab.get(p);
        assert_eq!(r.status, 404, "{p}");
        assert!(!r.text().contains("root:"), "{p}");
    }
    // A raw backslash never reaches a file either (hyper may refuse it first).
    let r = lab.get("/..\\outside.txt");
    assert!(matches!(r.status, 400 | 404), "{r:?}");
    assert!(!r.text().contains("SECRET"));
    assert_eq!(lab.get("/no-such-file").status, 404);
    assert_eq!(lab.curl("/boot.ipxe", &["-X", "POST"]).status, 405);
}

#[test]
fn boot_script_uses_the_profile_of_a_known_mac() {
    let lab = Lab::new();
    let plain = lab.get("/boot.ipxe").text();
    assert!(plain.contains("apkovl=http://192.168.0.2:"), "{plain}");
    assert!(plain.contains("/configs/${net0/mac}.tar.gz"), "{plain}");
    assert!(!plain.contains(" quiet"), "{plain}");

    let xl = lab.get(&format!("/boot.ipxe?mac={XL_MAC}")).text();
    assert!(xl.contains(&format!("/configs/{XL_MAC}.tar.gz")), "{xl}");
    assert!(xl.contains(" quiet"), "XL has kernel_args = [quiet]: {xl}");
    assert!(
        xl.contains(&format!(":{}/vmlinuz-lts", lab.addr.port())),
        "{xl}"
    );

    let s = lab.get(&format!("/gpxe-script?mac={S_MAC}")).text();
    assert!(s.contains(&format!("/configs/{S_MAC}.tar.gz")), "{s}");
    assert!(!s.contains(" quiet"), "{s}");

    // Percent-encoded and other spellings name the same device; unknown MACs get the
    // static form.
    let enc = lab.get("/boot.ipxe?mac=52%3A54%3A00%3A12%3A34%3A56").text();
    assert!(enc.contains(" quiet"), "{enc}");
    let unknown = lab.get(&format!("/boot.ipxe?mac={BLANK_MAC}")).text();
    assert!(unknown.contains("${net0/mac}.tar.gz"), "{unknown}");
    let bad = lab.get("/boot.ipxe?mac=zz").text();
    assert!(bad.contains("${net0/mac}.tar.gz"), "{bad}");
}

#[test]
fn default_profile_serves_blank_devices_an_archive_busybox_accepts() {
    let lab = Lab::with("default_profile = \"S\"", |_| {});
    let r = lab.get(&format!("/configs/{BLANK_MAC}.tar.gz"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("cache-control"), "no-cache");
    assert_eq!(r.header("content-length"), r.body.len().to_string());
    let out = lab.site.scratch("blank.tar.gz");
    std::fs::write(&out, &r.body).unwrap();
    let t = bounded(30, "busybox")
        .args(["tar", "-tzf"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(t.status.success(), "{t:?}");
    let list = String::from_utf8_lossy(&t.stdout);
    assert!(list.lines().any(|l| l == "etc/hostname"), "{list}");
    // The same bytes again (cached), and the same as a build with that profile.
    let again = lab.get(&format!("/configs/{BLANK_MAC}.tar.gz"));
    assert_eq!(sha256(&again.body), sha256(&r.body));
    let p = Project::load(Site::open(&lab.root).unwrap()).unwrap();
    let spec = p.spec(BLANK_MAC.parse().unwrap(), Some("S")).unwrap();
    let plan = p
        .plan(&spec, &p.read_layers(std::slice::from_ref(&spec)))
        .unwrap();
    assert_eq!(sha256(&p.archive_bytes(&plan).unwrap()), sha256(&r.body));
    // Its manifest is kept, so that the device's later captures merge three ways.
    let kept = format!(".ovl-state/manifests/{BLANK_MAC}/{}.json.gz", plan.id);
    assert!(lab.root.join(&kept).is_file(), "{kept}");
    // Nothing was published for it.
    assert!(
        !lab.root
            .join(format!("configs/{BLANK_MAC}.tar.gz"))
            .exists()
    );
    // An inventory device without an archive still gets a real 404.
    std::fs::remove_file(lab.root.join(format!("configs/{S_MAC}.tar.gz"))).unwrap();
    assert_eq!(lab.get(&format!("/configs/{S_MAC}.tar.gz")).status, 404);
}

#[test]
fn the_project_is_reloaded_and_a_broken_reload_keeps_the_last_good_one() {
    let lab = Lab::new();
    let blank = format!("/configs/{BLANK_MAC}.tar.gz");
    assert_eq!(lab.get(&blank).status, 404);
    let toml_path = lab.root.join("ovl.toml");
    let good = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(&toml_path, format!("{good}default_profile = \"S\"\n")).unwrap();
    assert!(eventually(10, || lab.get(&blank).status == 200));

    // A broken ovl.toml: the last good project stays, the error shows in /status.
    std::fs::write(&toml_path, "[alpine\n").unwrap();
    assert!(eventually(10, || {
        let s: serde_json::Value = serde_json::from_slice(&lab.get("/status").body).unwrap();
        s["server"]["reload_error"].is_string()
    }));
    assert_eq!(lab.get(&blank).status, 200);

    // A device added to devices.toml is known to the boot script.
    std::fs::write(&toml_path, &good).unwrap();
    let inv = std::fs::read_to_string(lab.root.join("devices.toml")).unwrap();
    std::fs::write(
        lab.root.join("devices.toml"),
        format!("{inv}\n[[device]]\nmac = \"{BLANK_MAC}\"\nprofile = \"XL\"\n"),
    )
    .unwrap();
    assert!(eventually(10, || {
        lab.get(&format!("/boot.ipxe?mac={BLANK_MAC}"))
            .text()
            .contains(" quiet")
    }));
    assert_eq!(lab.get(&blank).status, 404);
}

#[test]
fn owner_mode_refuses_other_clients() {
    // The kernel's table: loopback has no neighbour entry, so nobody owns anything.
    let lab = Lab::with("configs_access = \"owner\"", |_| {});
    let r = lab.get(&format!("/configs/{XL_MAC}.tar.gz"));
    assert_eq!(r.status, 403);
    assert!(!r.text().contains("hostname"));

    // A test double says 127.0.0.1 is XL_MAC.
    let me: IpAddr = "127.0.0.1".parse().unwrap();
    let mac: Mac = XL_MAC.parse().unwrap();
    let lab = Lab::with("configs_access = \"owner\"\ndefault_profile = \"S\"", |c| {
        c.neighbours = Neighbours::new(vec![Arc::new(StaticNeighbours(
            [(me, mac)].into_iter().collect(),
        ))]);
    });
    let r = lab.get(&format!("/configs/{XL_MAC}.tar.gz"));
    assert_eq!(r.status, 200);
    let published = std::fs::read(lab.root.join(format!("configs/{XL_MAC}.tar.gz"))).unwrap();
    assert_eq!(sha256(&r.body), sha256(&published));
    assert_eq!(lab.get(&format!("/configs/{S_MAC}.tar.gz")).status, 403);
    assert_eq!(lab.get(&format!("/configs/{BLANK_MAC}.tar.gz")).status, 403);
    // Through a symlink the owner rule still holds.
    std::os::unix::fs::symlink(
        format!("../configs/{S_MAC}.tar.gz"),
        lab.root.join("data/s.tar.gz"),
    )
    .unwrap();
    assert_eq!(lab.get("/data/s.tar.gz").status, 403);
    let status: serde_json::Value = serde_json::from_slice(&lab.get("/status").body).unwrap();
    let s = status["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["mac"] == S_MAC)
        .unwrap();
    assert_eq!(s["events"][0]["kind"], "config_refused");
}

#[test]
fn status_lists_devices_archives_and_boot_events() {
    let lab = Lab::new();
    lab.file("vmlinuz-lts", b"kernel");
    lab.file("initramfs-lts", b"initramfs");
    // The client names its MAC in the script URL; later fetches are attributed to it.
    assert_eq!(lab.get(&format!("/boot.ipxe?mac={XL_MAC}")).status, 200);
    assert_eq!(lab.get("/vmlinuz-lts").status, 200);
    assert_eq!(lab.get("/initramfs-lts").status, 200);
    assert_eq!(lab.get(&format!("/configs/{XL_MAC}.tar.gz")).status, 200);
    assert_eq!(lab.get(&format!("/configs/{BLANK_MAC}.tar.gz")).status, 404);
    let r = lab.get("/status");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), "no-cache");
    assert!(r.header("content-type").starts_with("application/json"));
    let s: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let devices = s["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 5);
    let xl = devices.iter().find(|d| d["mac"] == XL_MAC).unwrap();
    assert_eq!(xl["profile"], "XL");
    assert_eq!(xl["hostname"], "kiosk-hall");
    assert_eq!(xl["ip"], "192.168.0.50");
    assert_eq!(xl["archive"]["exists"], true);
    let size = std::fs::metadata(lab.root.join(format!("configs/{XL_MAC}.tar.gz")))
        .unwrap()
        .len();
    assert_eq!(xl["archive"]["size"], size);
    assert!(xl["archive"]["mtime"].as_u64().unwrap() > 0);
    let kinds: Vec<&str> = xl["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["script", "kernel", "initramfs", "config_served"],
        "{xl}"
    );
    assert_eq!(xl["events"][3]["bytes"], size);
    assert_eq!(xl["events"][3]["status"], 200);
    let other = &s["other_devices"][0];
    assert_eq!(other["mac"], BLANK_MAC);
    assert_eq!(other["events"][0]["kind"], "config_not_found");
    // The S device of the example derives its hostname from its profile's template.
    let s1 = devices.iter().find(|d| d["mac"] == S_MAC).unwrap();
    assert_eq!(s1["hostname"], "s-abcd01");
}

#[test]
fn two_hundred_concurrent_downloads_of_30_mb() {
    let lab = Lab::new();
    let data = noise(30 * 1024 * 1024, 7);
    let sum = lab.file("data/big.bin", &data);
    drop(data);
    let script = format!(
        "for i in $(seq 1 200); do \
           (curl -s --fail --max-time 240 {url} | sha256sum > {dir}/sum.$i) & \
         done; wait",
        url = lab.url("/data/big.bin"),
        dir = lab.site.dir.path().display()
    );
    let started = Instant::now();
    let st = bounded(300, "sh").args(["-c", &script]).status().unwrap();
    assert!(st.success());
    let mut ok = 0;
    for i in 1..=200 {
        let got = std::fs::read_to_string(lab.site.scratch(&format!("sum.{i}"))).unwrap();
        assert_eq!(
            got.split_whitespace().next(),
            Some(sum.as_str()),
            "download {i}"
        );
        ok += 1;
    }
    assert_eq!(ok, 200);
    eprintln!("200 × 30 MiB in {:?}", started.elapsed());
}

#[test]
fn a_blank_device_asking_for_its_own_archive_skips_a_flood_of_others() {
    // The kernel's table (a test double) says 127.0.1.1 is BLANK_MAC, 127.0.1.2 another.
    const OTHER: &str = "52:54:00:99:99:98";
    let table = [("127.0.1.1", BLANK_MAC), ("127.0.1.2", OTHER)]
        .map(|(ip, mac)| (ip.parse::<IpAddr>().unwrap(), mac.parse::<Mac>().unwrap()));
    let lab = Lab::with("default_profile = \"S\"", |c| {
        c.neighbours = Neighbours::new(vec![Arc::new(StaticNeighbours(
            table.into_iter().collect(),
        ))]);
    });
    // 2 MiB that do not compress: each on-demand build takes a while.
    lab.file("overlays/base/opt/blob.bin", &noise(2 << 20, 9));
    let url = |mac: &str| lab.url(&format!("/configs/{mac}.tar.gz"));
    let fetch_own = |source: &str, mac: &str| {
        let started = Instant::now();
        let o = bounded(60, "curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--interface",
                source,
            ])
            .arg(url(mac))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "200", "{source}");
        started.elapsed()
    };
    // One build with nothing else going on.
    let alone = fetch_own("127.0.1.2", OTHER);
    // 200 requests for MACs nobody has, from 100 addresses, on raw connections.
    let addr = lab.addr;
    let flood: Vec<_> = (0..200u32)
        .map(|i| {
            let path = format!(
                "/configs/02:00:00:00:{:02x}:{:02x}.tar.gz",
                i / 256,
                i % 256
            );
            let source = std::net::Ipv4Addr::new(127, 0, 0, 10 + (i / 2) as u8);
            std::thread::spawn(move || get_from(addr, source, &path).0.to_string())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let took = fetch_own("127.0.1.1", BLANK_MAC);
    let codes: Vec<String> = flood.into_iter().map(|h| h.join().unwrap()).collect();
    let busy = codes.iter().filter(|c| *c == "503").count();
    eprintln!(
        "FIGURE own archive: {alone:?} alone, {took:?} beside 200 requests for others \
         ({busy} told 503)"
    );
    // Not behind the 16 queued builds of others: about one build, not eight.
    assert!(
        took < alone * 4 + Duration::from_secs(1),
        "{took:?} vs {alone:?}"
    );
    assert!(busy > 0, "the flood met the queue bound: {codes:?}");
    assert!(codes.iter().all(|c| c == "200" || c == "503"), "{codes:?}");
}
