//! The keys of `ovl.toml` and of profile files, written down once. The README's key tables
//! and the man pages ovl.toml(5) and ovl-profile(5) come from these rows; the tests check
//! that the README holds exactly these tables and that every key the parsers accept has a
//! row (and every row a key).

/// One row of a key table; the cells are Markdown (`code` spans and plain text).
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The TOML table of the keys: `boot`, `serve.dhcp`, `files.PATH`, …; empty for the top
    /// level of the file.
    pub section: &'static str,
    /// The keys the row documents.
    pub names: &'static [&'static str],
    /// The key cell.
    pub key: &'static str,
    /// The default cell (empty for profile keys).
    pub default: &'static str,
    /// The meaning cell.
    pub meaning: &'static str,
}

/// The Markdown table of `keys` as the README holds it; `defaults` adds the default column.
pub fn markdown_table(keys: &[Key], defaults: bool) -> String {
    let mut out = if defaults {
        String::from("| key | default | meaning |\n|---|---|---|\n")
    } else {
        String::from("| key | meaning |\n|---|---|\n")
    };
    for k in keys {
        if defaults {
            out.push_str(&format!("| {} | {} | {} |\n", k.key, k.default, k.meaning));
        } else {
            out.push_str(&format!("| {} | {} |\n", k.key, k.meaning));
        }
    }
    out
}

