//! A tower-http [`Backend`] that hands `ServeDir` a file this server already resolved and
//! opened, so a request costs one trip to the blocking pool (resolve, open, fstat and, for a
//! small file, the read) instead of one per file operation. tower-http still does the HTTP
//! part: HEAD, Range, ETag, Last-Modified and the conditional requests.

use std::future::{Ready, ready};
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Bytes;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower_http::services::fs::{Backend, File};

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
    meta: std::fs::Metadata,
    content: Content,
}

impl OpenedFile {
    /// Opens `path` (already resolved); files up to [`SMALL_FILE`] bytes are read now.
    pub(super) fn open(path: &Path) -> io::Result<OpenedFile> {
        let mut file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
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
        Ok(OpenedFile { meta, content })
    }
}

/// A [`Backend`] holding one opened file: `open` takes it (whatever the path), `metadata`
/// answers with its metadata.
#[derive(Debug, Clone)]
pub(super) struct OpenedBackend {
    meta: std::fs::Metadata,
    file: Arc<Mutex<Option<Content>>>,
}

impl OpenedBackend {
    /// A backend serving `f`.
    pub(super) fn new(f: OpenedFile) -> OpenedBackend {
        OpenedBackend {
            meta: f.meta,
            file: Arc::new(Mutex::new(Some(f.content))),
        }
    }
}

/// The file handed to tower-http.
#[derive(Debug)]
pub(super) enum OpenedReader {
    /// Served from memory.
    Memory(Cursor<Bytes>, std::fs::Metadata),
    /// Read from disk on the blocking pool, chunk by chunk.
    Disk(tokio::fs::File, std::fs::Metadata),
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
                tokio::fs::File::from_std(f),
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
            OpenedReader::Disk(f, _) => Pin::new(f).poll_read(cx, buf),
        }
    }
}

impl AsyncSeek for OpenedReader {
    fn start_seek(self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        match self.get_mut() {
            OpenedReader::Memory(c, _) => Pin::new(c).start_seek(position),
            OpenedReader::Disk(f, _) => Pin::new(f).start_seek(position),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match self.get_mut() {
            OpenedReader::Memory(c, _) => Pin::new(c).poll_complete(cx),
            OpenedReader::Disk(f, _) => Pin::new(f).poll_complete(cx),
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
