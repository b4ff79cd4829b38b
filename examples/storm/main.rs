//! The boot-storm load generator of `bench/storm.sh`: N simulated devices run the whole
//! network boot chain at once, each with its own MAC and, after DHCP, its own address:
//!
//! 1. DHCP as the NIC's PXE firmware (options 60/93/94/97), then TFTP of the boot file the
//!    server named (the iPXE binary, `blksize` 1468),
//! 2. DHCP as iPXE (user class `iPXE`), then HTTP: the script the server named (or
//!    `http://NEXT-SERVER/boot.ipxe`, the seed's embedded script), the kernel and the
//!    initramfs it loads (each tried 5 times, 2/4/8/16 s apart, as ovl's script does),
//! 3. DHCP as Alpine's initramfs (udhcpc), then the `apkovl=` config, once.
//!
//! Every download is checked against the site folder (sizes; bytes for the iPXE binary and
//! the config). A device's own address is used as the source of its TFTP and HTTP traffic:
//! the script routes the pool as local addresses of the client namespace (`ip route add local
//! POOL dev lo`), so the servers see one client per device, as on a LAN.
//!
//! Output: one `STORM key=value …` line on stdout (read by the script); phase times and
//! failure samples on stderr; with `--details FILE`, one line per device.
//!
//! It is an example of the crate (not a separate package) so that it is built with the
//! crate's locked dependencies and kept compiling and lint-clean by CI; it uses no ovl code.

mod dhcp;
mod http;
mod tftp;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use tokio::time::{Instant, sleep, timeout_at};

use dhcp::{Dhcp, Kind};
use http::{Conn, Url};

/// The boot chain's phases, in order.
const PHASES: [&str; 8] = [
    "dhcp-pxe",
    "tftp",
    "dhcp-ipxe",
    "script",
    "kernel",
    "initramfs",
    "dhcp-linux",
    "config",
];
/// Tries of the kernel and the initramfs (ovl's script: `[boot] tries` = 5).
const TRIES: u32 = 5;

/// Simulated PXE devices booting at once.
#[derive(Parser)]
struct Args {
    /// Interface of the client namespace (DHCP is broadcast on it).
    #[arg(long)]
    interface: String,
    /// The site folder both stacks serve: downloads are checked against its files.
    #[arg(long)]
    site: PathBuf,
    /// Number of devices.
    #[arg(long, default_value_t = 500)]
    devices: u32,
    /// First three bytes of every MAC; the last three are the device number, from 1.
    #[arg(long, default_value = "02:5e:00")]
    mac_prefix: String,
    /// Seconds after the start when a device still booting counts as failed.
    #[arg(long, default_value_t = 600)]
    deadline: u64,
    /// Devices start spread evenly over this many milliseconds (0: all at once).
    #[arg(long, default_value_t = 0)]
    spread_ms: u64,
    /// TFTP `blksize` asked for.
    #[arg(long, default_value_t = 1468)]
    blksize: u16,
    /// Writes one line per device here (MAC, seconds, phase times, failure).
    #[arg(long)]
    details: Option<PathBuf>,
}

/// What every device shares.
struct Ctx {
    dhcp: Arc<Dhcp>,
    site: PathBuf,
    blksize: u16,
    deadline: Instant,
    tftp_retransmits: AtomicU64,
    http_retries: AtomicU64,
}

/// How one device's boot went.
struct Outcome {
    mac: String,
    /// Seconds from the device's power-on to its end (booted or failed).
    seconds: f64,
    /// Seconds from the storm's start to the device's end.
    ended: f64,
    times: [f64; 8],
    failed: Option<(usize, String)>,
}

/// The phase a device is in and the time each finished phase took.
struct Run {
    phase: usize,
    at: Instant,
    times: [f64; 8],
}

impl Run {
    fn next(&mut self) {
        let now = Instant::now();
        self.times[self.phase] = (now - self.at).as_secs_f64();
        self.at = now;
        self.phase += 1;
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    raise_fd_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("storm: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    match rt.block_on(storm(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storm: {e}");
            std::process::ExitCode::from(3)
        }
    }
}

