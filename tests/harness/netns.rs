//! Network-namespace labs: namespaces with names unique to this test run, veth pairs,
//! bridges and tap ports made with `ip` inside them (the host's interfaces are never
//! touched), commands and threads run inside them, and everything removed in `Drop`, also
//! when a test panics. Needs root.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use super::proc::{KillOnDrop, must, require_root, run};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// `PREFIX-PID-N`: a name no other namespace of this or another test run has.
pub fn unique_name(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// A network namespace this test made, with `lo` up; on drop every process in it is
/// killed and the namespace deleted.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `name` (see [`unique_name`]).
    pub fn new(name: &str) -> Netns {
        require_root("network namespaces (ip netns)");
        must(&["ip", "netns", "add", name]);
        let ns = Netns {
            name: name.to_string(),
        };
        ns.up("lo");
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NS ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["ip", "-n", self.name.as_str()];
        all.extend_from_slice(args);
        must(&all);
    }

    /// Sets `dev` up.
    pub fn up(&self, dev: &str) {
        self.ip(&["link", "set", dev, "up"]);
    }

    /// Adds address `cidr` to `dev`.
    pub fn addr(&self, cidr: &str, dev: &str) {
        self.ip(&["addr", "add", cidr, "dev", dev]);
    }

    /// A veth pair: `dev` here, `peer_dev` in `peer`.
    pub fn veth(&self, dev: &str, peer: &Netns, peer_dev: &str) {
        self.ip(&[
            "link", "add", dev, "type", "veth", "peer", "name", peer_dev, "netns", &peer.name,
        ]);
    }

    /// A bridge named `name`.
    pub fn bridge(&self, name: &str) {
        self.ip(&["link", "add", name, "type", "bridge"]);
    }

    /// A tap port named `name` (for QEMU).
    pub fn tap(&self, name: &str) {
        must(&[
            "ip", "netns", "exec", &self.name, "ip", "tuntap", "add", name, "mode", "tap",
        ]);
    }

    /// Puts `dev` on `bridge`.
    pub fn enslave(&self, dev: &str, bridge: &str) {
        self.ip(&["link", "set", dev, "master", bridge]);
    }

    /// `ip netns exec NS PROGRAM`, to add arguments to and run or spawn.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `args` inside the namespace, bounded by `secs`.
    pub fn run(&self, secs: u64, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        run(secs, &all)
    }

    /// Starts `args` inside the namespace (stdio closed) with extra environment variables.
    pub fn spawn(&self, args: &[&str], envs: &[(&str, &std::path::Path)]) -> KillOnDrop {
        let (program, rest) = args.split_first().expect("a program");
        let mut cmd = self.command(program);
        cmd.args(rest);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        KillOnDrop::spawn(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    }

    /// Runs `f` on a fresh thread inside the namespace.
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).expect("open netns");
            // SAFETY: setns on a valid namespace fd only affects this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Anything still running in the namespace (a daemonized client, a server) was
        // started by this test.
        let out = run(20, &["ip", "netns", "pids", &self.name]);
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) of a process inside this test's own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = run(20, &["ip", "netns", "del", &self.name]);
    }
}
