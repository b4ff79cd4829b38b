//! The iPXE boot script (`gpxe-script`, `boot.ipxe`): kernel + initramfs from the site with
//! Alpine's cmdline (`apkovl=` by `${net0/mac}`, `modloop=`, `modules=`, `alpine_repo=`,
//! `ssh_key=`, `ip=dhcp`), each step retried a bounded number of times with back-off, then
//! `[boot] on_failure` (SPEC §1).

use std::fmt::Write as _;

use crate::site::config::MAX_RETRY_WAIT;
use crate::site::layout::CONFIGS_DIR;
use crate::site::{BootConfig, OnFailure, Site};

/// Per-device additions to the script (from a known MAC's profile).
#[derive(Debug, Clone, Default)]
pub struct ScriptExtras {
    /// Extra kernel arguments.
    pub kernel_args: Vec<String>,
    /// Kernel modules replacing the site's list.
    pub modules: Option<Vec<String>>,
    /// A literal MAC to use instead of `${net0/mac}`.
    pub mac: Option<String>,
}

/// The kernel command line of a device (everything after the kernel URL).
pub(crate) fn cmdline(site: &Site, extras: &ScriptExtras) -> String {
    let c = &site.config;
    let base = site.http_base();
    let flavor = &c.alpine.flavor;
    let mac = extras
        .mac
        .clone()
        .unwrap_or_else(|| "${net0/mac}".to_string());
    let modules = extras
        .modules
        .clone()
        .unwrap_or_else(|| c.boot.modules.clone());
    let repo = c.boot.alpine_repo.clone().unwrap_or_else(|| {
        format!(
            "{}/{}/main",
            c.alpine.mirror.trim_end_matches('/'),
            c.alpine.version
        )
    });
    let mut args = vec![
        format!("initrd=initramfs-{flavor}"),
        format!("apkovl={base}/{CONFIGS_DIR}/{mac}.tar.gz"),
        "ip=dhcp".to_string(),
        format!("modloop={base}/modloop-{flavor}"),
        format!("alpine_repo={repo}"),
    ];
    if !modules.is_empty() {
        args.push(format!("modules={}", modules.join(",")));
    }
    if let Some(key) = &c.boot.ssh_key
        && site.root.join(key).is_file()
    {
        args.push(format!("ssh_key={base}/{}", key.trim_start_matches('/')));
    }
    for a in c.boot.kernel_args.iter().chain(&extras.kernel_args) {
        if !args.contains(a) {
            args.push(a.clone());
        }
    }
    args.join(" ")
}

/// The waits between tries, in seconds: `retry_delay`, doubled after each further failure,
/// at most [`MAX_RETRY_WAIT`]; one fewer than `tries`.
pub(crate) fn retry_waits(boot: &BootConfig) -> Vec<u32> {
    let mut wait = boot.retry_delay.min(MAX_RETRY_WAIT);
    (1..boot.tries)
        .map(|_| {
            let w = wait;
            wait = wait.saturating_mul(2).min(MAX_RETRY_WAIT);
            w
        })
        .collect()
}

/// One retried step of the script: its label, what a failure message says it was doing, and
/// the label a retry starts from.
struct Step {
    label: &'static str,
    what: String,
    retry_from: &'static str,
}

/// The failure handler of `step`: counts the failure, gives up after `tries` (→
/// `ovl_failed`), else warns on the console, waits its back-off and starts over.
fn retry_block(step: &Step, tries: u32) -> String {
    let Step {
        label,
        what,
        retry_from,
    } = step;
    let count = format!("ovl_{label}_tries");
    format!(
        ":ovl_{label}_failed\n\
         set ovl_what {what}\n\
         inc {count}\n\
         iseq ${{{count}}} {tries} && goto ovl_failed ||\n\
         echo ovl: warning: ${{ovl_what}} failed (try ${{{count}}} of {tries}), retrying in ${{ovl_wait_${{{count}}}}} s\n\
         sleep ${{ovl_wait_${{{count}}}}}\n\
         goto ovl_{retry_from}\n"
    )
}