/// Every key of `ovl.toml`, in the order of the README's table.
pub static SITE_KEYS: &[Key] = &[
    Key {
        section: "alpine",
        names: &["version"],
        key: "`[alpine] version`",
        default: "`\"v3.20\"`",
        meaning: "Alpine release in repository URLs",
    },
    Key {
        section: "alpine",
        names: &["flavor"],
        key: "`[alpine] flavor`",
        default: "`\"lts\"`",
        meaning: "kernel flavor: `vmlinuz-FLAVOR`, `initramfs-FLAVOR`, `modloop-FLAVOR`",
    },
    Key {
        section: "alpine",
        names: &["mirror"],
        key: "`[alpine] mirror`",
        default: "`\"http://dl-cdn.alpinelinux.org/alpine\"`",
        meaning: "package mirror; `ovl fetch` takes the boot files from it",
    },
    Key {
        section: "alpine",
        names: &["arch"],
        key: "`[alpine] arch`",
        default: "`\"x86_64\"`",
        meaning: "the devices' architecture: the mirror's `releases/ARCH/` folder `ovl fetch` reads",
    },
    Key {
        section: "fetch",
        names: &["ipxe_files"],
        key: "`[fetch] ipxe_files`",
        default: "`[\"undionly.kpxe\", \"ipxe.efi\", \"snponly.efi\"]`",
        meaning: "iPXE binaries `ovl fetch` puts in the site (`[]`: none)",
    },
    Key {
        section: "fetch",
        names: &["ipxe_dir"],
        key: "`[fetch] ipxe_dir`",
        default: "`\"/usr/lib/ipxe\"`",
        meaning: "the system's iPXE package (Debian's `ipxe`), copied from for x86",
    },
    Key {
        section: "fetch",
        names: &["ipxe_url"],
        key: "`[fetch] ipxe_url`",
        default: "`\"https://boot.ipxe.org\"`",
        meaning: "where iPXE binaries are downloaded from otherwise (`URL/NAME`)",
    },
    Key {
        section: "fetch",
        names: &["timeout"],
        key: "`[fetch] timeout`",
        default: "`30`",
        meaning: "seconds without a byte (or a response) before a download attempt is retried, 1–3600",
    },
    Key {
        section: "boot",
        names: &["server"],
        key: "`[boot] server`",
        default: "the HTTP listen address, else iPXE's `${next-server}`",
        meaning: "address devices use for HTTP/TFTP",
    },
    Key {
        section: "boot",
        names: &["modules"],
        key: "`[boot] modules`",
        default: "`[\"loop\", \"squashfs\", \"sd-mod\", \"usb-storage\"]`",
        meaning: "`modules=` on the kernel line",
    },
    Key {
        section: "boot",
        names: &["ssh_key"],
        key: "`[boot] ssh_key`",
        default: "`\"sshkeys.pub\"`",
        meaning: "site file passed as `ssh_key=` when it exists",
    },
    Key {
        section: "boot",
        names: &["nfs"],
        key: "`[boot] nfs`",
        default: "unset",
        meaning: "NFS export of the site's `captures/` folder (never the whole site), `HOST:/PATH`: enables the lbu round trip (below)",
    },
    Key {
        section: "boot",
        names: &["nfs_anonuid", "nfs_anongid"],
        key: "`[boot] nfs_anonuid`, `nfs_anongid`",
        default: "owner and group of `captures/`",
        meaning: "uid and gid every device's NFS writes are squashed to",
    },
    Key {
        section: "boot",
        names: &["kernel_args"],
        key: "`[boot] kernel_args`",
        default: "`[]`",
        meaning: "extra kernel arguments for every device",
    },
    Key {
        section: "boot",
        names: &["alpine_repo"],
        key: "`[boot] alpine_repo`",
        default: "`MIRROR/VERSION/main`",
        meaning: "`alpine_repo=` value",
    },
    Key {
        section: "boot",
        names: &["tries"],
        key: "`[boot] tries`",
        default: "`5`",
        meaning: "how many times the boot script tries each step (kernel, initramfs, boot), 1–20",
    },
    Key {
        section: "boot",
        names: &["retry_delay"],
        key: "`[boot] retry_delay`",
        default: "`2`",
        meaning: "seconds the boot script waits after a failed try, doubled after each further one (at most 300), 1–300",
    },
    Key {
        section: "boot",
        names: &["on_failure"],
        key: "`[boot] on_failure`",
        default: "`\"reboot\"`",
        meaning: "what a device does when a step failed `tries` times: `\"reboot\"`, `\"exit\"` or `\"shell\"`",
    },
    Key {
        section: "build",
        names: &["compression"],
        key: "`[build] compression`",
        default: "`6`",
        meaning: "gzip level, 1–9",
    },
    Key {
        section: "build",
        names: &["mtime"],
        key: "`[build] mtime`",
        default: "`946684800` (2000-01-01)",
        meaning: "entry time in archives when `SOURCE_DATE_EPOCH` is unset",
    },
    Key {
        section: "build",
        names: &["max_capture_bytes"],
        key: "`[build] max_capture_bytes`",
        default: "`268435456` (256 MiB)",
        meaning: "most bytes the files of one lbu archive layer (a capture, a reference archive) may hold uncompressed; a member or a total over it is an error naming the archive and the member",
    },
    Key {
        section: "capture",
        names: &["history"],
        key: "`[capture] history`",
        default: "`10`",
        meaning: "build manifests kept per device in `.ovl-state/manifests/MAC/` (the bases of capture merges), 1–1000",
    },
    Key {
        section: "capture",
        names: &["conflicts"],
        key: "`[capture] conflicts`",
        default: "`\"device\"`",
        meaning: "who wins a file both a device's capture and the fleet changed: `\"device\"` or `\"fleet\"` (always reported)",
    },
    Key {
        section: "serve",
        names: &["interface"],
        key: "`[serve] interface`",
        default: "unset",
        meaning: "interface for DHCP",
    },
    Key {
        section: "serve",
        names: &["http"],
        key: "`[serve] http`",
        default: "`\"0.0.0.0:80\"`",
        meaning: "HTTP listen address or `\"off\"`; its port also goes into the boot URLs",
    },
    Key {
        section: "serve",
        names: &["tftp"],
        key: "`[serve] tftp`",
        default: "`\"0.0.0.0:69\"`",
        meaning: "TFTP listen address or `\"off\"`",
    },
    Key {
        section: "serve",
        names: &["dhcp"],
        key: "`[serve] dhcp`",
        default: "`\"off\"`",
        meaning: "`\"off\"`, `\"proxy\"`, `\"full\"`, or a `[serve.dhcp]` table",
    },
    Key {
        section: "serve",
        names: &["configs_access"],
        key: "`[serve] configs_access`",
        default: "`\"any\"`",
        meaning: "`\"any\"` or `\"owner\"`",
    },
    Key {
        section: "serve",
        names: &["default_profile"],
        key: "`[serve] default_profile`",
        default: "unset",
        meaning: "profile whose archive blank devices get (unset: a real 404)",
    },
    Key {
        section: "serve",
        names: &["public"],
        key: "`[serve] public`",
        default: "`[]`",
        meaning: "more site files served over HTTP and TFTP: `\"extra.iso\"` one file, `\"alpine/\"` a folder (see [Security](#security))",
    },
    Key {
        section: "serve",
        names: &["max_connections"],
        key: "`[serve] max_connections`",
        default: "`1024`",
        meaning: "HTTP connections open at once (lowered to fit the open-file limit)",
    },
    Key {
        section: "serve",
        names: &["tftp_max_transfers"],
        key: "`[serve] tftp_max_transfers`",
        default: "`2048`",
        meaning: "TFTP transfers running at once, 8 at most per client address; beyond, ERROR 0 \"server busy\" (PXE firmware gives up on it: size it for a whole fleet booting at once)",
    },
    Key {
        section: "serve",
        names: &["header_timeout"],
        key: "`[serve] header_timeout`",
        default: "`10`",
        meaning: "seconds an HTTP client has to send a request's headers (also the longest a kept-alive connection waits for its next request)",
    },
    Key {
        section: "serve",
        names: &["idle_timeout"],
        key: "`[serve] idle_timeout`",
        default: "`30`",
        meaning: "seconds without a byte moving, while a request is answered, before the connection is closed",
    },
    Key {
        section: "serve.dhcp",
        names: &["mode"],
        key: "`[serve.dhcp] mode`",
        default: "`\"full\"` in table form",
        meaning: "`off`, `proxy` or `full`",
    },
    Key {
        section: "serve.dhcp",
        names: &["range"],
        key: "`[serve.dhcp] range`",
        default: "—",
        meaning: "first and last pool address",
    },
    Key {
        section: "serve.dhcp",
        names: &["netmask", "router", "dns", "lease_time"],
        key: "`[serve.dhcp] netmask`, `router`, `dns`, `lease_time`",
        default: "interface's mask (else /24), —, —, `600`",
        meaning: "pool options",
    },
    Key {
        section: "serve.dhcp",
        names: &["boot_files"],
        key: "`[serve.dhcp] boot_files`",
        default: "`{0 = \"undionly.kpxe\", 6/7/9 = \"ipxe.efi\"}`",
        meaning: "boot file by client architecture (option 93); keys are numbers as strings",
    },
    Key {
        section: "serve.dhcp.relay",
        names: &["range", "netmask", "router", "dns", "lease_time"],
        key: "`[[serve.dhcp.relay]] range`, `netmask`, `router`, `dns`, `lease_time`",
        default: "—, —, —, —, the main pool's",
        meaning: "a pool for a subnet (VLAN) behind a DHCP relay, chosen by the relay's address (giaddr)",
    },
    Key {
        section: "serve.dhcp",
        names: &["script_url"],
        key: "`[serve.dhcp] script_url`",
        default: "`HTTP_BASE/boot.ipxe`",
        meaning: "URL iPXE is sent to (`?mac=MAC` appended; `?mac=${net0/mac}` in exports), e.g. `tftp://SERVER/boot.ipxe`",
    },
];

