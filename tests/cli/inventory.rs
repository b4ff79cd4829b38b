//! The inventory from scripts: `ovl device add|set|rm` keep a commented `devices.toml`
//! byte-identical outside the edited entry, check the whole edited inventory before writing
//! (a bad edit writes nothing and exits 1), and rebuild or remove the device's archive.

use std::time::SystemTime;

use crate::harness::site::TestSite;

/// An inventory with comments, blank lines and spellings of its own.
const DEVICES: &str = "\
# Hall and office devices.   Keep sorted by room!

[[device]]
mac = \"52-54-00-12-34-56\"    # the big screen
profile = \"XL\"
hostname   = \"kiosk-hall\"      # as on the label
ip = \"192.168.0.50\"
overlays = [ \"special/hall\" ]
[device.vars]
screen = 'portrait'   # rotated

    # office, second floor
[[device]]
mac = \"525400ABCD02\"
profile = \"S\"
hostname = \"thin-office-2\"
# trailing comment of the file
";

/// The example site with [`DEVICES`] as its inventory.
fn site() -> TestSite {
    let s = TestSite::example();
    s.write("devices.toml", DEVICES);
    s
}

/// `devices.toml`'s bytes and mtime.
fn inventory(site: &TestSite) -> (String, SystemTime) {
    let p = site.path("devices.toml");
    (
        site.read("devices.toml"),
        std::fs::metadata(p).unwrap().modified().unwrap(),
    )
}

#[test]
fn add_set_rm_change_only_their_entry_and_its_archive() {
    let site = site();
    site.ovl(&["build", "--all"]).ok();
    let new = "02:00:00:00:00:09";
    site.ovl(&[
        "device",
        "add",
        "02-00-00-00-00-09",
        "--profile",
        "S",
        "--hostname",
        "lobby-1",
        "--ip",
        "192.168.0.77",
        "--overlay",
        "special/hall",
        "--var",
        "screen=wide",
    ])
    .ok()
    .stdout_has("added 02:00:00:00:00:09 to ")
    .stdout_has("; created configs/02:00:00:00:00:09.tar.gz (lobby-1, ");
    let entry = "\n[[device]]\nmac = \"02:00:00:00:00:09\"\nprofile = \"S\"\nhostname = \"lobby-1\"\nip = \"192.168.0.77\"\noverlays = [\"special/hall\"]\n[device.vars]\nscreen = \"wide\"\n";
    // Appended after the last entry, before the file's trailing comment.
    let (cut, tail) = DEVICES.split_at(DEVICES.find("# trailing").unwrap());
    let added = format!("{cut}{entry}{tail}");
    assert_eq!(site.read("devices.toml"), added);
    assert_eq!(site.archive_member(new, "etc/hostname"), "lobby-1\n");
    assert!(!site.archive_member(new, "etc/kiosk/hall.conf").is_empty());

    site.ovl(&[
        "device",
        "set",
        "52:54:00:12:34:56",
        "--hostname",
        "kiosk-lobby",
        "--unset-var",
        "screen",
        "--var",
        "rotate=90",
    ])
    .ok()
    .stdout_has("changed 52:54:00:12:34:56 in ")
    .stdout_has("; updated configs/52:54:00:12:34:56.tar.gz (kiosk-lobby, ");
    // The value changes; its spacing and comment stay, and so does every other byte.
    assert_eq!(
        site.read("devices.toml"),
        added
            .replace(
                "hostname   = \"kiosk-hall\"",
                "hostname   = \"kiosk-lobby\""
            )
            .replace("screen = 'portrait'   # rotated\n", "rotate = \"90\"\n")
    );
    assert_eq!(
        site.archive_member("52:54:00:12:34:56", "etc/hostname"),
        "kiosk-lobby\n"
    );
    // Back as it was: the file is byte for byte the original plus the new device.
    site.ovl(&[
        "device",
        "set",
        "525400123456",
        "--hostname",
        "kiosk-hall",
        "--unset-var",
        "rotate",
        "--var",
        "screen=portrait",
    ])
    .ok();
    site.ovl(&["device", "rm", new])
        .ok()
        .stdout_has(&format!("removed {new} from "));
    assert_eq!(
        site.read("devices.toml"),
        DEVICES.replace(
            "screen = 'portrait'   # rotated\n",
            "screen = \"portrait\"\n"
        )
    );
    assert!(!site.path(&format!("configs/{new}.tar.gz")).exists());
    // --keep-archive leaves an orphan that list --all shows and prune removes.
    let j = site
        .ovl(&[
            "--json",
            "device",
            "rm",
            "52:54:00:ab:cd:02",
            "--keep-archive",
        ])
        .ok()
        .json();
    assert_eq!(j["schema"], 1);
    assert_eq!(j["action"], "rm");
    assert_eq!(j["archive"]["state"], "unchanged");
    assert_eq!(j["archive"]["published"], true);
    assert!(
        !site.read("devices.toml").contains("second floor"),
        "the entry's comment goes with it"
    );
    let j = site.ovl(&["list", "--all", "--json"]).ok().json();
    let states: Vec<(&str, &str)> = j["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["mac"].as_str().unwrap(), d["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("52:54:00:12:34:56", "built"),
            ("52:54:00:ab:cd:02", "orphan"),
        ]
    );
}

