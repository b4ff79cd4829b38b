//! Child processes and the small tools every test uses: commands bounded by `timeout`,
//! required programs and privileges (a test fails, never skips, when they are missing),
//! children killed on drop, output lines on a channel, bounded waits, digests, test data.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// `timeout SECS PROGRAM` with stdin closed: a client that hangs cannot hang the test.
pub fn bounded(secs: u64, program: &str) -> Command {
    let mut c = Command::new("timeout");
    c.arg(secs.to_string()).arg(program).stdin(Stdio::null());
    c
}

/// Runs `args` (the program first) bounded by `secs`; its output, whatever its status.
pub fn run(secs: u64, args: &[&str]) -> Output {
    let (program, rest) = args.split_first().expect("a program to run");
    bounded(secs, program)
        .args(rest)
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"))
}

/// Runs `args` bounded by 60 s and fails the test unless it succeeds.
pub fn must(args: &[&str]) -> Output {
    let out = run(60, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` and returns its output; a failure is described on stderr for the test log.
pub fn output(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the command runs");
    if !out.status.success() {
        eprintln!(
            "{cmd:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Fails the test unless `program` is on the PATH (`.ci/run` installs every peer).
pub fn require(program: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{program} is not installed (`.ci/run` installs every program the tests use)"
    );
}

/// Fails the test unless `path` exists (a firmware image, an option ROM).
pub fn require_file(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing (`.ci/run` installs every package the tests use)"
    );
}

/// Whether the test runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() }) == 0
}

/// Fails the test unless it runs as root; `why` names what needs it.
pub fn require_root(why: &str) {
    assert!(
        is_root(),
        "needs root: {why} (run as root: `cargo test -- --include-ignored`)"
    );
}

/// A child process, killed and reaped when dropped (also when the test panics).
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Spawns `cmd`, failing the test if it cannot start.
    pub fn spawn(cmd: &mut Command) -> KillOnDrop {
        KillOnDrop(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")))
    }

    /// Sends signal `sig` to the child.
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.0.id()).expect("pid");
        // SAFETY: kill(2) of a child this test spawned and has not reaped yet.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// Waits at most `budget` for the child to exit; its status, or `None` if still running.
    pub fn wait_exit(&mut self, budget: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + budget;
        loop {
            if let Ok(Some(st)) = self.0.try_wait() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the child has exited.
    pub fn exited(&mut self) -> bool {
        self.0.try_wait().ok().flatten().is_some()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child whose stdout or stderr lines arrive on a channel, kept as they are read.
pub struct Lines {
    /// The child, killed on drop.
    pub child: KillOnDrop,
    rx: Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Lines {
    /// Spawns `cmd` with stdout (or stderr when `stderr`) piped to the channel and the
    /// other stream discarded; stdin is closed.
    pub fn spawn(cmd: &mut Command, stderr: bool) -> Lines {
        cmd.stdin(Stdio::null());
        if stderr {
            cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        } else {
            cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        }
        let mut child = KillOnDrop::spawn(cmd);
        let pipe: Box<dyn Read + Send> = if stderr {
            Box::new(child.0.stderr.take().expect("piped stderr"))
        } else {
            Box::new(child.0.stdout.take().expect("piped stdout"))
        };
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line, if one comes before `deadline`.
    pub fn next_before(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = self.rx.recv_timeout(left).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// The first line (seen before or arriving within 20 s) that contains every one of
    /// `needles`.
    pub fn wait_line(&mut self, needles: &[&str]) -> String {
        let has_all = |l: &String| needles.iter().all(|n| l.contains(n));
        if let Some(l) = self.seen.iter().find(|l| has_all(l)) {
            return l.clone();
        }
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            match self.next_before(end) {
                Some(l) if has_all(&l) => return l,
                Some(_) => {}
                None => panic!("no line with {needles:?}; seen:\n{}", self.seen.join("\n")),
            }
        }
    }
}

/// Waits until the file at `path` contains `needle` and returns its text (`\r` removed);
/// fails after `budget`, or as soon as `child` (when given) exits first.
pub fn wait_for_text(
    path: &Path,
    needle: &str,
    budget: Duration,
    mut child: Option<&mut KillOnDrop>,
) -> String {
    let deadline = Instant::now() + budget;
    loop {
        let text =
            String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).replace('\r', "");
        if text.contains(needle) {
            return text;
        }
        let exited = child.as_mut().is_some_and(|c| c.exited());
        assert!(
            Instant::now() < deadline && !exited,
            "{needle:?} {} in {}:\n{text}",
            if exited {
                "never came before the process exited"
            } else {
                "did not come in time"
            },
            path.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `f` every 100 ms for at most `secs` seconds; whether it became true.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The sha256 of `bytes`, in hex.
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The sha256 of a file's bytes (of nothing when it cannot be read), in hex.
pub fn sha256_file(path: &Path) -> String {
    sha256(&std::fs::read(path).unwrap_or_default())
}

/// `len` deterministic pseudo-random bytes (xorshift from `seed`).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}
