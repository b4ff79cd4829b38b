//! A tower-http [`Backend`] that hands `ServeDir` a file this server already resolved and
//! opened, so a request costs one trip to the blocking pool (resolve, open, fstat and, for a
//! small file, the read) instead of one per file operation. tower-http still does the HTTP
//! part: HEAD, Range, ETag, Last-Modified and the conditional requests.
//!
//! A large file is read with positioned reads on the blocking pool, at most one chunk at a
//! time and only when tower-http asks for the next one (when hyper has room to send it), so
//! a client that reads slowly holds a few chunks of memory, never the file.

use std::future::{Future, Ready, ready};
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Bytes;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower_http::services::fs::{Backend, File};

use super::memo::Entry;

/// Files up to this size are read whole in the blocking step and served from memory.
pub(super) const SMALL_FILE: u64 = 64 * 1024;

/// The contents of an opened file: in memory, or still on disk.
#[derive(Debug)]
enum Content {
    Memory(Bytes),
    Disk(std::fs::File),
}

/// A file opened (and, when small, read) on the blocking pool.
#[derive(Debug)]
pub(super) struct OpenedFile {
    pub(super) meta: std::fs::Metadata,
    content: Content,
    /// The answer kept for a plain GET of this version of the file (`memo`).
    pub(super) kept: Option<Arc<Entry>>,
    /// Opened by the name requested (the short way: no symlink), so that tower-http's
    /// answer, whose `Content-Type` follows that name, may be kept under it.
    pub(super) keepable: bool,
}

impl OpenedFile {
    /// Opens `path` (already resolved, possibly through symlinks: its answer is not kept);
    /// files up to [`SMALL_FILE`] bytes are read now.
    pub(super) fn open(path: &Path) -> io::Result<OpenedFile> {
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut opened = OpenedFile::from_open(file, meta, None)?;
        opened.keepable = false;
        Ok(opened)
    }

    /// `file`, opened by the name requested, with its metadata `meta` (a regular file); read
    /// now when small and not `kept` already.
    pub(super) fn from_open(
        mut file: std::fs::File,
        meta: std::fs::Metadata,
        kept: Option<Arc<Entry>>,
    ) -> io::Result<OpenedFile> {
        if let Some(k) = kept {
            return Ok(OpenedFile {
                meta,
                content: Content::Memory(k.body.clone()),
                kept: Some(k),
                keepable: true,
            });
        }
        let content = if meta.len() <= SMALL_FILE {
            let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
            // Read at most what fstat said (a file growing meanwhile is cut at that length,
            // so Content-Length and body agree).
            (&mut file).take(meta.len()).read_to_end(&mut buf)?;
            if buf.len() as u64 != meta.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being read",
                ));
            }
            Content::Memory(Bytes::from(buf))
        } else {
            Content::Disk(file)
        };
        Ok(OpenedFile {
            meta,
            content,
            kept: None,
            keepable: true,
        })
    }

    /// The file as `kept` (its version was checked by the caller), not opened.
    pub(super) fn from_kept(kept: Arc<Entry>) -> OpenedFile {
        OpenedFile {
            meta: kept.meta.clone(),
            content: Content::Memory(kept.body.clone()),
            kept: Some(kept),
            keepable: true,
        }
    }

    /// The file's bytes when they are in memory.
    pub(super) fn bytes(&self) -> Option<Bytes> {
        match &self.content {
            Content::Memory(b) => Some(b.clone()),
            Content::Disk(_) => None,
        }
    }
}

/// A [`Backend`] holding one opened file: `open` takes it (whatever the path), `metadata`
/// answers with its metadata.
#[derive(Debug, Clone)]
pub(super) struct OpenedBackend {
    meta: std::fs::Metadata,
    file: Arc<Mutex<Option<Content>>>,
    chunk: usize,
}

impl OpenedBackend {
    /// A backend serving `f`, read from disk `chunk` bytes at a time at most.
    pub(super) fn new(f: OpenedFile, chunk: usize) -> OpenedBackend {
        OpenedBackend {
            meta: f.meta,
            file: Arc::new(Mutex::new(Some(f.content))),
            chunk: chunk.max(4096),
        }
    }
}