#[test]
fn set_can_unset_and_replace() {
    let site = site();
    site.ovl(&[
        "device",
        "set",
        "52:54:00:12:34:56",
        "--no-ip",
        "--no-overlays",
        "--profile",
        "S",
    ])
    .ok();
    assert_eq!(
        site.read("devices.toml"),
        DEVICES
            .replace(
                "ip = \"192.168.0.50\"\noverlays = [ \"special/hall\" ]\n",
                ""
            )
            .replace("profile = \"XL\"", "profile = \"S\"")
    );
    let j = site
        .ovl(&["show", "--json", "--mac", "52:54:00:12:34:56"])
        .ok()
        .json();
    assert_eq!(j["profile"], "S");
    assert_eq!(j["ip"], serde_json::Value::Null);
    site.ovl(&["device", "set", "52:54:00:12:34:56"]).code(2);
    site.ovl(&[
        "device",
        "set",
        "52:54:00:12:34:56",
        "--ip",
        "1.2.3.4",
        "--no-ip",
    ])
    .code(2);
}

#[test]
fn a_bad_edit_writes_nothing_and_exits_1() {
    let site = site();
    site.ovl(&["build", "--all"]).ok();
    let before = inventory(&site);
    let archives = site.snapshot();
    let refused: [(&[&str], &str); 7] = [
        (
            &[
                "device",
                "add",
                "02:00:00:00:00:09",
                "--profile",
                "S",
                "--ip",
                "192.168.0.50",
            ],
            "duplicate IP 192.168.0.50 (first declared at ",
        ),
        (
            &["device", "add", "02:00:00:00:00:09", "--profile", "XXL"],
            "unknown profile `XXL`",
        ),
        (
            &[
                "device",
                "add",
                "02:00:00:00:00:09",
                "--profile",
                "S",
                "--hostname",
                "KIOSK-hall",
            ],
            "duplicate hostname KIOSK-hall",
        ),
        (
            &[
                "device",
                "add",
                "02:00:00:00:00:09",
                "--profile",
                "S",
                "--hostname",
                "bad_name",
            ],
            "invalid hostname \"bad_name\"",
        ),
        (
            &["device", "add", "52:54:00:ab:cd:02", "--profile", "S"],
            "device 52:54:00:ab:cd:02: already in ",
        ),
        (
            &["device", "set", "02:00:00:00:00:77", "--profile", "S"],
            "device 02:00:00:00:00:77: not in ",
        ),
        (
            &[
                "device",
                "add",
                "02:00:00:00:00:09",
                "--profile",
                "S",
                "--overlay",
                "nowhere",
            ],
            "nowhere",
        ),
    ];
    for (args, message) in refused {
        let r = site.ovl(args).code(1).stderr_has(message);
        assert!(
            r.stderr.contains("nothing written")
                || r.stderr.contains("already in")
                || r.stderr.contains("not in"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(before, inventory(&site), "{args:?} wrote devices.toml");
        assert_eq!(archives, site.snapshot(), "{args:?} touched an archive");
    }
    // Usage errors: a MAC that is none, a variable without a value.
    site.ovl(&["device", "add", "52:54:00:zz", "--profile", "S"])
        .code(2);
    site.ovl(&[
        "device",
        "add",
        "02:00:00:00:00:09",
        "--profile",
        "S",
        "--var",
        "novalue",
    ])
    .code(2);
    // An inventory broken by hand is not made worse: the edit is refused with its error.
    site.write(
        "devices.toml",
        &format!("{DEVICES}[[device]]\nmac = \"52:54:00:12:34:56\"\nprofile = \"S\"\n"),
    );
    let broken = inventory(&site);
    site.ovl(&["device", "add", "02:00:00:00:00:09", "--profile", "S"])
        .code(1)
        .stderr_has("duplicate MAC 52:54:00:12:34:56");
    assert_eq!(broken, inventory(&site));
    let j = site
        .ovl(&[
            "--json",
            "device",
            "add",
            "02:00:00:00:00:09",
            "--profile",
            "S",
        ])
        .code(1)
        .json();
    assert_eq!(j["error"]["kind"], "input");
    assert_eq!(j["error"]["line"], 19);
}

#[test]
fn add_to_a_site_without_an_inventory() {
    let site = TestSite::new();
    std::fs::remove_file(site.path("devices.toml")).unwrap();
    let j = site
        .ovl(&[
            "--json",
            "device",
            "add",
            "02:00:00:00:00:09",
            "--profile",
            "S",
        ])
        .ok()
        .json();
    assert_eq!(j["written"], true);
    assert_eq!(j["archive"]["state"], "created");
    assert_eq!(j["device"]["hostname"], serde_json::Value::Null);
    assert_eq!(
        site.read("devices.toml"),
        "[[device]]\nmac = \"02:00:00:00:00:09\"\nprofile = \"S\"\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(site.path("devices.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    assert!(
        std::fs::read_dir(site.path(".ovl-tmp")).map_or(true, |mut d| d.next().is_none()),
        "temporary files left"
    );
    assert!(site.path(".ovl-state/devices.lock").is_file());
}

#[test]
fn a_hostname_clash_with_a_rendered_one_writes_nothing() {
    // The one device of the test site is s-123456 by its profile's template.
    let site = TestSite::new();
    site.ovl(&["build", "--all"]).ok();
    let before = inventory(&site);
    let archives = site.snapshot();
    site.ovl(&[
        "device",
        "add",
        "02:00:00:00:00:09",
        "--profile",
        "S",
        "--hostname",
        "s-123456",
    ])
    .code(1)
    .stderr_has(
        "device 02:00:00:00:00:09: hostname s-123456 is also the hostname of 52:54:00:12:34:56",
    )
    .stderr_has("(nothing written)");
    assert_eq!(before, inventory(&site));
    assert_eq!(archives, site.snapshot());
}
