//! The listening socket: decodes requests, enforces the cap, starts one task per transfer.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::TftpStats;
use super::options::{Caps, negotiate};
use super::packet::{ErrorCode, Mode, Packet, Request};
use super::pktinfo;
use super::transfer::{Transfer, TransferError, rate_kib_s};
use crate::serve::access::{self, Policy, PolicySource};
use crate::serve::neighbours::Neighbours;
use crate::site::Site;

/// The longest request accepted: RFC 2347 limits a request with its options to 512 bytes.
pub(super) const MAX_REQUEST_LEN: usize = 512;
/// How long running transfers get, after the server is told to stop and the grace period
/// is over, to send their ERROR and return before they are aborted.
const ABORT_WAIT: Duration = Duration::from_secs(1);

/// A finished transfer, as handed to [`TftpConfig::on_transfer`].
#[derive(Debug, Clone)]
pub struct TransferDone {
    /// The file as the client named it.
    pub file: String,
    /// The client's address and port.
    pub client: SocketAddr,
    /// Bytes sent.
    pub bytes: u64,
    /// How long it took.
    pub duration: Duration,
}

/// Called after every completed transfer (e.g. to record boot events).
#[derive(Clone)]
pub struct TransferHook(pub Arc<dyn Fn(&TransferDone) + Send + Sync>);

impl std::fmt::Debug for TransferHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransferHook")
    }
}

/// Settings of the TFTP server.
#[derive(Debug, Clone)]
pub struct TftpConfig {
    /// The site folder; files are served under the one access rule (`access::check`).
    pub root: PathBuf,
    /// What may be served and to whom; `None` reads the site's `ovl.toml` once at bind.
    pub policy: Option<Arc<dyn PolicySource>>,
    /// Who is at which address, for `configs_access = "owner"`.
    pub neighbours: Neighbours,
    /// Address and port to listen on (port 0 picks a free one).
    pub bind: SocketAddr,
    /// Transfers running at once; more requests get ERROR 0 "server busy".
    pub max_transfers: usize,
    /// Transfers running at once for one client address; more get ERROR 0.
    pub max_per_client: usize,
    /// Retransmissions in a row without an acknowledgement before a transfer is dropped.
    pub retries: u32,
    /// Retransmission timeout when the client asks for none (RFC 2349 `timeout`).
    pub default_timeout: Duration,
    /// The longest `timeout` a client is granted; a longer ask is not granted.
    pub max_timeout: Duration,
    /// The largest `windowsize` a client is granted; a larger ask gets this.
    pub max_windowsize: u16,
    /// The longest one transfer may take, from the request to the last ACK.
    pub transfer_deadline: Duration,
    /// After shutdown is requested, how long running transfers may go on before they are
    /// stopped.
    pub shutdown_grace: Duration,
    /// Called after each completed transfer.
    pub on_transfer: Option<TransferHook>,
}

impl TftpConfig {
    /// Settings serving `root` on `bind` with the defaults: 2048 transfers, 8 per client
    /// address, 5 retries, 1 s timeout (10 s at most when a client asks), windows of 64
    /// blocks at most, 10 minutes a transfer, 5 s shutdown grace.
    pub fn new(root: impl Into<PathBuf>, bind: SocketAddr) -> TftpConfig {
        TftpConfig {
            root: root.into(),
            policy: None,
            neighbours: Neighbours::default(),
            bind,
            max_transfers: 2048,
            max_per_client: 8,
            retries: 5,
            default_timeout: Duration::from_secs(1),
            max_timeout: Duration::from_secs(10),
            max_windowsize: 64,
            transfer_deadline: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(5),
            on_transfer: None,
        }
    }
}

/// A bound, read-only TFTP server; [`TftpServer::run`] serves until cancelled.
#[derive(Debug)]
pub struct TftpServer {
    socket: Arc<UdpSocket>,
    cfg: TftpConfig,
    stats: Arc<TftpStats>,
}

/// What every transfer task shares.
struct Shared {
    cfg: TftpConfig,
    policy: Arc<dyn PolicySource>,
    /// Running transfers by client address.
    per_client: Mutex<HashMap<IpAddr, usize>>,
    stats: Arc<TftpStats>,
    local_ip: IpAddr,
    cancel: CancellationToken,
}