/// Every key of a profile file, in the order of the README's table.
pub static PROFILE_KEYS: &[Key] = &[
    Key {
        section: "",
        names: &["description"],
        key: "`description`",
        default: "",
        meaning: "free text",
    },
    Key {
        section: "",
        names: &["extends"],
        key: "`extends = \"S\"`",
        default: "",
        meaning: "inherit from another profile; chains allowed; a cycle is an error naming it",
    },
    Key {
        section: "",
        names: &["overlays"],
        key: "`overlays = [\"base\", \"captures/ref/ref.apkovl.tar.gz\"]`",
        default: "",
        meaning: "layers in order, later wins: a folder under `overlays/`, or a site-relative path ending in `.tar.gz`/`.tgz` to an lbu-made archive",
    },
    Key {
        section: "",
        names: &["packages"],
        key: "`packages = [\"chromium\", \"!nano\"]`",
        default: "",
        meaning: "`etc/apk/world`; inherited lists merge; `\"!name\"` drops a package an earlier profile of the chain or a layer's `etc/apk/world` brings; one that drops nothing is an error at its line, with a did-you-mean",
    },
    Key {
        section: "",
        names: &["hostname"],
        key: "`hostname = \"xl-{{ mac_suffix }}\"`",
        default: "",
        meaning: "hostname template (a device's own hostname wins; default `alpine-MACSUFFIX`)",
    },
    Key {
        section: "",
        names: &["repositories"],
        key: "`repositories = [\"{{ site.alpine.mirror }}/v3.20/main\"]`",
        default: "",
        meaning: "`etc/apk/repositories` (templates); unset: not written, so `alpine_repo=` applies",
    },
    Key {
        section: "",
        names: &["authorized_keys"],
        key: "`authorized_keys = [\"ssh-ed25519 …\"]`",
        default: "",
        meaning: "`root/.ssh/authorized_keys` (0600, `root/.ssh` 0700); merged along the chain",
    },
    Key {
        section: "",
        names: &["kernel_args", "modules"],
        key: "`kernel_args = [\"quiet\"]`, `modules = [\"e1000\"]`",
        default: "",
        meaning: "added to this profile's devices' kernel line (`/boot.ipxe?mac=`)",
    },
    Key {
        section: "services",
        names: &["sysinit", "boot", "default", "shutdown"],
        key: "`[services] sysinit/boot/default/shutdown = [\"sshd\", \"!crond\"]`",
        default: "",
        meaning: "runlevel links `etc/runlevels/LEVEL/SVC → /etc/init.d/SVC`; `\"!svc\"` drops a default, inherited or captured one (dropping nothing is an error, as for packages)",
    },
    Key {
        section: "network",
        names: &["interfaces"],
        key: "`[network] interfaces = \"\"\"…\"\"\"`",
        default: "",
        meaning: "`etc/network/interfaces` (template); default: lo + eth0 dhcp (unless a layer has one)",
    },
    Key {
        section: "network",
        names: &["resolv_conf"],
        key: "`[network] resolv_conf = \"\"\"…\"\"\"`",
        default: "",
        meaning: "`etc/resolv.conf` (template)",
    },
    Key {
        section: "files.PATH",
        names: &["content", "mode", "uid", "gid", "user", "group", "template"],
        key: "`[files.\"etc/motd\"] content = \"…\"`",
        default: "",
        meaning: "an inline file; also `mode`, `uid`, `gid`, `user`, `group`, and `template = false` to take `content` literally",
    },
    Key {
        section: "permissions.PATH",
        names: &["mode", "uid", "gid", "user", "group"],
        key: "`[permissions.\"etc/kiosk/token\"] mode = \"0600\"`",
        default: "",
        meaning: "owner/mode of a path a layer provides: `mode`, `uid`, `gid`, `user`, `group` (names resolved with the device's own `etc/passwd`/`etc/group`, else Alpine's); the only way to a setuid, setgid or sticky bit, or to a mode wider than the source's",
    },
    Key {
        section: "vars",
        names: &[],
        key: "`[vars] screen = \"landscape\"`",
        default: "",
        meaning: "free values for templates; descendants and devices win",
    },
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::site::SiteConfig;
    use crate::site::profile_file::ProfileFile;

    const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));

    #[test]
    fn the_readme_holds_these_tables() {
        for (keys, defaults, heading) in [
            (SITE_KEYS, true, "### `ovl.toml`"),
            (PROFILE_KEYS, false, "### Profiles"),
        ] {
            let table = markdown_table(keys, defaults);
            let section = README.split(heading).nth(1).unwrap_or_default();
            assert!(
                section.contains(&table),
                "README.md, {heading}: the key table must be exactly (src/doc/keys.rs):\n{table}"
            );
        }
    }

    /// The fields serde knows in the table reached by `toml` (holding the unknown key
    /// `zz_unknown`), from its "unknown field, expected …" error.
    fn fields<T: serde::de::DeserializeOwned + std::fmt::Debug>(toml: &str) -> BTreeSet<String> {
        let e = toml::from_str::<T>(toml).unwrap_err().to_string();
        let expected = e
            .split("unknown field `zz_unknown`, expected")
            .nth(1)
            .unwrap_or_else(|| panic!("{toml}: {e}"));
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    /// The keys the rows of `keys` document in `section`, and the sub-tables of `section`.
    fn documented(keys: &[Key], section: &str) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = keys
            .iter()
            .filter(|k| k.section == section)
            .flat_map(|k| k.names.iter().map(|n| n.to_string()))
            .collect();
        let prefix = if section.is_empty() {
            String::new()
        } else {
            format!("{section}.")
        };
        for k in keys {
            if let Some(rest) = k.section.strip_prefix(&prefix)
                && !rest.is_empty()
                && k.section != section
            {
                out.insert(rest.split('.').next().unwrap_or(rest).to_string());
            }
        }
        out
    }

    #[test]
    fn every_ovl_toml_key_has_a_row() {
        for (section, toml) in [
            ("", "zz_unknown = 1\n"),
            ("alpine", "[alpine]\nzz_unknown = 1\n"),
            ("fetch", "[fetch]\nzz_unknown = 1\n"),
            ("boot", "[boot]\nzz_unknown = 1\n"),
            ("build", "[build]\nzz_unknown = 1\n"),
            ("capture", "[capture]\nzz_unknown = 1\n"),
            ("serve", "[serve]\nzz_unknown = 1\n"),
            ("serve.dhcp", "[serve.dhcp]\nzz_unknown = 1\n"),
            ("serve.dhcp.relay", "[[serve.dhcp.relay]]\nzz_unknown = 1\n"),
        ] {
            let known = fields::<SiteConfig>(toml);
            let rows = documented(SITE_KEYS, section);
            assert_eq!(
                rows, known,
                "[{section}]: rows of src/doc/keys.rs vs ovl.toml's keys"
            );
        }
    }

    #[test]
    fn every_profile_key_has_a_row() {
        for (section, toml) in [
            ("", "zz_unknown = 1\n"),
            ("services", "[services]\nzz_unknown = 1\n"),
            ("network", "[network]\nzz_unknown = 1\n"),
            ("files.PATH", "[files.\"etc/x\"]\nzz_unknown = 1\n"),
            (
                "permissions.PATH",
                "[permissions.\"etc/x\"]\nzz_unknown = 1\n",
            ),
        ] {
            let known = fields::<ProfileFile>(toml);
            let rows = documented(PROFILE_KEYS, section);
            assert_eq!(
                rows, known,
                "[{section}]: rows of src/doc/keys.rs vs profile keys"
            );
        }
    }
}
