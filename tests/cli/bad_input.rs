//! Bad input: a clear error naming file:line:col (or the path, or the MAC), a non-zero exit
//! code, and every published archive left byte-identical.

use std::process::Command;

use crate::harness::proc::require_root;
use crate::harness::site::{MAC, TestSite, python_tar};

/// Build `site` once, apply `breakage`, build again: the failure must match and nothing change.
fn breaks(breakage: impl FnOnce(&TestSite), code: i32, messages: &[&str]) {
    let site = TestSite::new();
    site.ovl(&["build", "--all"]).ok();
    let before = site.snapshot();
    assert_eq!(before.len(), 1);
    breakage(&site);
    let mut run = site.ovl(&["build", "--all"]).code(code);
    for m in messages {
        run = run.stderr_has(m);
    }
    assert_eq!(
        before,
        site.snapshot(),
        "an archive changed after a failed build"
    );
    // `check` reports the same problem.
    let check = site.ovl(&["check"]);
    assert_ne!(check.code, 0, "check passed on bad input");
    // No temporary files left behind.
    for e in std::fs::read_dir(site.path("configs")).unwrap() {
        let n = e.unwrap().file_name();
        assert!(!n.to_string_lossy().starts_with('.'), "left {n:?}");
    }
}

#[test]
fn toml_syntax_error() {
    breaks(
        |s| {
            s.write(
                "profiles/S.toml",
                "overlays = [\"base\"]\npackages = [\"openssh\",\n  oops]\n",
            );
        },
        1,
        &["profiles/S.toml:3:3"],
    );
}

#[test]
fn unknown_key_with_suggestion() {
    breaks(
        |s| {
            s.write(
                "profiles/S.toml",
                "overlays = [\"base\"]\npakages = [\"openssh\"]\n",
            );
        },
        1,
        &[
            "profiles/S.toml:2:1",
            "unknown key `pakages`; did you mean `packages`?",
        ],
    );
}

#[test]
fn unknown_key_in_site_settings() {
    breaks(
        |s| {
            s.write("ovl.toml", "[alpine]\nflavour = \"lts\"\n");
        },
        1,
        &["ovl.toml:2:1", "did you mean `flavor`?"],
    );
}

#[test]
fn unknown_profile() {
    breaks(
        |s| {
            s.write(
                "devices.toml",
                &format!("[[device]]\nmac = \"{MAC}\"\nprofile = \"XXL\"\n"),
            );
        },
        1,
        &["devices.toml:3:11", "unknown profile `XXL`"],
    );
}

#[test]
fn extends_cycle() {
    breaks(
        |s| {
            s.write("profiles/S.toml", "extends = \"XL\"\n");
            s.write("profiles/XL.toml", "extends = \"S\"\n");
        },
        1,
        &["`extends` cycle: ", "S → XL → S"],
    );
}

#[test]
fn missing_overlay_folder() {
    breaks(
        |s| {
            s.write("profiles/S.toml", "overlays = [\"base\", \"nope\"]\n");
        },
        1,
        &["overlays/nope: overlay folder does not exist"],
    );
}

#[test]
fn invalid_mac_in_inventory() {
    breaks(
        |s| {
            s.write(
                "devices.toml",
                "[[device]]\nmac = \"52:54:00:12:34\"\nprofile = \"S\"\n",
            );
        },
        1,
        &["devices.toml:2:7", "invalid MAC address \"52:54:00:12:34\""],
    );
}

#[test]
fn invalid_mac_on_the_command_line_is_a_usage_error() {
    let site = TestSite::new();
    site.ovl(&["build", "--mac", "zz:54:00:12:34:56"])
        .code(2)
        .stderr_has("invalid MAC address");
}

#[test]
fn duplicate_mac_hostname_ip() {
    let dup = |a: &str, b: &str| {
        format!(
            "[[device]]\nmac = \"{MAC}\"\nprofile = \"S\"\n{a}\n[[device]]\nmac = \"52:54:00:00:00:02\"\nprofile = \"S\"\n{b}\n"
        )
    };
    breaks(
        |s| {
            s.write("devices.toml", &format!("[[device]]\nmac = \"{MAC}\"\nprofile = \"S\"\n[[device]]\nmac = \"52-54-00-12-34-56\"\nprofile = \"S\"\n"));
        },
        1,
        &[
            "devices.toml:5:7",
            "duplicate MAC 52:54:00:12:34:56 (first declared at",
        ],
    );
    breaks(
        |s| {
            s.write("devices.toml", &dup("hostname = \"a\"", "hostname = \"a\""));
        },
        1,
        &["devices.toml:8:12", "duplicate hostname a"],
    );
    breaks(
        |s| {
            s.write(
                "devices.toml",
                &dup("ip = \"10.0.0.5\"", "ip = \"10.0.0.5\""),
            );
        },
        1,
        &["devices.toml:8:6", "duplicate IP 10.0.0.5"],
    );
}