/// The file handed to tower-http.
#[derive(Debug)]
pub(super) enum OpenedReader {
    /// Served from memory.
    Memory(Cursor<Bytes>, std::fs::Metadata),
    /// Read from disk on the blocking pool, chunk by chunk.
    Disk(DiskReader, std::fs::Metadata),
}

/// Positioned reads of an open file on the blocking pool, one chunk at a time.
#[derive(Debug)]
pub(super) struct DiskReader {
    file: Arc<std::fs::File>,
    pos: u64,
    chunk: usize,
    /// A read running on the blocking pool.
    pending: Option<tokio::task::JoinHandle<io::Result<Vec<u8>>>>,
    /// Bytes read but not yet handed out (when the caller's buffer was smaller).
    left: Vec<u8>,
}

impl DiskReader {
    fn new(file: std::fs::File, chunk: usize) -> DiskReader {
        DiskReader {
            file: Arc::new(file),
            pos: 0,
            chunk,
            pending: None,
            left: Vec::new(),
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.left.is_empty() {
                let n = self.left.len().min(buf.remaining());
                buf.put_slice(&self.left[..n]);
                self.left.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let pending = self.pending.get_or_insert_with(|| {
                let (file, pos) = (Arc::clone(&self.file), self.pos);
                let want = buf.remaining().min(self.chunk);
                tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut data = vec![0u8; want];
                    let n = file.read_at(&mut data, pos)?;
                    data.truncate(n);
                    Ok(data)
                })
            });
            let read = match Pin::new(pending).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            };
            self.pending = None;
            let data = read.map_err(io::Error::other)??;
            if data.is_empty() {
                // End of file.
                return Poll::Ready(Ok(()));
            }
            self.pos += data.len() as u64;
            self.left = data;
        }
    }

    fn start_seek(&mut self, position: io::SeekFrom) -> io::Result<()> {
        if self.pending.is_some() {
            return Err(io::Error::other("seek while a read is running"));
        }
        self.left.clear();
        self.pos = match position {
            io::SeekFrom::Start(n) => n,
            io::SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
            io::SeekFrom::End(d) => self.file.metadata()?.len().saturating_add_signed(d),
        };
        Ok(())
    }
}

impl Backend for OpenedBackend {
    type File = OpenedReader;
    type Metadata = std::fs::Metadata;
    type OpenFuture = Ready<io::Result<OpenedReader>>;
    type MetadataFuture = Ready<io::Result<std::fs::Metadata>>;

    fn open(&self, _path: PathBuf) -> Self::OpenFuture {
        let taken = self.file.lock().unwrap_or_else(|p| p.into_inner()).take();
        ready(match taken {
            Some(Content::Memory(b)) => Ok(OpenedReader::Memory(Cursor::new(b), self.meta.clone())),
            Some(Content::Disk(f)) => Ok(OpenedReader::Disk(
                DiskReader::new(f, self.chunk),
                self.meta.clone(),
            )),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "already served")),
        })
    }

    fn metadata(&self, _path: PathBuf) -> Self::MetadataFuture {
        ready(Ok(self.meta.clone()))
    }
}

impl AsyncRead for OpenedReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OpenedReader::Memory(c, _) => Pin::new(c).poll_read(cx, buf),
            OpenedReader::Disk(f, _) => f.poll_read(cx, buf),
        }
    }
}

impl AsyncSeek for OpenedReader {
    fn start_seek(self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        match self.get_mut() {
            OpenedReader::Memory(c, _) => Pin::new(c).start_seek(position),
            OpenedReader::Disk(f, _) => f.start_seek(position),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match self.get_mut() {
            OpenedReader::Memory(c, _) => Pin::new(c).poll_complete(cx),
            OpenedReader::Disk(f, _) => Poll::Ready(Ok(f.pos)),
        }
    }
}

impl File for OpenedReader {
    type Metadata = std::fs::Metadata;
    type MetadataFuture<'a> = Ready<io::Result<std::fs::Metadata>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        ready(Ok(match self {
            OpenedReader::Memory(_, m) | OpenedReader::Disk(_, m) => m.clone(),
        }))
    }
}
