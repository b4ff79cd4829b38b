//! `ovl fetch` against a local mirror laid out like Alpine's (a real GNU tar netboot
//! tarball, a `latest-releases.yaml` with its sha256, iPXE binaries), served on 127.0.0.1 by
//! the harness; and `ovl check`'s warnings about missing boot files.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::harness::mirror::{AlpineRelease, Mirror, Request};
use crate::harness::proc::{noise, sha256, sha256_file};
use crate::harness::site::{Run, TestSite};

/// The iPXE binaries `ovl fetch` places by default.
const IPXE: [&str; 3] = ["undionly.kpxe", "ipxe.efi", "snponly.efi"];
/// Alpine's boot files of flavor `lts`.
const LTS: [&str; 3] = ["vmlinuz-lts", "initramfs-lts", "modloop-lts"];

/// A mirror with Alpine 3.20.3 (x86_64, flavors lts and virt) and iPXE binaries under
/// `/ipxe/`, and a site whose `ovl.toml` points at both (no system iPXE folder).
struct Lab {
    mirror: Mirror,
    release: AlpineRelease,
    ipxe: BTreeMap<String, Vec<u8>>,
    site: TestSite,
}

impl Lab {
    /// The `Range` header of each request for the release tarball, in order.
    fn tarball_ranges(&self) -> Vec<Option<String>> {
        self.mirror
            .requests_for(&self.release.tarball)
            .into_iter()
            .map(|r| r.range)
            .collect()
    }

    fn new() -> Lab {
        Lab::with_settings("")
    }

    /// The lab with `extra` appended to `ovl.toml`.
    fn with_settings(extra: &str) -> Lab {
        let mirror = Mirror::start();
        let release = mirror.alpine_release("v3.20", "3.20.3", "x86_64", &["lts", "virt"]);
        let mut ipxe = BTreeMap::new();
        for (i, name) in IPXE.iter().enumerate() {
            let bytes = noise(70_000 + i * 9_000, 100 + i as u64);
            mirror.write(&format!("ipxe/{name}"), &bytes);
            ipxe.insert(name.to_string(), bytes);
        }
        let site = TestSite::new();
        site.write(
            "ovl.toml",
            &format!(
                "[boot]\nserver = \"10.9.0.1\"\n[alpine]\nmirror = \"{url}\"\n[fetch]\n\
                 ipxe_dir = \"{dir}\"\nipxe_url = \"{url}/ipxe\"\n{extra}",
                url = mirror.url(),
                dir = site.scratch("no-ipxe-package").display(),
            ),
        );
        Lab {
            mirror,
            release,
            ipxe,
            site,
        }
    }

    /// `ovl --site SITE fetch ARGS`, without proxy variables.
    fn fetch(&self, args: &[&str]) -> Run {
        let mut c = self.site.command();
        c.arg("fetch").args(args);
        run(&mut c)
    }

    /// The full URL of a mirror path.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.mirror.url())
    }

    /// Asserts that the site's Alpine files are those of the release and the iPXE files
    /// those of the mirror.
    fn assert_files_placed(&self) {
        for name in LTS {
            let got = std::fs::read(self.site.path(name)).unwrap();
            assert!(got == self.release.files[name], "{name} differs");
            let mode = std::fs::metadata(self.site.path(name))
                .unwrap()
                .permissions();
            assert_eq!(mode.mode() & 0o777, 0o644, "{name}");
        }
        for (name, bytes) in &self.ipxe {
            assert!(
                &std::fs::read(self.site.path(name)).unwrap() == bytes,
                "{name}"
            );
        }
        assert!(!self.site.path("vmlinuz-virt").exists());
    }
}

/// Runs `c` with the proxy variables removed (requests go to 127.0.0.1 directly).
fn run(c: &mut Command) -> Run {
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        c.env_remove(v);
    }
    let out = c.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `name → state` of a `fetch --json` report.
