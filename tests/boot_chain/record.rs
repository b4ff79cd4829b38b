//! What the `apk` stand-in recorded on the VM's second serial port at the boot's final
//! `apk add` (see `standin/apk`): the state Alpine's init left before installing packages.

use std::collections::BTreeSet;

use crate::harness::tree::{Entry, Tree};

/// The record of one boot.
#[derive(Debug)]
pub struct Record {
    /// Seconds since the kernel started when the final `apk add` began (`/proc/uptime`).
    pub uptime: f64,
    /// The arguments of that `apk add`.
    pub args: Vec<String>,
    /// `/proc/cmdline`.
    pub cmdline: String,
    /// The overlay list given on stdin, when the init passed `--overlay-from-stdin`.
    pub overlay: Option<Vec<String>>,
    /// Names of the loaded modules (`/proc/modules`).
    pub modules: BTreeSet<String>,
    /// `ip -4 -o addr show` lines.
    pub addrs: Vec<String>,
    /// The new root, `/dev`, `/proc`, `/sys` left out.
    pub tree: Tree,
}

impl Record {
    /// Parses the text of the second serial port (`\r` already removed).
    pub fn parse(text: &str) -> Record {
        assert!(
            text.contains("OVL-REC: end"),
            "no complete record from the apk stand-in:\n{text}"
        );
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("OVL-REC: {name} ")))
                .unwrap_or_else(|| panic!("no {name} in the record:\n{text}"))
                .to_string()
        };
        let tagged = |tag: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(&format!("OVL-REC-{tag}|")))
                .map(str::to_string)
                .collect()
        };
        let args: Vec<String> = field("args")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let overlay = args
            .iter()
            .any(|a| a == "--overlay-from-stdin")
            .then(|| tagged("OVERLAY"));
        let tree = tagged("ENTRY")
            .iter()
            .map(|rest| {
                let f: Vec<&str> = rest.splitn(6, '|').collect();
                assert_eq!(f.len(), 6, "bad record line {rest:?}");
                let id = |s: &str| s.parse::<u32>().expect("numeric id");
                (
                    f[5].to_string(),
                    Entry::new(f[0], f[1], id(f[2]), id(f[3]), f[4]),
                )
            })
            .collect();
        Record {
            uptime: field("begin").parse().expect("uptime"),
            args,
            cmdline: field("cmdline"),
            overlay,
            modules: tagged("MODULE").into_iter().collect(),
            addrs: tagged("ADDR"),
            tree,
        }
    }

    /// Whether the final `apk add` got `arg`.
    pub fn has_arg(&self, arg: &str) -> bool {
        self.args.iter().any(|a| a == arg)
    }

    /// The value after `--repository`.
    pub fn repository(&self) -> Option<&str> {
        let i = self.args.iter().position(|a| a == "--repository")?;
        self.args.get(i + 1).map(String::as_str)
    }
}