impl TftpServer {
    /// Binds the listening socket. Fails on an unusable address or port, on settings that
    /// cannot work (no transfers allowed, a zero timeout), or without a policy when the
    /// site's `ovl.toml` cannot be read.
    pub async fn bind(mut cfg: TftpConfig) -> io::Result<TftpServer> {
        if cfg.max_transfers == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "max_transfers must be at least 1",
            ));
        }
        if cfg.default_timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "default_timeout must not be zero",
            ));
        }
        if cfg.policy.is_none() {
            let site = Site::open(&cfg.root)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            cfg.policy = Some(Arc::new(Arc::new(Policy::of_site(&site))));
        }
        let socket = UdpSocket::bind(cfg.bind).await?;
        if cfg.bind.ip().is_unspecified() {
            pktinfo::enable(&socket)?;
        }
        Ok(TftpServer {
            socket: Arc::new(socket),
            cfg,
            stats: Arc::default(),
        })
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The server's counters, live.
    pub fn stats(&self) -> Arc<TftpStats> {
        Arc::clone(&self.stats)
    }

    /// Serves requests until `shutdown` is cancelled, then stops accepting, lets running
    /// transfers go on for [`TftpConfig::shutdown_grace`], stops the rest, and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let local_ip = match self.socket.local_addr() {
            Ok(a) => a.ip(),
            Err(_) => self.cfg.bind.ip(),
        };
        let policy = match &self.cfg.policy {
            Some(p) => Arc::clone(p),
            None => Arc::new(Arc::new(Policy::default())),
        };
        let shared = Arc::new(Shared {
            policy,
            per_client: Mutex::default(),
            cfg: self.cfg.clone(),
            stats: Arc::clone(&self.stats),
            local_ip,
            cancel: CancellationToken::new(),
        });
        let permits = Arc::new(Semaphore::new(self.cfg.max_transfers));
        let mut tasks = JoinSet::new();
        // Room for any UDP datagram, so oversized ones are seen whole and counted.
        let mut buf = vec![0u8; 65536];
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                received = pktinfo::recv(&self.socket, &mut buf) => match received {
                    Ok((n, from, destination)) => {
                        let bytes = buf.get(..n).unwrap_or_default();
                        let reply_ip = pktinfo::transfer_ip(shared.local_ip, destination);
                        self.dispatch(bytes, from, reply_ip, &shared, &permits, &mut tasks)
                            .await;
                    }
                    Err(e) => {
                        tracing::warn!(event = "tftp_socket_error", error = %e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
        let grace_end = tokio::time::Instant::now() + self.cfg.shutdown_grace;
        while tokio::time::timeout_at(grace_end, tasks.join_next())
            .await
            .is_ok_and(|t| t.is_some())
        {}
        shared.cancel.cancel();
        let abort_end = tokio::time::Instant::now() + ABORT_WAIT;
        while tokio::time::timeout_at(abort_end, tasks.join_next())
            .await
            .is_ok_and(|t| t.is_some())
        {}
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }

    /// Handles one datagram on the listening socket.
    async fn dispatch(
        &self,
        bytes: &[u8],
        from: SocketAddr,
        reply_ip: IpAddr,
        shared: &Arc<Shared>,
        permits: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
    ) {
        if bytes.len() > MAX_REQUEST_LEN {
            TftpStats::bump(&self.stats.packets_oversized);
            return;
        }
        match Packet::decode(bytes) {
            Err(_) => TftpStats::bump(&self.stats.packets_malformed),
            Ok(Packet::Rrq(req)) => {
                TftpStats::bump(&self.stats.requests);
                let Some(slot) = ClientSlot::take(shared, from.ip()) else {
                    TftpStats::bump(&self.stats.requests_client_limit);
                    tracing::warn!(event = "tftp_refused", client = %from,
                        file = %req.filename, reason = "too many transfers from this address");
                    let message = "too many transfers from your address";
                    send_error(&self.socket, from, ErrorCode::NotDefined, message).await;
                    return;
                };
                match Arc::clone(permits).try_acquire_owned() {
                    Ok(permit) => {
                        let held = (permit, slot);
                        tasks.spawn(serve_read(Arc::clone(shared), req, from, reply_ip, held));
                    }
                    Err(_) => {
                        TftpStats::bump(&self.stats.requests_busy);
                        tracing::warn!(
                            event = "tftp_refused",
                            client = %from,
                            file = %req.filename,
                            reason = "server busy",
                        );
                        send_error(&self.socket, from, ErrorCode::NotDefined, "server busy").await;
                    }
                }
            }
            Ok(Packet::Wrq(req)) => {
                TftpStats::bump(&self.stats.requests_refused);
                tracing::warn!(
                    event = "tftp_refused",
                    client = %from,
                    file = %req.filename,
                    reason = "write request",
                );
                send_error(
                    &self.socket,
                    from,
                    ErrorCode::AccessViolation,
                    "read-only server",
                )
                .await;
            }
            Ok(_) => TftpStats::bump(&self.stats.packets_unexpected),
        }
    }
}

/// One running transfer counted against its client's address; dropping it frees the place.
struct ClientSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl ClientSlot {
    /// A place for one more transfer of `ip`, if it has fewer than
    /// [`TftpConfig::max_per_client`] running.
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<ClientSlot> {
        let ip = ip.to_canonical();
        let mut map = shared.per_client.lock().unwrap_or_else(|p| p.into_inner());
        let running = map.entry(ip).or_insert(0);
        if *running >= shared.cfg.max_per_client.max(1) {
            return None;
        }
        *running += 1;
        Some(ClientSlot {
            shared: Arc::clone(shared),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self
            .shared
            .per_client
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Sends an ERROR, ignoring failure (the peer may be gone; nothing waits on it).
async fn send_error(socket: &UdpSocket, to: SocketAddr, code: ErrorCode, message: &str) {
    let p = Packet::Error {
        code,
        message: message.to_owned(),
    };
    let _ = socket.send_to(&p.to_bytes(), to).await;
}

/// Serves one read request on a new socket, from refusal or negotiation to the log line.
async fn serve_read(
    shared: Arc<Shared>,
    req: Request,
    client: SocketAddr,
    local_ip: IpAddr,
    held: (OwnedSemaphorePermit, ClientSlot),
) {
    let started = Instant::now();
    let stats = &shared.stats;
    let _running = super::stats::Running::start(stats);
    let socket = match UdpSocket::bind(SocketAddr::new(local_ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            TftpStats::bump(&stats.transfers_failed);
            tracing::warn!(event = "tftp_transfer_failed", client = %client,
                file = %req.filename, error = %e, "cannot bind a transfer socket");
            return;
        }
    };
    let refuse =
        |code: ErrorCode, reason: String| refuse(&shared, &socket, client, &req, code, reason);
    if !matches!(req.mode, Mode::Octet | Mode::Netascii) {
        let reason = format!("unsupported mode {}", req.mode);
        refuse(ErrorCode::IllegalOperation, reason).await;
        return;
    }
    let name = req.filename.clone();
    let checking = Arc::clone(&shared);
    let opened =
        tokio::task::spawn_blocking(move || open_checked(&checking, client.ip(), &name)).await;
    let (file, size) = match opened {
        Ok(Ok(f)) => f,
        Ok(Err((code, reason))) => {
            refuse(code, reason).await;
            return;
        }
        Err(e) => {
            refuse(ErrorCode::NotDefined, format!("internal error: {e}")).await;
            return;
        }
    };
    let neg = negotiate(&req.options, size, shared.caps());
    let (blksize, windowsize) = (neg.blksize, neg.windowsize);
    let transfer = Transfer {
        socket,
        peer: client,
        file: Arc::new(file),
        size,
        neg,
        retries: shared.cfg.retries,
        deadline: shared.cfg.transfer_deadline,
        stats: Arc::clone(stats),
        cancel: shared.cancel.clone(),
    };
    let result = transfer.run().await;
    // The slots are free before the transfer is counted as finished.
    drop(held);
    let done = Done {
        file: &req.filename,
        client,
        started,
        blksize,
        windowsize,
    };
    done.report(&shared, result);
}

/// Counts and logs a refused request and sends the client its ERROR. The client learns the
/// code, not the reason: a private file and a missing one read the same.
async fn refuse(
    shared: &Shared,
    socket: &UdpSocket,
    client: SocketAddr,
    req: &Request,
    code: ErrorCode,
    reason: String,
) {
    TftpStats::bump(&shared.stats.requests_refused);
    tracing::warn!(event = "tftp_refused", client = %client,
        file = %req.filename, reason = %reason);
    let message = match code {
        ErrorCode::FileNotFound => "file not found",
        ErrorCode::AccessViolation => "access denied",
        _ => reason.as_str(),
    };
    send_error(socket, client, code, message).await;
}

impl Shared {
    /// What negotiation grants at most.
    fn caps(&self) -> Caps {
        Caps {
            default_timeout: self.cfg.default_timeout,
            max_timeout: self.cfg.max_timeout,
            max_windowsize: self.cfg.max_windowsize,
        }
    }
}

/// A transfer that ended, as its log line tells it.
struct Done<'a> {
    file: &'a str,
    client: SocketAddr,
    started: Instant,
    blksize: u16,
    windowsize: u16,
}

impl Done<'_> {
    /// Counts and logs how the transfer ended; a completed one also goes to the
    /// [`TftpConfig::on_transfer`] hook.
    fn report(&self, shared: &Shared, result: Result<u64, TransferError>) {
        let stats = &shared.stats;
        let (file, client, started) = (self.file, self.client, self.started);
        let (blksize, windowsize) = (self.blksize, self.windowsize);
        match result {
            Ok(bytes) => {
                TftpStats::bump(&stats.transfers_completed);
                stats
                    .bytes_sent
                    .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    event = "tftp_transfer",
                    file = %file,
                    client = %client,
                    bytes,
                    duration_ms = started.elapsed().as_millis() as u64,
                    rate_kib_s = rate_kib_s(bytes, started),
                    blksize,
                    windowsize,
                    "tftp transfer done"
                );
                if let Some(hook) = &shared.cfg.on_transfer {
                    (hook.0)(&TransferDone {
                        file: file.to_owned(),
                        client,
                        bytes,
                        duration: started.elapsed(),
                    });
                }
            }
            Err(e @ TransferError::ClientError { .. }) => {
                // UEFI firmware asks for `tsize` alone, then aborts with an ERROR and asks
                // again: a client's abort is routine, not a server failure.
                TftpStats::bump(&stats.transfers_failed);
                tracing::info!(
                    event = "tftp_transfer_aborted",
                    file = %file,
                    client = %client,
                    reason = %e,
                    duration_ms = started.elapsed().as_millis() as u64,
                );
            }
            Err(e) => {
                TftpStats::bump(&stats.transfers_failed);
                tracing::warn!(
                    event = "tftp_transfer_failed",
                    file = %file,
                    client = %client,
                    error = %e,
                    duration_ms = started.elapsed().as_millis() as u64,
                    blksize,
                    windowsize,
                );
            }
        }
    }
}

/// Decides a request with the one access rule and opens the file: the file and its size, or
/// the ERROR to send (not public or missing: 1 "file not found"; the owner rule or an
/// unreadable file: 2) and the reason to log.
fn open_checked(
    shared: &Shared,
    client: IpAddr,
    name: &str,
) -> Result<(std::fs::File, u64), (ErrorCode, String)> {
    let policy = shared.policy.policy();
    let root = &shared.cfg.root;
    let resolved =
        access::check(root, &policy, &shared.cfg.neighbours, client, name).map_err(|r| {
            let code = if r.is_not_found() {
                ErrorCode::FileNotFound
            } else {
                ErrorCode::AccessViolation
            };
            (code, r.to_string())
        })?;
    let file = std::fs::File::open(&resolved.path).map_err(|e| {
        let code = match e.kind() {
            io::ErrorKind::NotFound => ErrorCode::FileNotFound,
            _ => ErrorCode::AccessViolation,
        };
        (code, format!("cannot open: {e}"))
    })?;
    let meta = file
        .metadata()
        .map_err(|e| (ErrorCode::AccessViolation, format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err((ErrorCode::FileNotFound, "not a regular file".to_owned()));
    }
    Ok((file, meta.len()))
}