#[test]
fn template_with_undefined_variable() {
    breaks(
        |s| {
            s.write(
                "overlays/base/etc/app.conf.j2",
                "host={{ hostname }}\nscreen={{ vars.screen }}\n",
            );
        },
        1,
        &["overlays/base/etc/app.conf.j2:2:", "undefined"],
    );
    breaks(
        |s| {
            s.write(
                "profiles/S.toml",
                "overlays = [\"base\"]\nhostname = \"s-{{ serial }}\"\n",
            );
        },
        1,
        &["profiles/S.toml", "template in hostname", "undefined"],
    );
}

#[test]
#[ignore = "needs root: drops to nobody with setpriv, as root reads anything"]
fn unreadable_file() {
    // Root reads anything: drop to nobody for the failing build.
    require_root("setpriv --reuid");
    let site = TestSite::new();
    site.ovl(&["build", "--all"]).ok();
    let before = site.snapshot();
    site.write("overlays/base/etc/secret", "x\n")
        .chmod("overlays/base/etc/secret", 0o000);
    let st = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(site.root())
        .status()
        .unwrap();
    assert!(st.success());
    site.chmod("overlays/base/etc/secret", 0o000);
    std::fs::set_permissions(
        site.root().parent().unwrap(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .ok();
    let run = site.ovl_as_nobody(&["build", "--all"]).code(3);
    let stderr = &run.stderr;
    assert!(
        stderr.contains("overlays/base/etc/secret: Permission denied"),
        "{stderr}"
    );
    assert_eq!(before, site.snapshot());
}

#[test]
fn symlink_loop_in_an_overlay() {
    breaks(
        |s| {
            s.symlink("overlays/base/etc/a", "b");
            s.symlink("overlays/base/etc/b", "/etc/a");
        },
        1,
        &["device 52:54:00:12:34:56: symlink loop in overlays/base: etc/a → etc/b → etc/a"],
    );
}

#[test]
fn lbu_archive_with_dotdot_absolute_or_device_node() {
    let cases = [
        (
            r#"[("../evil", "f", "x", 0o644, 0, 0, "")]"#,
            "member \"../evil\" contains `..`",
        ),
        (
            r#"[("etc/../../evil", "f", "x", 0o644, 0, 0, "")]"#,
            "contains `..`",
        ),
        (
            r#"[("/etc/evil", "f", "x", 0o644, 0, 0, "")]"#,
            "member \"/etc/evil\" has an absolute name",
        ),
        (
            r#"[("dev/sda", "b", "", 0o600, 0, 0, "")]"#,
            "member dev/sda is a device node",
        ),
        (
            r#"[("dev/null", "c", "", 0o666, 0, 0, "")]"#,
            "member dev/null is a device node",
        ),
        (
            r#"[("etc/x", "l", "", 0o777, 0, 0, "../../../etc/shadow")]"#,
            "escapes the root",
        ),
    ];
    for (members, msg) in cases {
        breaks(
            |s| {
                python_tar(&s.path("captures/ref.apkovl.tar.gz"), members);
                s.write(
                    "profiles/S.toml",
                    "overlays = [\"base\", \"captures/ref.apkovl.tar.gz\"]\n",
                );
            },
            1,
            &["captures/ref.apkovl.tar.gz", msg],
        );
    }
    // Nothing was written outside the site while reading them.
    assert!(!std::path::Path::new("/evil").exists() && !std::path::Path::new("/etc/evil").exists());
}

#[test]
fn truncated_lbu_archive() {
    breaks(
        |s| {
            python_tar(
                &s.path("captures/ref.apkovl.tar.gz"),
                r#"[("etc/big", "f", "x" * 100000, 0o644, 0, 0, "")]"#,
            );
            let b = std::fs::read(s.path("captures/ref.apkovl.tar.gz")).unwrap();
            s.write_bytes("captures/ref.apkovl.tar.gz", &b[..b.len() / 2]);
            s.write(
                "profiles/S.toml",
                "overlays = [\"base\", \"captures/ref.apkovl.tar.gz\"]\n",
            );
        },
        1,
        &["captures/ref.apkovl.tar.gz: not a readable gzip-compressed tar archive"],
    );
}

#[test]
fn file_and_folder_collide_between_layers() {
    breaks(
        |s| {
            s.write("overlays/other/etc/motd/part", "x\n");
            s.write("profiles/S.toml", "overlays = [\"base\", \"other\"]\n");
        },
        1,
        &[
            "device 52:54:00:12:34:56: etc/motd is a file in overlays/base but a dir in overlays/other",
        ],
    );
}

#[test]
fn one_bad_device_does_not_stop_the_others() {
    let site = TestSite::new();
    site.write(
        "devices.toml",
        &format!("[[device]]\nmac = \"{MAC}\"\nprofile = \"S\"\n[[device]]\nmac = \"52:54:00:00:00:02\"\nprofile = \"S\"\n[device.vars]\nx = 1\n"),
    );
    site.ovl(&["build", "--all"]).ok();
    let good = std::fs::read(site.archive("52:54:00:00:00:02")).unwrap();
    let bad_before = std::fs::read(site.archive(MAC)).unwrap();
    site.write("overlays/base/etc/x.j2", "{{ vars.x }}\n");
    site.write(
        "profiles/S.toml",
        "overlays = [\"base\"]\npackages = [\"htop\"]\n",
    );
    let r = site.ovl(&["build", "--all", "--json"]).code(1).json();
    assert_eq!(r["counts"]["failed"], 1);
    assert_eq!(r["counts"]["updated"], 1);
    assert_eq!(bad_before, std::fs::read(site.archive(MAC)).unwrap());
    assert_ne!(
        good,
        std::fs::read(site.archive("52:54:00:00:00:02")).unwrap()
    );
}

#[test]
fn hostnames_that_templates_render_alike_are_duplicates() {
    breaks(
        |s| {
            s.write(
                "profiles/S.toml",
                "overlays = [\"base\"]\nhostname = \"kiosk-{{ vars.room }}\"\n[vars]\nroom = \"hall\"\n",
            );
            s.write(
                "devices.toml",
                &format!("[[device]]\nmac = \"{MAC}\"\nprofile = \"S\"\n[[device]]\nmac = \"52:54:00:00:00:02\"\nprofile = \"S\"\n"),
            );
        },
        1,
        &[
            "device 52:54:00:12:34:56: hostname kiosk-hall is also the hostname of 52:54:00:00:00:02",
            "device 52:54:00:00:00:02: hostname kiosk-hall is also the hostname of 52:54:00:12:34:56",
        ],
    );
    // A template and a literal hostname that meet are duplicates too; check says so.
    let site = TestSite::new();
    site.write(
        "devices.toml",
        &format!("[[device]]\nmac = \"{MAC}\"\nprofile = \"S\"\n[[device]]\nmac = \"52:54:00:00:00:02\"\nprofile = \"S\"\nhostname = \"s-123456\"\n"),
    );
    site.ovl(&["check"]).code(1).stderr_has(
        "device 52:54:00:12:34:56: hostname s-123456 is also the hostname of 52:54:00:00:00:02",
    );
}

#[test]
fn removals_that_remove_nothing_are_errors_with_a_suggestion() {
    let base = "packages = [\"nano\", \"openssh\"]\n[services]\ndefault = [\"crond\", \"sshd\"]\n";
    breaks(
        |s| {
            s.write("profiles/base.toml", base);
            s.write(
                "profiles/S.toml",
                "extends = \"base\"\noverlays = [\"base\"]\npackages = [\"htop\", \"!nanoo\"]\n",
            );
        },
        1,
        &[
            "profiles/S.toml:3:21: packages: \"!nanoo\" removes nothing: no profile of the chain and no layer brings package nanoo; did you mean \"!nano\"?",
        ],
    );
    breaks(
        |s| {
            s.write("profiles/base.toml", base);
            s.write(
                "profiles/S.toml",
                "extends = \"base\"\noverlays = [\"base\"]\n[services]\ndefault = [\"!cron\"]\n",
            );
        },
        1,
        &[
            "profiles/S.toml:4:12: services: \"!cron\" removes nothing: no profile of the chain and no layer brings service cron from runlevel default; did you mean \"!crond\"?",
        ],
    );
    // Removing what only a layer brings (a capture's world, its runlevel links) is fine.
    let site = TestSite::new();
    python_tar(
        &site.path(&format!("captures/{MAC}/h.apkovl.tar.gz")),
        r#"[("etc/apk/world", "f", "htop\n", 0o644, 0, 0, ""),
            ("etc/runlevels/default/crond", "l", "", 0o777, 0, 0, "/etc/init.d/crond")]"#,
    );
    site.write(
        "profiles/S.toml",
        "overlays = [\"base\"]\npackages = [\"!htop\"]\n[services]\ndefault = [\"!crond\"]\n",
    );
    site.ovl(&["build", "--all"]).ok();
    assert_eq!(site.archive_member(MAC, "etc/apk/world"), "");
}
