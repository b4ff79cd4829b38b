//! Errors of the build pipeline, each carrying the place that caused it, and the exit codes
//! they map to (SPEC §7: 0 success, 1 invalid input, 2 usage, 3 environment).
//!
//! [`Error`] is split by phase: invalid input at a [`Location`] (a TOML key, a template line),
//! invalid input concerning one device, I/O and environment problems, and usage errors. It is
//! `Clone` (an I/O error is shared behind an [`Arc`]), so one failed layer read can be reported
//! by every device that uses it. Narrower typed errors (`manifest::Collision`,
//! `layer::BadLayer`, `profile::UnknownProfile`) are turned into an [`Error`] where the place
//! they concern is known.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::ser::{Serialize, Serializer};

/// Exit code of a successful run.
pub const EXIT_OK: i32 = 0;
/// Exit code for invalid input: bad TOML, unknown keys, template errors, bad MACs, …
pub const EXIT_INPUT: i32 = 1;
/// Exit code for a usage error (bad flags or arguments).
pub const EXIT_USAGE: i32 = 2;
/// Exit code for an environment problem: I/O, permissions, ports.
pub const EXIT_ENV: i32 = 3;
/// Exit code of `ovl diff --exit-code` and `ovl build --dry-run --exit-code` when an archive
/// would be created or updated (and no device failed).
pub const EXIT_CHANGES: i32 = 4;

/// A place in a file: path, and where known the 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (or folder) the problem is in.
    pub path: PathBuf,
    /// 1-based line and column, when the problem has one.
    pub line_col: Option<(usize, usize)>,
}

impl Location {
    /// A location naming only a path.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Location {
            path: path.into(),
            line_col: None,
        }
    }

    /// A location at a byte offset of `text`, the contents of `path`. Counts the lines from
    /// the top: for many locations in one text, use a [`LineIndex`].
    pub fn at_offset(path: impl Into<PathBuf>, text: &str, offset: usize) -> Self {
        LineIndex::new(text).locate(path, offset)
    }
}

/// The start of every line of one text, so that byte offsets turn into line and column in
/// logarithmic time: locating every entry of a 50,000-device inventory stays linear.
#[derive(Debug, Clone)]
pub struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset of the first character of each line; `starts[0] == 0`.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    /// Index the lines of `text`.
    pub fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    /// 1-based line and column (in characters) of byte `offset` (clamped to the text).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = self.text.floor_char_boundary(offset.min(self.text.len()));
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        (line, self.text[start..offset].chars().count() + 1)
    }

    /// The location of byte `offset` in `path`, the file this text was read from.
    pub fn locate(&self, path: impl Into<PathBuf>, offset: usize) -> Location {
        Location {
            path: path.into(),
            line_col: Some(self.line_col(offset)),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line_col {
            Some((l, c)) => write!(f, "{}:{}:{}", self.path.display(), l, c),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// Everything that can go wrong while reading a site and building archives.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Invalid input at a known place (TOML syntax, unknown key, bad value, template error).
    #[error("{loc}: {message}")]
    Input {
        /// Where.
        loc: Location,
        /// What, in words for an administrator.
        message: String,
    },
    /// Invalid input that concerns one device.
    #[error("device {mac}: {message}")]
    Device {
        /// The device's MAC, lowercase with colons.
        mac: String,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The system's error, shared so that the error can be cloned.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The site or its environment is unusable (no site found, …).
    #[error("{0}")]
    Env(String),
    /// Wrong use of the command line that clap could not catch.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// An input error at `loc`; `message` is a string or a typed error.
    pub fn input(loc: Location, message: impl fmt::Display) -> Self {
        Error::Input {
            loc,
            message: message.to_string(),
        }
    }

    /// An input error naming only a path; `message` is a string or a typed error.
    pub fn at_path(path: impl Into<PathBuf>, message: impl fmt::Display) -> Self {
        Error::Input {
            loc: Location::path(path),
            message: message.to_string(),
        }
    }

    /// An input error concerning the device `mac`; `message` is a string or a typed error.
    pub fn device(mac: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Device {
            mac: mac.to_string(),
            message: message.to_string(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source: Arc::new(source),
        }
    }

    /// The exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input { .. } | Error::Device { .. } => EXIT_INPUT,
            Error::Io { .. } | Error::Env(_) => EXIT_ENV,
            Error::Usage(_) => EXIT_USAGE,
        }
    }

    /// A short machine-readable kind, used in JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Input { .. } => "input",
            Error::Device { .. } => "device",
            Error::Io { .. } => "io",
            Error::Env(_) => "environment",
            Error::Usage(_) => "usage",
        }
    }
}

impl Error {
    /// The message without its location (`unknown key `pakages`…`).
    pub fn message(&self) -> String {
        match self {
            Error::Input { message, .. } | Error::Device { message, .. } => message.clone(),
            Error::Io { source, .. } => source.to_string(),
            Error::Env(m) | Error::Usage(m) => m.clone(),
        }
    }

    /// The file the error is in, with its line and column when known.
    pub fn location(&self) -> Option<Location> {
        match self {
            Error::Input { loc, .. } => Some(loc.clone()),
            Error::Io { path, .. } => Some(Location::path(path.clone())),
            _ => None,
        }
    }

    /// The MAC of the device the error is about, when it names one.
    pub fn mac(&self) -> Option<&str> {
        match self {
            Error::Device { mac, .. } => Some(mac),
            _ => None,
        }
    }
}

/// The JSON form of an error, the same wherever JSON is printed (`docs/json.md`): every key
/// is always present, `null` when unknown.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JsonError {
    /// `input`, `device`, `io`, `environment` or `usage`.
    pub kind: &'static str,
    /// What is wrong, without the location.
    pub message: String,
    /// The file or folder, as the error names it, or `null`.
    pub file: Option<String>,
    /// 1-based line, or `null`.
    pub line: Option<usize>,
    /// 1-based column, or `null`.
    pub column: Option<usize>,
    /// The device concerned, or `null`.
    pub mac: Option<String>,
    /// The whole line as printed on stderr after `error: `.
    pub text: String,
}

impl JsonError {
    /// `e` as JSON; `mac` is the device it was met for, when the error does not name one.
    pub fn new(e: &Error, mac: Option<&dyn fmt::Display>) -> JsonError {
        let loc = e.location();
        JsonError {
            kind: e.kind(),
            message: e.message(),
            file: loc.as_ref().map(|l| l.path.display().to_string()),
            line: loc.as_ref().and_then(|l| l.line_col).map(|(l, _)| l),
            column: loc.as_ref().and_then(|l| l.line_col).map(|(_, c)| c),
            mac: e
                .mac()
                .map(str::to_string)
                .or_else(|| mac.map(|m| m.to_string())),
            text: e.to_string(),
        }
    }
}

/// An error serializes as its [`JsonError`] object.
impl Serialize for Error {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        JsonError::new(self, None).serialize(s)
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Extension to attach a path to I/O errors.
pub trait IoContext<T> {
    /// Turn an `io::Error` into [`Error::Io`] naming `path`.
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_agrees_with_counting() {
        let text = "a = 1\nbé = \"x\"\n\n[t]\nk = 2";
        let idx = LineIndex::new(text);
        for offset in 0..=text.len() + 3 {
            let o = text.floor_char_boundary(offset.min(text.len()));
            let before = &text[..o];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            assert_eq!(idx.line_col(offset), (line, col), "offset {offset}");
        }
        assert_eq!(
            Location::at_offset("f.toml", text, 9).to_string(),
            "f.toml:2:3"
        );
    }
}
