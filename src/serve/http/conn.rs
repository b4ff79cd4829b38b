//! Connections: the accept loop of the HTTP server and the limits no client can get around.
//!
//! - At most [`HttpConfig::max_connections`] connections are open. At the cap, a new
//!   connection closes the one that has been quiet longest among those not answering a
//!   request (idle keep-alive, or still sending its headers, as slowloris does); when every
//!   connection is answering a request, the new connection waits for one to end
//!   ([`HttpConfig::idle_timeout`] at most) and the next ones wait in the kernel's listen backlog meanwhile, as nginx leaves
//!   them; after that it gets `503 Service Unavailable` with `Retry-After` and is closed.
//! - A request's headers must arrive within [`HttpConfig::header_timeout`], counted from
//!   when the server starts waiting for them: on a new connection, and between requests on a
//!   kept-alive one (hyper's header read timeout).
//! - A connection on which no byte moves either way for [`HttpConfig::idle_timeout`] while
//!   a request is being answered (a client that stopped reading) is closed.
//! - hyper buffers at most `WRITE_BUFFER` bytes of a response before it waits for the
//!   client, and files are read [`HttpConfig::chunk_size`] bytes at a time, so a slow reader
//!   holds a few chunks of memory, not the file; its socket's send buffer is fixed at
//!   [`HttpConfig::send_buffer`] instead of growing to the kernel's 4 MiB.
//!
//! On shutdown the loop stops accepting, asks every connection to finish its request and
//! close, waits [`HttpConfig::shutdown_grace`], then drops what is left.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Shared, handle};

/// The most response bytes hyper holds for one connection before it waits for the client
/// to read (hyper's minimum is 8 KiB; its default, about 400 KiB, would let 800 slow
/// readers pin 300 MB).
pub(super) const WRITE_BUFFER: usize = 64 * 1024;
/// How long an idle connection (keep-alive, or headers on their way) must have been quiet
/// before it is closed to make room at the cap.
const EVICT_AFTER_MS: u64 = 1000;
/// How often the accept loop looks for a free slot meanwhile.
const BUSY_POLL: Duration = Duration::from_millis(20);
/// At most one `http_connection_refused` log line per this interval (a flood would fill
/// the log otherwise).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(5);

/// What the server knows of one open connection.
#[derive(Debug)]
pub(super) struct ConnState {
    /// Milliseconds since the server's start when a byte last moved.
    last_activity: AtomicU64,
    /// Requests being answered (a response whose body is not done).
    in_flight: AtomicU32,
    /// Cancelled to close the connection at once (evicted at the cap).
    close: CancellationToken,
}

/// A request being answered on a connection; dropping it (when the response body ends or
/// is dropped) makes the connection idle again.
#[derive(Debug)]
pub(super) struct InFlight(Arc<ConnState>);

impl InFlight {
    /// Counts a request on `conn`.
    pub(super) fn start(conn: &Arc<ConnState>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(conn))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The open connections.
#[derive(Debug)]
struct Registry {
    started: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Makes room for one more connection under `max`: true when there is room (possibly
    /// after closing the quietest idle connection), false when every connection is busy or
    /// idle for less than [`EVICT_AFTER_MS`] (a device whose request is on its way is not
    /// closed to make room for the next one: in a boot storm that lost script requests).
    fn make_room(&self, max: usize) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() < max {
            return true;
        }
        // At the cap (counting connections already told to close): look closer.
        let live = open.values().filter(|c| !c.close.is_cancelled());
        if live.clone().count() < max {
            return true;
        }
        let quiet_since = self.now_ms().saturating_sub(EVICT_AFTER_MS);
        let quietest = live
            .filter(|c| c.in_flight.load(Ordering::Relaxed) == 0)
            .filter(|c| c.last_activity.load(Ordering::Relaxed) <= quiet_since)
            .min_by_key(|c| c.last_activity.load(Ordering::Relaxed));
        match quietest {
            Some(c) => {
                c.close.cancel();
                true
            }
            None => false,
        }
    }

