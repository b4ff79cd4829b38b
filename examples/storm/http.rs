//! A minimal HTTP/1.1 client for the boot chain's downloads: GET over a TCP connection
//! bound to the device's own address, kept open between requests as iPXE's connection pool
//! does, `Content-Length` or chunked bodies, every read bounded by an idle timeout. Large
//! bodies are counted and dropped, small ones kept for checking.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Seconds without a byte (or without the connection) before a request fails.
const IDLE: Duration = Duration::from_secs(30);
/// Bodies up to this size are kept; larger ones are only counted.
const KEEP_LIMIT: u64 = 1 << 20;

/// A parsed `http://IPv4[:port]/path` URL.
#[derive(Clone, Debug)]
pub struct Url {
    /// Server address and port.
    pub addr: SocketAddrV4,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses `http://A.B.C.D[:PORT]/PATH` (the boot chain never names hosts).
    pub fn parse(url: &str) -> Result<Url, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("not http: {url}"))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (ip, port) = match host.split_once(':') {
            Some((ip, port)) => (ip, port.parse().map_err(|_| format!("bad port: {url}"))?),
            None => (host, 80),
        };
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("not an IPv4 host: {url}"))?;
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path.to_owned()
        };
        Ok(Url {
            addr: SocketAddrV4::new(ip, port),
            path,
        })
    }
}

/// A response: its status, body length, and the body when it was small.
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body bytes received.
    pub len: u64,
    /// The body, when at most 1 MiB.
    pub body: Vec<u8>,
}

/// One client connection from a device's address.
pub struct Conn {
    stream: TcpStream,
    server: SocketAddrV4,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    reusable: bool,
}

impl Conn {
    /// Connects from `local` (port chosen by the kernel) to `server`.
    pub async fn open(local: Ipv4Addr, server: SocketAddrV4) -> Result<Conn, String> {
        let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        sock.bind(SocketAddrV4::new(local, 0).into())
            .map_err(|e| format!("binding {local}: {e}"))?;
        let stream = timeout(IDLE, sock.connect(server.into()))
            .await
            .map_err(|_| format!("connecting to {server}: timed out"))?
            .map_err(|e| format!("connecting to {server}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            server,
            buf: vec![0; 128 << 10],
            start: 0,
            end: 0,
            reusable: true,
        })
    }

    /// Whether the server allows another request on this connection.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// The server this connection talks to.
    pub fn server(&self) -> SocketAddrV4 {
        self.server
    }

    /// Sends `GET path` and reads the whole response.
    pub async fn get(&mut self, path: &str, agent: &str) -> Result<Response, String> {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {agent}\r\nConnection: keep-alive\r\n\r\n",
            self.server.ip()
        );
        timeout(IDLE, self.stream.write_all(req.as_bytes()))
            .await
            .map_err(|_| "sending the request: timed out".to_owned())?
            .map_err(|e| format!("sending the request: {e}"))?;
        let head = self.head().await?;
        let (status, length, chunked) = parse_head(&head)?;
        let mut body = Vec::new();
        let len = if chunked {
            self.chunked(&mut body).await?
        } else {
            let length = length.ok_or("response without Content-Length")?;
            self.body(length, &mut body).await?;
            length
        };
        Ok(Response { status, len, body })
    }

    /// Reads the header block (up to the blank line).
    async fn head(&mut self) -> Result<String, String> {
        loop {
            if let Some(at) = find(&self.buf[self.start..self.end], b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[self.start..self.start + at]);
                let head = head.into_owned();
                self.start += at + 4;
                if head.to_ascii_lowercase().contains("\nconnection: close") {
                    self.reusable = false;
                }
                return Ok(head);
            }
            if self.end - self.start > 64 << 10 {
                return Err("response header over 64 KiB".into());
            }
            if self.fill().await? == 0 {
                return Err("connection closed before the response header".into());
            }
        }
    }

    /// Reads `length` body bytes; keeps them in `keep` when the body is small.
    async fn body(&mut self, length: u64, keep: &mut Vec<u8>) -> Result<(), String> {
        let mut left = length;
        while left > 0 {
            if self.start == self.end && self.fill().await? == 0 {
                return Err(format!(
                    "connection closed after {} of {length} bytes",
                    length - left
                ));
            }
            let take = (self.end - self.start).min(usize::try_from(left).unwrap_or(usize::MAX));
            if length <= KEEP_LIMIT {
                keep.extend_from_slice(&self.buf[self.start..self.start + take]);
            }
            self.start += take;
            left -= take as u64;
        }
        Ok(())
    }

    /// Reads a chunked body (RFC 9112 §7.1), trailers skipped.
    async fn chunked(&mut self, keep: &mut Vec<u8>) -> Result<u64, String> {
        let mut total = 0;
        loop {
            let line = self.line().await?;
            let hex = line.split(';').next().unwrap_or("").trim();
            let size =
                u64::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size {hex:?}"))?;
            if size == 0 {
                while !self.line().await?.is_empty() {}
                return Ok(total);
            }
            self.body(size, keep).await?;
            total += size;
            self.line().await?;
        }
    }

    async fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(at) = find(&self.buf[self.start..self.end], b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.start..self.start + at]);
                let line = line.into_owned();
                self.start += at + 2;
                return Ok(line);
            }
            if self.fill().await? == 0 {
                return Err("connection closed inside a chunked body".into());
            }
        }
    }

    /// Reads more bytes into the buffer (moving what is left to its front first).
    async fn fill(&mut self) -> Result<usize, String> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = timeout(IDLE, self.stream.read(&mut self.buf[self.end..]))
            .await
            .map_err(|_| format!("no byte for {} s", IDLE.as_secs()))?
            .map_err(|e| format!("reading: {e}"))?;
        self.end += n;
        Ok(n)
    }
}

/// Status, Content-Length and whether the body is chunked.
fn parse_head(head: &str) -> Result<(u16, Option<u64>, bool), String> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    Ok((status, length, chunked))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