fn states(j: &serde_json::Value) -> BTreeMap<String, String> {
    j["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap().to_string();
            (name, f["state"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Every file of the fetch in `state`.
fn all(state: &str) -> BTreeMap<String, String> {
    LTS.iter()
        .chain(IPXE.iter())
        .map(|n| (n.to_string(), state.to_string()))
        .collect()
}

/// Modification times of the fetched files.
fn mtimes(site: &TestSite) -> Vec<std::time::SystemTime> {
    LTS.iter()
        .chain(IPXE.iter())
        .map(|n| std::fs::metadata(site.path(n)).unwrap().modified().unwrap())
        .collect()
}

/// The names left in `.ovl-tmp/fetch/` (only the lock after a good run).
fn leftovers(site: &TestSite) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(site.path(".ovl-tmp/fetch"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn fetch_places_the_boot_files_and_a_second_run_downloads_nothing() {
    let lab = Lab::new();
    let j = lab.fetch(&["--json"]).ok().json();
    assert_eq!(states(&j), all("created"));
    assert_eq!(j["release"]["version"], "3.20.3");
    assert_eq!(j["release"]["url"], lab.url(&lab.release.tarball));
    lab.assert_files_placed();
    assert_eq!(lab.mirror.requests_for(&lab.release.index).len(), 1);
    assert_eq!(
        lab.mirror.requests_for(&lab.release.tarball),
        [Request {
            path: lab.release.tarball.clone(),
            range: None
        }]
    );
    assert_eq!(leftovers(&lab.site), ["lock"]);
    let before = mtimes(&lab.site);
    let seen = lab.mirror.requests().len();

    let j = lab.fetch(&["--json"]).ok().json();
    assert_eq!(states(&j), all("unchanged"));
    let after = lab.mirror.requests();
    assert_eq!(after.len(), seen + 1, "only the index: {after:?}");
    assert_eq!(after[seen].path, lab.release.index);
    let index_len = std::fs::metadata(lab.mirror.root().join(&lab.release.index[1..]))
        .unwrap()
        .len();
    assert_eq!(j["downloaded_bytes"], index_len);
    assert_eq!(mtimes(&lab.site), before);
    lab.fetch(&[])
        .ok()
        .stdout_has("unchanged vmlinuz-lts")
        .stdout_has("Alpine 3.20.3 (x86_64, lts): 6 files, 0 created, 0 updated, 6 unchanged");

    // --force downloads everything again; identical bytes are left in place.
    let seen = lab.mirror.requests().len();
    let j = lab.fetch(&["--json", "--force"]).ok().json();
    assert_eq!(states(&j), all("unchanged"));
    assert_eq!(lab.mirror.requests().len(), seen + 5);
    assert_eq!(mtimes(&lab.site), before);
}

#[test]
fn a_changed_or_deleted_file_is_fetched_again() {
    let lab = Lab::new();
    lab.fetch(&[]).ok();
    lab.site.write("initramfs-lts", "corrupted");
    lab.site.write("ipxe.efi", "corrupted");
    std::fs::remove_file(lab.site.path("modloop-lts")).unwrap();
    let j = lab.fetch(&["--json"]).ok().json();
    let mut want = all("unchanged");
    want.insert("initramfs-lts".into(), "updated".into());
    want.insert("modloop-lts".into(), "created".into());
    want.insert("ipxe.efi".into(), "updated".into());
    assert_eq!(states(&j), want);
    lab.assert_files_placed();
    assert_eq!(lab.mirror.requests_for(&lab.release.tarball).len(), 2);
    assert_eq!(lab.mirror.requests_for("/ipxe/ipxe.efi").len(), 2);
    assert_eq!(lab.mirror.requests_for("/ipxe/snponly.efi").len(), 1);
}

#[test]
fn a_wrong_sha256_on_the_mirror_places_nothing() {
    let lab = Lab::new();
    let index = lab.mirror.root().join(&lab.release.index[1..]);
    let good = std::fs::read_to_string(&index).unwrap();
    let sha = sha256(&std::fs::read(lab.mirror.root().join(&lab.release.tarball[1..])).unwrap());
    std::fs::write(&index, good.replace(&sha, &"ab".repeat(32))).unwrap();
    let r = lab.fetch(&[]).code(3);
    let tarball = lab.url(&lab.release.tarball);
    r.stderr_has(&format!("error: {tarball}: sha256 {sha} differs from abab"))
        .stderr_has("nothing was placed");
    for name in LTS.iter().chain(IPXE.iter()) {
        assert!(!lab.site.path(name).exists(), "{name} was placed");
    }
    assert_eq!(leftovers(&lab.site), ["lock"]);

    // A site that has its files keeps them when a newer release is corrupt on the mirror.
    std::fs::write(&index, &good).unwrap();
    lab.fetch(&[]).ok();
    let newer = lab
        .mirror
        .alpine_release("v3.20", "3.20.4", "x86_64", &["lts", "virt"]);
    let index = lab.mirror.root().join(&newer.index[1..]);
    let text = std::fs::read_to_string(&index).unwrap();
    let sha = sha256(&std::fs::read(lab.mirror.root().join(&newer.tarball[1..])).unwrap());
    std::fs::write(&index, text.replace(&sha, &"cd".repeat(32))).unwrap();
    lab.fetch(&["--json"])
        .code(3)
        .stderr_has(&lab.url(&newer.tarball));
    lab.assert_files_placed();
    let j = lab.site.ovl(&["check", "--json"]).ok().json();
    assert_eq!(j["boot_files"][0]["version"], "3.20.3");
}

#[test]
fn a_cut_connection_is_resumed_with_a_range_request() {
    let lab = Lab::new();
    lab.mirror.cut(&lab.release.tarball, 1_000_000, 1);
    lab.fetch(&[]).ok();
    lab.assert_files_placed();
    let ranges = lab.tarball_ranges();
    assert_eq!(ranges, [None, Some("bytes=1000000-".to_string())]);
}

#[test]
fn a_stalled_download_times_out_and_resumes() {
    let lab = Lab::with_settings("timeout = 1\n");
    // The server stays silent for 30 s; the 1 s timeout gives up long before.
    lab.mirror.stall(&lab.release.tarball, 700_000, 30);
    let start = std::time::Instant::now();
    lab.fetch(&[]).ok();
    assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
    lab.assert_files_placed();
    let ranges = lab.tarball_ranges();
    assert_eq!(ranges, [None, Some("bytes=700000-".to_string())]);
}

#[test]
fn a_download_given_up_is_resumed_by_the_next_run() {
    let lab = Lab::new();
    assert!(lab.release.tarball_size > 2_000_000);
    lab.mirror.cut(&lab.release.tarball, 400_000, 4);
    let tarball = lab.url(&lab.release.tarball);
    lab.fetch(&[])
        .code(3)
        .stderr_has(&format!("error: {tarball}: connection"))
        .stderr_has("(4 attempts); the 1600000 bytes received are kept");
    assert!(!lab.site.path("vmlinuz-lts").exists());
    lab.fetch(&[]).ok();
    lab.assert_files_placed();
    let ranges = lab.tarball_ranges();
    let want: Vec<Option<String>> = [None, Some(400_000), Some(800_000), Some(1_200_000)]
        .into_iter()
        .chain([Some(1_600_000)])
        .map(|s| s.map(|n| format!("bytes={n}-")))
        .collect();
    assert_eq!(ranges, want);
    assert_eq!(leftovers(&lab.site), ["lock"]);
}

#[test]
fn a_wrong_partial_download_is_started_over() {
    let lab = Lab::new();
    lab.mirror.cut(&lab.release.tarball, 300_000, 4);
    lab.fetch(&[]).code(3);
    let parts: Vec<String> = leftovers(&lab.site)
        .into_iter()
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert_eq!(parts.len(), 1, "{parts:?}");
    let part = lab.site.path(&format!(".ovl-tmp/fetch/{}", parts[0]));
    let mut bytes = std::fs::read(&part).unwrap();
    assert_eq!(bytes.len(), 1_200_000);
    bytes[1000] ^= 0xff;
    std::fs::write(&part, bytes).unwrap();
    lab.fetch(&[]).ok();
    lab.assert_files_placed();
    let ranges: Vec<Option<String>> = lab
        .mirror
        .requests_for(&lab.release.tarball)
        .into_iter()
        .map(|r| r.range)
        .skip(4)
        .collect();
    assert_eq!(ranges, [Some("bytes=1200000-".to_string()), None]);
}

#[test]
fn not_found_and_unreachable_name_the_url() {
    let lab = Lab::new();
    let nowhere = lab.url("/nowhere");
    let r = lab.fetch(&["--mirror", &nowhere]).code(3);
    r.stderr_has(&format!(
        "error: {nowhere}/v3.20/releases/x86_64/latest-releases.yaml: HTTP 404 Not Found"
    ));
    let j = lab.fetch(&["--json", "--mirror", &nowhere]).code(3).json();
    // The error object of every failed command (docs/json.md).
    assert_eq!(j["schema"], 1);
    assert_eq!(j["error"]["kind"], "environment");
    assert!(
        j["error"]["text"]
            .as_str()
            .unwrap()
            .contains("latest-releases.yaml")
    );

    std::fs::remove_file(lab.mirror.root().join(&lab.release.tarball[1..])).unwrap();
    lab.fetch(&[]).code(3).stderr_has(&format!(
        "error: {}: HTTP 404 Not Found",
        lab.url(&lab.release.tarball)
    ));

    lab.fetch(&["--mirror", "http://127.0.0.1:1/alpine"])
        .code(3)
        .stderr_has(
            "error: http://127.0.0.1:1/alpine/v3.20/releases/x86_64/latest-releases.yaml: ",
        );
}

#[test]
fn a_missing_ipxe_binary_names_its_url_and_keeps_alpines_files() {
    let lab = Lab::new();
    std::fs::remove_file(lab.mirror.root().join("ipxe/snponly.efi")).unwrap();
    lab.fetch(&[]).code(3).stderr_has(&format!(
        "error: {}: HTTP 404 Not Found",
        lab.url("/ipxe/snponly.efi")
    ));
    assert!(lab.site.path("vmlinuz-lts").is_file());
    assert!(lab.site.path("ipxe.efi").is_file());
    // The next run downloads only what is still missing.
    lab.mirror
        .write("ipxe/snponly.efi", &lab.ipxe["snponly.efi"]);
    let j = lab.fetch(&["--json"]).ok().json();
    let mut want = all("unchanged");
    want.insert("snponly.efi".into(), "created".into());
    assert_eq!(states(&j), want);
    assert_eq!(lab.mirror.requests_for(&lab.release.tarball).len(), 1);
}

#[test]
fn bad_flags_and_settings_exit_with_their_codes() {
    let lab = Lab::new();
    lab.fetch(&["--mirror", "ftp://mirror/alpine"])
        .code(2)
        .stderr_has("expected an http:// or https:// URL");
    lab.fetch(&["--arch", "../x86_64"]).code(2);

    // A flavor the release does not build: the setting is blamed, the tarball is kept.
    let toml = lab.site.read("ovl.toml");
    lab.site.write(
        "ovl.toml",
        &toml.replace("[alpine]\n", "[alpine]\nflavor = \"rpi\"\n"),
    );
    lab.fetch(&[])
        .code(1)
        .stderr_has("ovl.toml: [alpine] flavor = \"rpi\": ")
        .stderr_has("its flavors: lts, virt");
    lab.site.write(
        "ovl.toml",
        &lab.site
            .read("ovl.toml")
            .replace("flavor = \"rpi\"", "flavor = \"virt\""),
    );
    let j = lab.fetch(&["--json"]).ok().json();
    assert_eq!(j["files"][0]["name"], "vmlinuz-virt");
    assert_eq!(
        lab.mirror.requests_for(&lab.release.tarball).len(),
        1,
        "the verified tarball was kept for the other flavor"
    );
    assert_eq!(
        std::fs::read(lab.site.path("vmlinuz-virt")).unwrap(),
        lab.release.files["vmlinuz-virt"]
    );

    lab.site
        .write("ovl.toml", "[alpine]\nmirror = \"/srv/alpine\"\n");
    lab.fetch(&[])
        .code(1)
        .stderr_has("ovl.toml: [alpine] mirror = \"/srv/alpine\": ovl fetch needs");
    let empty = TestSite::empty();
    let mut c = empty.command();
    run(c.arg("fetch")).code(3);
}

#[test]
fn two_fetches_never_run_at_once_in_a_site() {
    let lab = Lab::new();
    let dir = lab.site.path(".ovl-tmp/fetch");
    std::fs::create_dir_all(&dir).unwrap();
    let f = std::fs::File::create(dir.join("lock")).unwrap();
    // SAFETY: flock on a file descriptor this test owns.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) },
        0
    );
    lab.fetch(&[])
        .code(3)
        .stderr_has("another `ovl fetch` is running in this site");
    drop(f);
    lab.fetch(&[]).ok();
}

#[test]
fn ipxe_comes_from_the_system_package_on_x86_only() {
    let lab = Lab::new();
    let package = lab.site.scratch("ipxe-package");
    std::fs::create_dir_all(&package).unwrap();
    for (i, name) in IPXE.iter().enumerate() {
        std::fs::write(package.join(name), noise(60_000, 200 + i as u64)).unwrap();
    }
    let toml = lab.site.read("ovl.toml");
    let old = lab.site.scratch("no-ipxe-package");
    lab.site.write(
        "ovl.toml",
        &toml.replace(old.to_str().unwrap(), package.to_str().unwrap()),
    );
    let j = lab.fetch(&["--json"]).ok().json();
    for name in IPXE {
        let f = j["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap();
        assert_eq!(f["source"], package.join(name).to_str().unwrap());
        assert_eq!(
            sha256_file(&lab.site.path(name)),
            sha256_file(&package.join(name))
        );
    }
    assert!(lab.mirror.requests_for("/ipxe/ipxe.efi").is_empty());

    // Debian's package holds x86 binaries: another architecture downloads them.
    lab.mirror
        .alpine_release("v3.20", "3.20.3", "aarch64", &["lts", "virt"]);
    let j = lab.fetch(&["--json", "--arch", "aarch64"]).ok().json();
    assert_eq!(j["release"]["arch"], "aarch64");
    assert_eq!(lab.mirror.requests_for("/ipxe/ipxe.efi").len(), 1);
    assert_eq!(
        std::fs::read(lab.site.path("ipxe.efi")).unwrap(),
        lab.ipxe["ipxe.efi"]
    );
}

#[test]
fn check_warns_about_missing_boot_files_without_failing() {
    let lab = Lab::with_settings("[serve]\ndhcp = \"proxy\"\n");
    let r = lab.site.ovl(&["check"]).ok();
    assert!(
        r.stdout.starts_with("ok: 1 profiles, 1 devices"),
        "{}",
        r.stdout
    );
    for name in [
        "vmlinuz-lts",
        "initramfs-lts",
        "modloop-lts",
        "undionly.kpxe",
        "ipxe.efi",
    ] {
        let path = lab.site.path(name);
        assert!(
            r.stderr.contains(&format!(
                "warning: boot file {name} ({}): missing; devices cannot boot without it: run `ovl fetch`",
                path.display()
            )),
            "{name}: {}",
            r.stderr
        );
    }
    let j = lab.site.ovl(&["check", "--json"]).ok().json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["warnings"].as_array().unwrap().len(), 5);
    let roles: Vec<&str> = j["boot_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["kernel", "initramfs", "modloop", "dhcp", "dhcp"]);

    std::fs::create_dir(lab.site.path("vmlinuz-lts")).unwrap();
    lab.site.write("initramfs-lts", "");
    lab.site
        .ovl(&["check"])
        .ok()
        .stderr_has("boot file vmlinuz-lts")
        .stderr_has("not a regular file")
        .stderr_has("empty; devices cannot boot");
    std::fs::remove_dir(lab.site.path("vmlinuz-lts")).unwrap();

    lab.fetch(&[]).ok();
    let r = lab.site.ovl(&["check", "--json"]).ok();
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
    let j = r.json();
    let kernel = &j["boot_files"][0];
    assert_eq!(kernel["version"], "3.20.3");
    assert_eq!(kernel["sha256"], sha256(&lab.release.files["vmlinuz-lts"]));
    assert_eq!(kernel["size"], lab.release.files["vmlinuz-lts"].len());
    assert!(kernel["problem"].is_null());
    assert_eq!(j["boot_files"][3]["name"], "undionly.kpxe");
    assert_eq!(
        j["boot_files"][3]["sha256"],
        sha256(&lab.ipxe["undionly.kpxe"])
    );

    // A file changed by hand keeps its size in the listing but loses the recorded checksum.
    lab.site.write("vmlinuz-lts", "my own kernel");
    let j = lab.site.ovl(&["check", "--json"]).ok().json();
    assert!(j["boot_files"][0]["sha256"].is_null());
    assert_eq!(j["boot_files"][0]["size"], 13);

    // A DHCP boot file fetch does not provide gets another hint.
    let toml = lab.site.read("ovl.toml");
    lab.site.write(
        "ovl.toml",
        &toml.replace(
            "dhcp = \"proxy\"",
            "dhcp = { mode = \"proxy\", boot_files = { \"0\" = \"custom.kpxe\" } }",
        ),
    );
    lab.site
        .ovl(&["check"])
        .ok()
        .stderr_has("boot file custom.kpxe")
        .stderr_has("put it there yourself");
}