async fn storm(args: Args) -> Result<(), String> {
    let prefix = parse_prefix(&args.mac_prefix)?;
    let dhcp = Dhcp::start(&args.interface).map_err(|e| format!("DHCP socket: {e}"))?;
    let start = Instant::now();
    let ctx = Arc::new(Ctx {
        dhcp,
        site: args.site.clone(),
        blksize: args.blksize,
        deadline: start + Duration::from_secs(args.deadline),
        tftp_retransmits: AtomicU64::new(0),
        http_retries: AtomicU64::new(0),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for index in 1..=args.devices {
        let delay = args.spread_ms * u64::from(index - 1) / u64::from(args.devices.max(1));
        let ctx = Arc::clone(&ctx);
        let mac = mac_of(prefix, index);
        tasks.spawn(async move {
            sleep(Duration::from_millis(delay)).await;
            boot(&ctx, mac, index, start).await
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        outcomes.push(done.map_err(|e| format!("a device task failed: {e}"))?);
    }
    outcomes.sort_by(|a, b| a.mac.cmp(&b.mac));
    if let Some(path) = &args.details {
        write_details(path, &outcomes).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    report(&ctx, &outcomes);
    Ok(())
}

/// One device, from power-on to its config (or its first failed phase).
async fn boot(ctx: &Ctx, mac: [u8; 6], index: u32, storm_start: Instant) -> Outcome {
    let started = Instant::now();
    let mut run = Run {
        phase: 0,
        at: started,
        times: [0.0; 8],
    };
    let result = timeout_at(ctx.deadline, chain(ctx, mac, index, &mut run))
        .await
        .unwrap_or_else(|_| Err("still running at the deadline".into()));
    let now = Instant::now();
    Outcome {
        mac: mac_text(mac),
        seconds: (now - started).as_secs_f64(),
        ended: (now - storm_start).as_secs_f64(),
        times: run.times,
        failed: result.err().map(|e| (run.phase, e)),
    }
}

/// The boot chain; `run` says which phase failed.
async fn chain(ctx: &Ctx, mac: [u8; 6], index: u32, run: &mut Run) -> Result<(), String> {
    let xid = |n: u32| index.wrapping_mul(4).wrapping_add(n);
    let mac_s = mac_text(mac);
    let rom = ctx.dhcp.dora(mac, xid(0), Kind::Rom, ctx.deadline).await?;
    run.next();
    if rom.file.is_empty() {
        return Err("no boot file in the ACK".into());
    }
    let nbp = tftp::fetch(
        rom.ip,
        rom.next_server,
        &rom.file,
        ctx.blksize,
        &ctx.tftp_retransmits,
    )
    .await?;
    same_bytes(&ctx.site, &rom.file, &nbp)?;
    run.next();
    let ipxe = ctx.dhcp.dora(mac, xid(1), Kind::Ipxe, ctx.deadline).await?;
    run.next();
    let script_url = match ipxe.file.starts_with("http://") {
        true => ipxe.file.replace("${net0/mac}", &mac_s),
        false => format!("http://{}/boot.ipxe", ipxe.next_server),
    };
    let url = Url::parse(&script_url)?;
    let mut first = Conn::open(ipxe.ip, url.addr).await?;
    let script = first.get(&url.path, "iPXE/1.21.1+").await?;
    let mut conn = Some(first);
    if script.status != 200 || !script.body.starts_with(b"#!ipxe") {
        return Err(format!(
            "{script_url}: status {}, not an iPXE script",
            script.status
        ));
    }
    let urls = ScriptUrls::read(&String::from_utf8_lossy(&script.body), &mac_s)?;
    run.next();
    download(ctx, &mut conn, ipxe.ip, &urls.kernel).await?;
    run.next();
    download(ctx, &mut conn, ipxe.ip, &urls.initrd).await?;
    run.next();
    drop(conn);
    let linux = ctx
        .dhcp
        .dora(mac, xid(2), Kind::Linux, ctx.deadline)
        .await?;
    run.next();
    let url = Url::parse(&urls.apkovl)?;
    let config = Conn::open(linux.ip, url.addr)
        .await?
        .get(&url.path, "Wget")
        .await?;
    if config.status != 200 {
        return Err(format!("{}: status {}", urls.apkovl, config.status));
    }
    same_bytes(&ctx.site, &url.path, &config.body)?;
    run.next();
    Ok(())
}

/// The URLs a boot script loads.
struct ScriptUrls {
    kernel: String,
    initrd: String,
    apkovl: String,
}

impl ScriptUrls {
    /// Reads the first `kernel` and `initrd` lines, `${net0/mac}` expanded.
    fn read(script: &str, mac: &str) -> Result<ScriptUrls, String> {
        let script = script.replace("${net0/mac}", mac);
        let line = |cmd: &str| {
            script
                .lines()
                .find_map(|l| l.trim().strip_prefix(cmd).map(str::to_owned))
        };
        let kernel_line = line("kernel ").ok_or("the script has no kernel line")?;
        let initrd_line = line("initrd ").ok_or("the script has no initrd line")?;
        let word = |l: &str, prefix: &str| {
            l.split_whitespace()
                .find(|w| w.starts_with(prefix))
                .map(str::to_owned)
        };
        Ok(ScriptUrls {
            kernel: word(&kernel_line, "http://").ok_or("no kernel URL")?,
            initrd: word(&initrd_line, "http://").ok_or("no initrd URL")?,
            apkovl: word(&kernel_line, "apkovl=")
                .map(|w| w["apkovl=".len()..].to_owned())
                .ok_or("no apkovl= on the kernel line")?,
        })
    }
}

/// Downloads `url` as the script's retry loop does: `TRIES` tries, 2, 4, 8, 16 s apart, on
/// the kept connection while the server allows it. The size must equal the site file's.
async fn download(
    ctx: &Ctx,
    conn: &mut Option<Conn>,
    local: std::net::Ipv4Addr,
    url: &str,
) -> Result<(), String> {
    let parsed = Url::parse(url)?;
    let want = std::fs::metadata(site_path(&ctx.site, &parsed.path))
        .map_err(|e| format!("{url}: the site file: {e}"))?
        .len();
    let mut last = String::new();
    for attempt in 0..TRIES {
        if attempt > 0 {
            ctx.http_retries.fetch_add(1, Ordering::Relaxed);
            sleep(Duration::from_secs(2 << (attempt - 1))).await;
        }
        if conn
            .as_ref()
            .is_none_or(|c| !c.reusable() || c.server() != parsed.addr)
        {
            match Conn::open(local, parsed.addr).await {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    last = e;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match c.get(&parsed.path, "iPXE/1.21.1+").await {
            Ok(r) if r.status == 200 && r.len == want => return Ok(()),
            Ok(r) => last = format!("status {}, {} of {want} bytes", r.status, r.len),
            Err(e) => {
                last = e;
                *conn = None;
            }
        }
    }
    Err(format!("{url}: {TRIES} tries, last: {last}"))
}

/// The site file a URL path names.
fn site_path(site: &Path, url_path: &str) -> PathBuf {
    let path = url_path.split('?').next().unwrap_or("");
    site.join(path.trim_start_matches('/'))
}

/// The download must equal the site file byte for byte.
fn same_bytes(site: &Path, url_path: &str, got: &[u8]) -> Result<(), String> {
    let path = site_path(site, url_path);
    let want = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if want != got {
        return Err(format!(
            "{url_path}: {} bytes differ from the site's {}",
            got.len(),
            want.len()
        ));
    }
    Ok(())
}

fn parse_prefix(text: &str) -> Result<[u8; 3], String> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--mac-prefix {text:?}: three hex bytes, like 02:5e:00"))?;
    bytes
        .try_into()
        .map_err(|_| format!("--mac-prefix {text:?}: three bytes"))
}

fn mac_of(prefix: [u8; 3], index: u32) -> [u8; 6] {
    let i = index.to_be_bytes();
    [prefix[0], prefix[1], prefix[2], i[1], i[2], i[3]]
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct passed by pointer, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn write_details(path: &Path, outcomes: &[Outcome]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "mac seconds {} failure", PHASES.join(" "))?;
    for o in outcomes {
        let times: Vec<String> = o.times.iter().map(|t| format!("{t:.3}")).collect();
        let failure = match &o.failed {
            Some((phase, e)) => format!("{}: {e}", PHASES[*phase]),
            None => "-".into(),
        };
        writeln!(
            out,
            "{} {:.3} {} {failure}",
            o.mac,
            o.seconds,
            times.join(" ")
        )?;
    }
    out.flush()
}

/// Prints the `STORM` line (stdout) and the phase medians and failure samples (stderr).
fn report(ctx: &Ctx, outcomes: &[Outcome]) {
    let mut ok: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.failed.is_none())
        .map(|o| o.seconds)
        .collect();
    ok.sort_by(f64::total_cmp);
    let all_done = outcomes.iter().map(|o| o.ended).fold(0.0, f64::max);
    let mut by_phase = [0usize; 8];
    for (phase, e) in outcomes.iter().filter_map(|o| o.failed.as_ref()) {
        if by_phase[*phase] < 3 {
            eprintln!("storm: failed in {}: {e}", PHASES[*phase]);
        }
        by_phase[*phase] += 1;
    }
    let failures: Vec<String> = (0..8)
        .filter(|&p| by_phase[p] > 0)
        .map(|p| format!("{}:{}", PHASES[p], by_phase[p]))
        .collect();
    for (p, name) in PHASES.iter().enumerate() {
        let mut t: Vec<f64> = outcomes
            .iter()
            .filter(|o| o.failed.as_ref().is_none_or(|(f, _)| *f > p))
            .map(|o| o.times[p])
            .collect();
        t.sort_by(f64::total_cmp);
        eprintln!(
            "storm: {name:<11} p50 {:8.3} s  p99 {:8.3} s",
            pct(&t, 0.5),
            pct(&t, 0.99)
        );
    }
    println!(
        "STORM devices={} ok={} failed={} all_done_s={all_done:.2} p50_s={:.2} p99_s={:.2} \
         max_s={:.2} failures={} dhcp_retx={} rom_over_4_discovers={} tftp_retx={} http_retries={}",
        outcomes.len(),
        ok.len(),
        outcomes.len() - ok.len(),
        pct(&ok, 0.5),
        pct(&ok, 0.99),
        ok.last().copied().unwrap_or(0.0),
        if failures.is_empty() {
            "none".into()
        } else {
            failures.join(",")
        },
        ctx.dhcp.retransmits.load(Ordering::Relaxed),
        ctx.dhcp.rom_over_limit.load(Ordering::Relaxed),
        ctx.tftp_retransmits.load(Ordering::Relaxed),
        ctx.http_retries.load(Ordering::Relaxed),
    );
}

/// The `q` quantile (nearest rank) of sorted values; 0 when there are none.
fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