    fn add(&self) -> (u64, Arc<ConnState>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            last_activity: AtomicU64::new(self.now_ms()),
            in_flight: AtomicU32::new(0),
            close: CancellationToken::new(),
        });
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.insert(id, Arc::clone(&state));
        (id, state)
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// Accepts connections until `shutdown`, then gives running requests the grace period.
pub(super) async fn serve(
    listener: TcpListener,
    st: Arc<Shared>,
    mut workers: Workers,
    shutdown: CancellationToken,
) {
    let registry = Arc::new(Registry {
        started: Instant::now(),
        next_id: AtomicU64::new(0),
        open: Mutex::default(),
    });
    let mut tasks = JoinSet::new();
    let mut last_refusal_log: Option<Instant> = None;
    let mut refused_since_log = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    tracing::warn!(event = "http_accept_error", error = %e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if let Some(n) = st.cfg.send_buffer {
            // Fixed instead of autotuned up to 4 MiB: a slow reader pins this much kernel
            // memory at most.
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(n);
        }
        // At the cap with every connection answering a request: this one waits for a slot,
        // `idle_timeout` at most (what a stalled transfer may take too), and the next ones wait in the kernel's listen backlog meanwhile
        // (as nginx leaves them), so a device's single script request is not lost to a burst
        // of kernel downloads; after that, 503.
        let max = st.cfg.max_connections.max(1);
        let waiting = Instant::now();
        let mut room = registry.make_room(max);
        while !room && waiting.elapsed() < st.cfg.idle_timeout && !shutdown.is_cancelled() {
            tokio::select! {
                () = shutdown.cancelled() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = tokio::time::sleep(BUSY_POLL) => {}
            }
            room = registry.make_room(max);
        }
        if !room {
            refuse(&stream);
            refused_since_log += 1;
            if last_refusal_log.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY) {
                tracing::warn!(event = "http_connection_refused", refused = refused_since_log,
                    max_connections = st.cfg.max_connections, client = %peer,
                    "every connection is answering a request: 503");
                last_refusal_log = Some(Instant::now());
                refused_since_log = 0;
            }
            continue;
        }
        let (id, state) = registry.add();
        let conn = Connection {
            st: Arc::clone(&st),
            registry: Arc::clone(&registry),
            id,
            state,
            peer,
        };
        let Ok(stream) = stream.into_std() else {
            registry.remove(id);
            continue;
        };
        tasks.spawn_on(conn.run(stream, shutdown.clone()), workers.next());
    }
    drop(listener);
    let grace_end = tokio::time::Instant::now() + st.cfg.shutdown_grace;
    while tokio::time::timeout_at(grace_end, tasks.join_next())
        .await
        .is_ok_and(|t| t.is_some())
    {}
    if !tasks.is_empty() {
        tracing::warn!(
            event = "http_shutdown",
            "requests still running after the grace period; dropping them"
        );
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// The threads that answer requests: one current-thread runtime a core, as nginx runs one
/// worker process a core. A connection lives on one of them from its accept to its close,
/// so its requests are answered without the work-stealing scheduler's wake-ups of other
/// threads; file system work still goes to their blocking pools.
#[derive(Debug)]
pub(super) struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    stop: CancellationToken,
    next: usize,
}

impl Workers {
    /// Starts one thread a core (as the process may use them).
    pub(super) fn start() -> io::Result<Workers> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            // Together no more blocking threads than one default runtime would start.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads((512 / n).max(16))
                .build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("ovl-http-{i}"))
                .spawn(move || {
                    rt.block_on(stop.cancelled());
                    rt.shutdown_timeout(Duration::from_millis(100));
                })?;
        }
        Ok(Workers {
            handles,
            stop,
            next: 0,
        })
    }

    /// The runtime of the next connection (in turn).
    fn next(&mut self) -> &tokio::runtime::Handle {
        self.next = (self.next + 1) % self.handles.len();
        &self.handles[self.next]
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A 503 for a connection over the cap, written without waiting, then the close.
fn refuse(stream: &TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
        Content-Length: 0\r\nConnection: close\r\n\r\n";
    let _ = stream.try_write(BUSY);
}

/// One accepted connection.
struct Connection {
    st: Arc<Shared>,
    registry: Arc<Registry>,
    id: u64,
    state: Arc<ConnState>,
    peer: SocketAddr,
}

impl Connection {
    /// Serves the connection until it ends, is evicted, idles out, or the grace ends.
    async fn run(self, stream: std::net::TcpStream, shutdown: CancellationToken) {
        let Ok(stream) = TcpStream::from_std(stream) else {
            self.registry.remove(self.id);
            return;
        };
        let io = TokioIo::new(Tracked {
            inner: stream,
            state: Arc::clone(&self.state),
            registry: Arc::clone(&self.registry),
        });
        let (st, peer, state) = (Arc::clone(&self.st), self.peer, Arc::clone(&self.state));
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let (st, state) = (Arc::clone(&st), Arc::clone(&state));
            async move {
                let in_flight = InFlight::start(&state);
                let req = req.map(axum::body::Body::new);
                Ok::<_, Infallible>(handle(st, peer, in_flight, req).await)
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.st.cfg.header_timeout)
            .max_buf_size(WRITE_BUFFER)
            .keep_alive(true);
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let idle = self.st.cfg.idle_timeout.max(Duration::from_millis(100));
        let mut shutting_down = false;
        // The next look at an idle connection (one answering no request is hyper's to time
        // out, and its quiet time must stay as it is: eviction picks the quietest).
        let mut not_before = Instant::now();
        loop {
            let quiet_since = self.state.last_activity.load(Ordering::Relaxed);
            let wake =
                (self.registry.started + Duration::from_millis(quiet_since) + idle).max(not_before);
            tokio::select! {
                _ = conn.as_mut() => break,
                () = self.state.close.cancelled() => break,
                () = shutdown.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = self.registry.now_ms();
                    let last = self.state.last_activity.load(Ordering::Relaxed);
                    let busy = self.state.in_flight.load(Ordering::Relaxed) > 0;
                    if busy && now.saturating_sub(last) >= idle.as_millis() as u64 {
                        tracing::info!(event = "http_idle_timeout", client = %self.peer,
                            idle_ms = now.saturating_sub(last), "closing a stalled connection");
                        break;
                    }
                    if !busy {
                        not_before = Instant::now() + idle;
                    }
                }
            }
        }
        self.registry.remove(self.id);
    }
}

/// A TCP stream that notes when bytes move, for the idle timeout and eviction.
struct Tracked {
    inner: TcpStream,
    state: Arc<ConnState>,
    registry: Arc<Registry>,
}

impl Tracked {
    fn touch(&self) {
        self.state
            .last_activity
            .store(self.registry.now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
