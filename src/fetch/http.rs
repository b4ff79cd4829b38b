//! The HTTP client of `ovl fetch` (ureq; plain HTTP and HTTPS with rustls, proxies from
//! `http_proxy`/`https_proxy`/`ALL_PROXY`/`NO_PROXY`): bounded downloads with timeouts, and
//! resumable ones into a `.part` file with HTTP `Range`. Every error names the URL.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::fetch::Progress;

/// Time to establish a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts of one download in one run: the first and its resumed retries.
const ATTEMPTS: u32 = 4;
/// Pause before the first retry; the n-th retry waits n times as long.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// A download's bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    /// The exact size announced elsewhere (the release index), when known.
    pub expected: Option<u64>,
    /// The largest size accepted.
    pub max: u64,
}

/// An agent with `ovl`'s timeouts and user agent.
pub(crate) struct Client {
    agent: ureq::Agent,
}

/// How one attempt of a download ended, when not with the whole body.
enum Failed {
    /// Worth retrying from where the `.part` file now ends (after `got` more bytes).
    Retry {
        /// Bytes received before the failure.
        got: u64,
        /// What went wrong.
        why: String,
    },
    /// Not worth retrying.
    Fatal(Error),
}

/// An error about `url`.
pub(crate) fn remote(url: &str, what: impl std::fmt::Display) -> Error {
    Error::Env(format!("{url}: {what}"))
}

