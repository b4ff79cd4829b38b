//! Logging of `ovl serve`: `tracing` events on stderr, one line each, as text for people
//! (`--log-format text`) or as one JSON object per line for machines (`--log-format json`).
//! The level comes from `RUST_LOG` when set, else `info`.
//!
//! Lines are formatted where the event happens and appended to a shared buffer; one writer
//! thread writes the buffer to stderr in batches (it wakes on the first line of a batch and
//! gathers for 5 ms), so a request never waits on the stderr lock or a `write` of its
//! own. None is dropped: past 1 MiB buffered, a thread that logs waits for the writer.
//! The guard `init` returns writes out what is buffered when dropped.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod fields;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Bytes of log lines waiting for the writer, at most (then loggers wait).
const BUFFERED: usize = 1 << 20;
/// How long the writer gathers lines after the first one of a batch.
const GATHER: Duration = Duration::from_millis(5);
/// How long [`LogGuard`] waits for the buffer to be written at most.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// What the loggers and the writer share.
#[derive(Debug, Default)]
struct Lines {
    state: Mutex<State>,
    /// The writer waits here for lines or a flush request.
    ready: Condvar,
    /// Loggers wait here for room, the guard for its flush.
    written: Condvar,
}

#[derive(Debug, Default)]
struct State {
    buf: Vec<u8>,
    /// Flushes asked for, and done.
    asked: u64,
    done: u64,
}

impl Lines {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer of one event's line (tracing formats a line, then writes it whole).
#[derive(Debug, Clone)]
struct Queue(Arc<Lines>);

impl Write for Queue {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut st = self.0.lock();
        while st.buf.len() >= BUFFERED {
            st = self.0.written.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        let first = st.buf.is_empty();
        st.buf.extend_from_slice(line);
        drop(st);
        if first {
            self.0.ready.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Queue {
    type Writer = Queue;

    fn make_writer(&'a self) -> Queue {
        self.clone()
    }
}

/// The writer thread: waits for a first line, gathers, writes the batch, and again.
fn write_lines(lines: &Lines, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let mut st = lines.lock();
        while st.buf.is_empty() && st.asked == st.done {
            st = lines.ready.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.asked == st.done {
            drop(st);
            std::thread::sleep(GATHER);
            st = lines.lock();
        }
        std::mem::swap(&mut st.buf, &mut batch);
        let asked = st.asked;
        drop(st);
        lines.written.notify_all();
        let _ = out.write_all(&batch);
        batch.clear();
        lines.lock().done = asked;
        lines.written.notify_all();
    }
}

/// Keeps the log writer; dropping it writes out every buffered line (waiting a little).
#[derive(Debug)]
pub(crate) struct LogGuard(Arc<Lines>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        let deadline = Instant::now() + FLUSH_WAIT;
        let mut st = self.0.lock();
        st.asked += 1;
        let asked = st.asked;
        self.0.ready.notify_one();
        while st.done < asked {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            st = match self.0.written.wait_timeout(st, left) {
                Ok((st, _)) => st,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00Z  INFO listening service="http" addr=…`.
    #[default]
    Text,
    /// `{"timestamp":…,"level":"INFO","fields":{…}}`, one object a line.
    Json,
}

/// Installs the global subscriber and starts the writer thread; keep the guard until the
/// end. Fails when a subscriber is already installed or the thread cannot start.
pub(crate) fn init(format: LogFormat) -> Result<LogGuard, String> {
    let lines = Arc::new(Lines::default());
    let writer = Arc::clone(&lines);
    std::thread::Builder::new()
        .name("ovl-log".into())
        .spawn(move || write_lines(&writer, std::io::stderr()))
        .map_err(|e| format!("cannot start the log writer: {e}"))?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Queue(Arc::clone(&lines)))
        .with_target(false);
    let r = match format {
        // Colours on a terminal: tracing-subscriber's own fields formatter paints names.
        LogFormat::Text if std::io::stderr().is_terminal() => builder.with_ansi(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(false)
            .fmt_fields(fields::PlainFields)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    r.map_err(|e| e.to_string())?;
    Ok(LogGuard(lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_by_the_time_the_guard_is_dropped() {
        let lines = Arc::new(Lines::default());
        let out = Shared::default();
        let (writer, sink) = (Arc::clone(&lines), out.clone());
        std::thread::spawn(move || write_lines(&writer, sink));
        // More than the buffer holds, from four threads at once: loggers wait, none is lost.
        let per_thread = 20_000;
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut q = Queue(Arc::clone(&lines)).make_writer();
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        q.write_all(
                            format!("thread {t} line {i:06} {}\n", "x".repeat(40)).as_bytes(),
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(LogGuard(lines));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let (t, i): (usize, usize) = (f[1].parse().unwrap(), f[3].parse().unwrap());
            assert_eq!(i, next[t], "{line}");
            next[t] += 1;
        }
        assert_eq!(next, [per_thread; 4]);
    }
}