/// What the script does once a step failed `tries` times (`[boot] on_failure`).
fn give_up(on_failure: OnFailure, tries: u32) -> String {
    let failed = format!("echo ovl: error: ${{ovl_what}} failed {tries} times");
    match on_failure {
        OnFailure::Reboot => {
            format!(":ovl_failed\n{failed}, rebooting ([boot] on_failure)\nreboot\n")
        }
        OnFailure::Exit => format!(
            ":ovl_failed\n{failed}, leaving iPXE: the firmware tries its next boot device \
             ([boot] on_failure)\nexit\n"
        ),
        OnFailure::Shell => format!(
            ":ovl_failed\n{failed}, opening the iPXE shell ([boot] on_failure): type exit to \
             start over\nshell\ngoto ovl_start\n"
        ),
    }
}

/// The whole iPXE script: fetch the kernel (with the device's command line) and the
/// initramfs, then boot. Each of the three steps is tried `[boot] tries` times, waiting
/// `retry_delay` seconds after the first failure and twice as long after each further one
/// (a warning on the console each time); a failed kernel fetch or boot starts over with
/// `imgfree`, so no image is loaded twice. Then `[boot] on_failure`.
pub fn script(site: &Site, extras: &ScriptExtras) -> String {
    let base = site.http_base();
    let boot = &site.config.boot;
    let flavor = &site.config.alpine.flavor;
    let cmdline = cmdline(site, extras);
    let tries = boot.tries;
    let waits = retry_waits(boot);
    let waits_text = match waits.as_slice() {
        [] => "no retry".to_string(),
        w => {
            let list: Vec<String> = w.iter().map(u32::to_string).collect();
            format!("waiting {} s between tries", list.join(", "))
        }
    };
    let mut out = format!(
        "#!ipxe\n\
         # Generated by ovl from ovl.toml; edits are overwritten by the next build.\n\
         # Alpine {version} ({flavor}) for ${{net0/mac}} from {base}\n\
         # Kernel, initramfs and boot are each tried {tries} times ({waits_text}),\n\
         # then: {on_failure} ([boot] tries, retry_delay, on_failure).\n\
         \n\
         :ovl_start\n",
        version = site.config.alpine.version,
        on_failure = boot.on_failure.name(),
    );
    for (i, w) in waits.iter().enumerate() {
        let _ = writeln!(out, "set ovl_wait_{} {w}", i + 1);
    }
    let steps = [
        Step {
            label: "kernel",
            what: format!("loading {base}/vmlinuz-{flavor}"),
            retry_from: "kernel",
        },
        Step {
            label: "initrd",
            what: format!("loading {base}/initramfs-{flavor}"),
            retry_from: "initrd",
        },
        Step {
            label: "boot",
            what: "booting the kernel".to_string(),
            retry_from: "kernel",
        },
    ];
    for step in &steps {
        let _ = writeln!(out, "set ovl_{}_tries:int32 0", step.label);
    }
    let _ = write!(
        out,
        "\n:ovl_kernel\n\
         imgfree\n\
         kernel {base}/vmlinuz-{flavor} {cmdline} || goto ovl_kernel_failed\n\
         :ovl_initrd\n\
         initrd {base}/initramfs-{flavor} || goto ovl_initrd_failed\n\
         boot || goto ovl_boot_failed\n"
    );
    for step in &steps {
        out.push('\n');
        out.push_str(&retry_block(step, tries));
    }
    out.push('\n');
    out.push_str(&give_up(boot.on_failure, tries));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(boot: &str) -> (tempfile::TempDir, Site) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ovl.toml"),
            format!("[boot]\nserver = \"10.0.0.1\"\n{boot}"),
        )
        .unwrap();
        let site = Site::open(dir.path()).unwrap();
        (dir, site)
    }

    #[test]
    fn waits_double_up_to_the_cap() {
        let (_d, s) = site("");
        assert_eq!(retry_waits(&s.config.boot), [2, 4, 8, 16]);
        let (_d, s) = site("tries = 8\nretry_delay = 60\n");
        assert_eq!(
            retry_waits(&s.config.boot),
            [60, 120, 240, 300, 300, 300, 300]
        );
        let (_d, s) = site("tries = 1\n");
        assert!(retry_waits(&s.config.boot).is_empty());
    }

    #[test]
    fn every_step_is_bounded_and_frees_images_before_refetching() {
        let (_d, s) = site("tries = 3\nretry_delay = 5\n");
        let text = script(&s, &ScriptExtras::default());
        assert!(text.contains("# Kernel, initramfs and boot are each tried 3 times (waiting 5, 10 s between tries),\n# then: reboot"), "{text}");
        assert!(
            text.contains("set ovl_wait_1 5\nset ovl_wait_2 10\nset ovl_kernel_tries:int32 0\n")
        );
        assert!(text.contains(":ovl_kernel\nimgfree\nkernel http://10.0.0.1/vmlinuz-lts "));
        for (step, from) in [
            ("kernel", "kernel"),
            ("initrd", "initrd"),
            ("boot", "kernel"),
        ] {
            let block = format!(":ovl_{step}_failed\nset ovl_what ");
            let at = text
                .find(&block)
                .unwrap_or_else(|| panic!("{block} in {text}"));
            let rest = &text[at..];
            let end = rest.find("\n\n").unwrap_or(rest.len());
            let block = &rest[..end];
            assert!(
                block.contains(&format!(
                    "iseq ${{ovl_{step}_tries}} 3 && goto ovl_failed ||\n"
                )),
                "{block}"
            );
            assert!(
                block.contains("echo ovl: warning: ${ovl_what} failed (try "),
                "{block}"
            );
            assert!(
                block.contains(&format!("sleep ${{ovl_wait_${{ovl_{step}_tries}}}}\n")),
                "{block}"
            );
            assert!(block.ends_with(&format!("goto ovl_{from}")), "{block}");
        }
        assert!(text.ends_with(":ovl_failed\necho ovl: error: ${ovl_what} failed 3 times, rebooting ([boot] on_failure)\nreboot\n"), "{text}");
        // No `#` inside a command: iPXE would take the rest of the line for a comment.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(!line.contains('#'), "{line}");
        }
    }

    #[test]
    fn on_failure_exit_and_shell() {
        let (_d, s) = site("on_failure = \"exit\"\n");
        let text = script(&s, &ScriptExtras::default());
        assert!(
            text.ends_with("the firmware tries its next boot device ([boot] on_failure)\nexit\n"),
            "{text}"
        );
        let (_d, s) = site("on_failure = \"shell\"\ntries = 1\n");
        let text = script(&s, &ScriptExtras::default());
        assert!(
            text.ends_with("type exit to start over\nshell\ngoto ovl_start\n"),
            "{text}"
        );
        assert!(text.contains("iseq ${ovl_kernel_tries} 1 && goto ovl_failed ||\n"));
        assert!(!text.contains("set ovl_wait_"));
    }

    #[test]
    fn bad_retry_settings_name_the_key() {
        for (boot, key) in [
            ("tries = 0\n", "[boot] tries = 0"),
            ("tries = 21\n", "[boot] tries = 21"),
            ("retry_delay = 0\n", "[boot] retry_delay = 0"),
            ("retry_delay = 301\n", "[boot] retry_delay = 301"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("ovl.toml"), format!("[boot]\n{boot}")).unwrap();
            let e = Site::open(dir.path()).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
            assert_eq!(e.exit_code(), 1);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ovl.toml"),
            "[boot]\non_failure = \"halt\"\n",
        )
        .unwrap();
        let e = Site::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("halt"), "{e}");
    }
}