impl Client {
    /// A client with a connect timeout, and `silence` as the longest wait for a response
    /// and between two reads of a body.
    pub(crate) fn new(silence: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(silence))
            .timeout_per_read(Some(silence))
            .http_status_as_error(false)
            .user_agent(concat!("ovl/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client { agent }
    }

    /// GET `url` into memory; anything but `200` or a body over `max` bytes is an error.
    pub(crate) fn get_small(&self, url: &str, max: u64) -> Result<Vec<u8>> {
        let mut resp = self.agent.get(url).call().map_err(|e| remote(url, e))?;
        let status = resp.status();
        if status != 200 {
            return Err(remote(url, status_text(status)));
        }
        resp.body_mut()
            .with_config()
            .limit(max)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    remote(url, format!("larger than the {max} bytes allowed"))
                }
                e => remote(url, e),
            })
    }

    /// Download `url` into `part`, resuming from its end with `Range` when it already holds a
    /// beginning (a server answering `200` starts it over). A lost connection is retried
    /// from where it stopped, [`ATTEMPTS`] times in all; after that the bytes stay in `part`
    /// for the next run. Returns the bytes received over the network.
    pub(crate) fn download(
        &self,
        url: &str,
        part: &Path,
        limit: Limit,
        progress: &dyn Progress,
    ) -> Result<u64> {
        if let Some(dir) = part.parent() {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        let mut received = 0;
        let mut failures = 0;
        loop {
            let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
            if have > 0 && limit.expected == Some(have) {
                return Ok(received);
            }
            if have > limit.max || limit.expected.is_some_and(|e| have > e) {
                File::create(part).at(part)?;
                continue;
            }
            match self.attempt(url, part, have, limit, progress) {
                Ok(got) => return Ok(received + got),
                Err(Failed::Fatal(e)) => return Err(e),
                Err(Failed::Retry { got, why }) => {
                    received += got;
                    failures += 1;
                    if failures >= ATTEMPTS {
                        let kept = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
                        return Err(remote(
                            url,
                            format!(
                                "{why} ({ATTEMPTS} attempts); the {kept} bytes received are \
                                 kept in {} and the next run resumes from there",
                                part.display()
                            ),
                        ));
                    }
                    std::thread::sleep(RETRY_PAUSE * failures);
                }
            }
        }
    }

    /// One request, appending to `part` (which holds `have` bytes) or starting it over.
    fn attempt(
        &self,
        url: &str,
        part: &Path,
        have: u64,
        limit: Limit,
        progress: &dyn Progress,
    ) -> Result<u64, Failed> {
        let mut req = self.agent.get(url);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = req.call().map_err(|e| Failed::Retry {
            got: 0,
            why: e.to_string(),
        })?;
        let status = resp.status();
        let range = header(&resp, "content-range").and_then(|v| content_range(&v));
        let start = match status.as_u16() {
            200 => 0,
            206 if have > 0 && range.is_some_and(|(s, _)| s == have) => have,
            206 => return Err(restart(part, "the server resumed at another offset")),
            416 if have > 0 => {
                if range.is_some_and(|(_, total)| total == Some(have)) {
                    return Ok(0);
                }
                return Err(restart(part, "the server refused to resume"));
            }
            code if code >= 500 => {
                return Err(Failed::Retry {
                    got: 0,
                    why: status_text(status),
                });
            }
            _ => return Err(Failed::Fatal(remote(url, status_text(status)))),
        };
        let total = resp.body().content_length().map(|n| start + n);
        if let Some(t) = total {
            if t > limit.max {
                let msg = format!("{t} bytes, more than the {} allowed", limit.max);
                return Err(Failed::Fatal(remote(url, msg)));
            }
            if let Some(e) = limit.expected.filter(|&e| e != t) {
                let msg = format!("{t} bytes, where the release index says {e}");
                return Err(Failed::Fatal(remote(url, msg)));
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(start > 0)
            .truncate(start == 0)
            .open(part)
            .map_err(|e| Failed::Fatal(Error::io(part, e)))?;
        progress.start(url, start, total.or(limit.expected));
        let r = copy(
            resp.into_body().into_reader(),
            file,
            part,
            start,
            limit,
            progress,
        );
        progress.finish();
        let got = r.map_err(|f| match f {
            Failed::Fatal(Error::Env(m)) => Failed::Fatal(remote(url, m)),
            other => other,
        })?;
        match total {
            Some(t) if start + got < t => Err(Failed::Retry {
                got,
                why: format!("connection closed after {} of {t} bytes", start + got),
            }),
            _ => Ok(got),
        }
    }
}

/// Copy `body` to the end of `file` (which holds `start` bytes), within `limit`; the file is
/// synced whatever happens, so a retry resumes after every byte received.
fn copy(
    mut body: impl Read,
    mut file: File,
    part: &Path,
    start: u64,
    limit: Limit,
    progress: &dyn Progress,
) -> Result<u64, Failed> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    let result = loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break Ok(got),
            Ok(n) => n,
            Err(e) => {
                break Err(Failed::Retry {
                    got,
                    why: format!("connection lost after {} bytes: {e}", start + got),
                });
            }
        };
        if start + got + n as u64 > limit.max {
            let msg = format!("larger than the {} bytes allowed", limit.max);
            break Err(Failed::Fatal(Error::Env(msg)));
        }
        if let Err(e) = file.write_all(&buf[..n]) {
            break Err(Failed::Fatal(Error::io(part, e)));
        }
        got += n as u64;
        progress.advance(n as u64);
    };
    file.sync_all()
        .map_err(|e| Failed::Fatal(Error::io(part, e)))?;
    result
}

/// Empty `part` and ask for a new attempt from the start.
fn restart(part: &Path, why: &str) -> Failed {
    match File::create(part) {
        Ok(_) => Failed::Retry {
            got: 0,
            why: why.to_string(),
        },
        Err(e) => Failed::Fatal(Error::io(part, e)),
    }
}

/// A response header as text.
fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `Content-Range: bytes START-END/TOTAL` (or `bytes */TOTAL`) → (START, TOTAL); START is 0
/// in the second form, TOTAL `None` when `*`.
fn content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let start = match span.trim() {
        "*" => 0,
        s => s.split_once('-')?.0.trim().parse().ok()?,
    };
    Some((start, total))
}

/// `HTTP 404 Not Found`.
fn status_text(status: ureq::http::StatusCode) -> String {
    format!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(content_range("bytes */200"), Some((0, Some(200))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("items 1-2/3"), None);
        assert_eq!(content_range("bytes x-2/3"), None);
    }

    #[test]
    fn statuses_read_well() {
        assert_eq!(
            status_text(ureq::http::StatusCode::NOT_FOUND),
            "HTTP 404 Not Found"
        );
    }
}
