//! What the site may serve: the one rule shared by the TFTP and HTTP servers.
//!
//! [`resolve`] turns a request path (already percent-decoded, with or without a leading `/`)
//! into the canonical path of a regular file inside the site, or says why it is refused.
//! The rules, in the order they are checked (SPEC §2 "private paths", §7):
//!
//! 1. A backslash or a NUL byte anywhere → [`Denied::InvalidCharacter`].
//! 2. The request is split on `/`; empty components (`//`, a leading or trailing `/`) are
//!    collapsed, so `/configs//x` names `configs/x`.
//! 3. A `.` or `..` component → [`Denied::Traversal`]; any other component starting with `.`
//!    (`.git`, `.ssh`, `.x.tar.gz.new`) → [`Denied::Hidden`].
//! 4. A first component that is private — `ovl.toml`, `devices.toml`, `profiles`, `overlays`,
//!    `captures`, compared ASCII-case-insensitively so case-insensitive file systems leak
//!    nothing — → [`Denied::Private`].
//! 5. The path is resolved through the file system (symlinks followed). A missing file →
//!    [`Denied::NotFound`]; a real path outside the canonical site root →
//!    [`Denied::OutsideSite`]; a real path inside the site that rules 3 and 4 refuse (a
//!    symlink `data/x → ../overlays/base/etc/shadow`) → the same refusal.
//! 6. Only regular files are served; directories, sockets, FIFOs, devices →
//!    [`Denied::NotRegularFile`]. An empty request names the site root, a directory.
//!
//! The returned path has no symlinks left in it. A symlink swapped in between [`resolve`] and
//! the caller's `open` is not guarded against (the site is written by its administrators).

use std::io;
use std::path::{Path, PathBuf};

/// First path components that are never served: the site's settings, inventory, profiles,
/// overlay trees (they hold secrets) and the devices' lbu captures.
pub(crate) const PRIVATE_TOP_LEVEL: [&str; 5] = [
    "ovl.toml",
    "devices.toml",
    "profiles",
    "overlays",
    "captures",
];

/// Why a request path is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Denied {
    /// The request holds a backslash or a NUL byte.
    #[error("invalid character {0:?} in path")]
    InvalidCharacter(char),
    /// The request holds a `.` or `..` component.
    #[error("path traversal")]
    Traversal,
    /// A component starts with `.` (hidden files are private).
    #[error("hidden path")]
    Hidden,
    /// The first component is one of the private site files or folders.
    #[error("private path")]
    Private,
    /// The real path (symlinks followed) leaves the site.
    #[error("path leaves the site")]
    OutsideSite,
    /// Nothing exists at that path.
    #[error("not found")]
    NotFound,
    /// The path exists but is not a regular file.
    #[error("not a regular file")]
    NotRegularFile,
    /// The file system refused to look the path up (permissions, I/O error).
    #[error("cannot read path: {0}")]
    Unreadable(io::ErrorKind),
}

impl Denied {
    /// True when the refusal means "there is no such file" (TFTP error 1, HTTP 404) rather
    /// than "you may not have it" (TFTP error 2, HTTP 403).
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Denied::NotFound)
    }
}

/// Resolves `request` against `site_root` and returns the canonical path of the regular file
/// to serve, or why it must not be served (see the module documentation for the rules).
pub(crate) fn resolve(site_root: &Path, request: &str) -> Result<PathBuf, Denied> {
    if let Some(c) = request.chars().find(|&c| c == '\\' || c == '\0') {
        return Err(Denied::InvalidCharacter(c));
    }
    let components: Vec<&str> = request.split('/').filter(|c| !c.is_empty()).collect();
    check_components(&components)?;

    let root = site_root.canonicalize().map_err(io_denied)?;
    let mut joined = root.clone();
    joined.extend(&components);
    let real = joined.canonicalize().map_err(io_denied)?;
    let inside = real.strip_prefix(&root).map_err(|_| Denied::OutsideSite)?;
    let real_components: Vec<&str> = inside
        .iter()
        .map(|c| c.to_str().ok_or(Denied::NotFound))
        .collect::<Result<_, _>>()?;
    check_components(&real_components)?;

    let meta = std::fs::metadata(&real).map_err(io_denied)?;
    if !meta.is_file() {
        return Err(Denied::NotRegularFile);
    }
    Ok(real)
}

/// Applies rules 3 and 4 to a list of non-empty components.
fn check_components(components: &[&str]) -> Result<(), Denied> {
    for c in components {
        if *c == "." || *c == ".." {
            return Err(Denied::Traversal);
        }
        if c.starts_with('.') {
            return Err(Denied::Hidden);
        }
    }
    if let Some(first) = components.first()
        && PRIVATE_TOP_LEVEL
            .iter()
            .any(|p| p.eq_ignore_ascii_case(first))
    {
        return Err(Denied::Private);
    }
    Ok(())
}

fn io_denied(e: io::Error) -> Denied {
    // A symlink loop or an over-long name cannot name a servable file either.
    if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENAMETOOLONG)) {
        return Denied::NotFound;
    }
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Denied::NotFound,
        kind => Denied::Unreadable(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A site with a served file, a private tree, a hidden file and a secret outside it.
    struct Site {
        _outer: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn site() -> Site {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("site");
        fs::create_dir_all(root.join("configs")).unwrap();
        fs::create_dir_all(root.join("overlays/base/etc")).unwrap();
        fs::create_dir_all(root.join("profiles")).unwrap();
        fs::create_dir_all(root.join("captures/52:54:00:12:34:56")).unwrap();
        fs::create_dir_all(root.join("data")).unwrap();
        fs::write(root.join("configs/52:54:00:12:34:56.tar.gz"), b"gz").unwrap();
        fs::write(root.join("undionly.kpxe"), b"ipxe").unwrap();
        fs::write(root.join("ovl.toml"), b"").unwrap();
        fs::write(root.join("devices.toml"), b"").unwrap();
        fs::write(root.join("profiles/S.toml"), b"").unwrap();
        fs::write(root.join("overlays/base/etc/shadow"), b"secret").unwrap();
        fs::write(
            root.join("captures/52:54:00:12:34:56/h.apkovl.tar.gz"),
            b"x",
        )
        .unwrap();
        fs::write(root.join(".hidden"), b"x").unwrap();
        fs::write(root.join("data/.env"), b"x").unwrap();
        let outside = outer.path().join("outside.txt");
        fs::write(&outside, b"outside").unwrap();
        Site {
            _outer: outer,
            root,
            outside,
        }
    }

    #[test]
    fn serves_regular_files_with_or_without_leading_slash() {
        let s = site();
        let want = s
            .root
            .join("configs/52:54:00:12:34:56.tar.gz")
            .canonicalize()
            .unwrap();
        assert_eq!(
            resolve(&s.root, "/configs/52:54:00:12:34:56.tar.gz"),
            Ok(want.clone())
        );
        assert_eq!(
            resolve(&s.root, "configs/52:54:00:12:34:56.tar.gz"),
            Ok(want)
        );
        assert!(resolve(&s.root, "undionly.kpxe").is_ok());
    }

    #[test]
    fn empty_components_are_collapsed() {
        let s = site();
        assert!(resolve(&s.root, "//configs///52:54:00:12:34:56.tar.gz").is_ok());
    }

    #[test]
    fn backslash_and_nul_are_refused() {
        let s = site();
        assert_eq!(
            resolve(&s.root, "configs\\x"),
            Err(Denied::InvalidCharacter('\\'))
        );
        assert_eq!(
            resolve(&s.root, "..\\..\\etc\\passwd"),
            Err(Denied::InvalidCharacter('\\'))
        );
        assert_eq!(
            resolve(&s.root, "undionly.kpxe\0"),
            Err(Denied::InvalidCharacter('\0'))
        );
    }

    #[test]
    fn dot_and_dotdot_components_are_traversal() {
        let s = site();
        for r in [
            "../outside.txt",
            "/../outside.txt",
            "configs/../undionly.kpxe",
            "./undionly.kpxe",
            "configs/./x",
            "..",
            "data/..",
        ] {
            assert_eq!(resolve(&s.root, r), Err(Denied::Traversal), "{r}");
        }
    }

    #[test]
    fn hidden_components_are_refused() {
        let s = site();
        assert_eq!(resolve(&s.root, ".hidden"), Err(Denied::Hidden));
        assert_eq!(resolve(&s.root, "data/.env"), Err(Denied::Hidden));
        assert_eq!(resolve(&s.root, ".git/config"), Err(Denied::Hidden));
        assert_eq!(resolve(&s.root, "...x"), Err(Denied::Hidden));
    }

    #[test]
    fn private_paths_are_refused_even_when_missing() {
        let s = site();
        for r in [
            "ovl.toml",
            "/devices.toml",
            "profiles/S.toml",
            "overlays/base/etc/shadow",
            "captures/52:54:00:12:34:56/h.apkovl.tar.gz",
            "profiles",
            "overlays/",
            "captures/nothing-here",
            "OVL.TOML",
            "Overlays/base/etc/shadow",
        ] {
            assert_eq!(resolve(&s.root, r), Err(Denied::Private), "{r}");
        }
    }

    #[test]
    fn private_names_deeper_in_the_tree_are_ordinary() {
        let s = site();
        fs::create_dir_all(s.root.join("data/profiles")).unwrap();
        fs::write(s.root.join("data/profiles/ovl.toml"), b"x").unwrap();
        assert!(resolve(&s.root, "data/profiles/ovl.toml").is_ok());
    }

    #[test]
    fn absolute_paths_are_relative_to_the_site() {
        let s = site();
        // "/etc/passwd" names site/etc/passwd, which does not exist.
        assert_eq!(resolve(&s.root, "/etc/passwd"), Err(Denied::NotFound));
        // The temp dir's own name starts with `.tmp`, so this one is refused as hidden;
        // either way it is looked up under the site, never at its absolute location.
        let abs = s.outside.to_str().unwrap().to_owned();
        assert!(resolve(&s.root, &abs).is_err());
    }

    #[test]
    fn missing_files_are_not_found() {
        let s = site();
        assert_eq!(
            resolve(&s.root, "configs/00:00:00:00:00:00.tar.gz"),
            Err(Denied::NotFound)
        );
        assert_eq!(
            resolve(&s.root, "undionly.kpxe/below"),
            Err(Denied::NotFound)
        );
        assert!(Denied::NotFound.is_not_found());
        assert!(!Denied::Private.is_not_found());
    }

    #[test]
    fn directories_are_not_regular_files() {
        let s = site();
        assert_eq!(resolve(&s.root, "configs"), Err(Denied::NotRegularFile));
        assert_eq!(resolve(&s.root, "/"), Err(Denied::NotRegularFile));
        assert_eq!(resolve(&s.root, ""), Err(Denied::NotRegularFile));
    }

    #[test]
    fn fifos_are_not_regular_files() {
        let s = site();
        let fifo = s.root.join("data/fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: c is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(resolve(&s.root, "data/fifo"), Err(Denied::NotRegularFile));
    }

    #[test]
    fn symlinks_leaving_the_site_are_refused() {
        let s = site();
        symlink(&s.outside, s.root.join("data/out-abs")).unwrap();
        symlink("../../outside.txt", s.root.join("data/out-rel")).unwrap();
        symlink("/etc", s.root.join("etc-link")).unwrap();
        assert_eq!(resolve(&s.root, "data/out-abs"), Err(Denied::OutsideSite));
        assert_eq!(resolve(&s.root, "data/out-rel"), Err(Denied::OutsideSite));
        assert_eq!(
            resolve(&s.root, "etc-link/passwd"),
            Err(Denied::OutsideSite)
        );
    }

    #[test]
    fn symlinks_into_private_paths_are_refused() {
        let s = site();
        symlink("../overlays/base/etc/shadow", s.root.join("data/shadow")).unwrap();
        symlink("overlays", s.root.join("ov")).unwrap();
        symlink("../.hidden", s.root.join("data/h")).unwrap();
        assert_eq!(resolve(&s.root, "data/shadow"), Err(Denied::Private));
        assert_eq!(resolve(&s.root, "ov/base/etc/shadow"), Err(Denied::Private));
        assert_eq!(resolve(&s.root, "data/h"), Err(Denied::Hidden));
    }

    #[test]
    fn symlinks_staying_public_inside_the_site_are_followed() {
        let s = site();
        symlink("../undionly.kpxe", s.root.join("data/boot")).unwrap();
        assert_eq!(
            resolve(&s.root, "data/boot"),
            Ok(s.root.join("undionly.kpxe").canonicalize().unwrap())
        );
    }

    #[test]
    fn a_symlinked_site_root_works() {
        let s = site();
        let link = s.root.parent().unwrap().join("site-link");
        symlink(&s.root, &link).unwrap();
        assert!(resolve(&link, "undionly.kpxe").is_ok());
        assert_eq!(resolve(&link, "ovl.toml"), Err(Denied::Private));
    }

    #[test]
    fn dangling_and_looping_symlinks_are_not_found() {
        let s = site();
        symlink("nowhere", s.root.join("data/dangling")).unwrap();
        symlink("loop", s.root.join("data/loop")).unwrap();
        assert_eq!(resolve(&s.root, "data/dangling"), Err(Denied::NotFound));
        assert_eq!(resolve(&s.root, "data/loop"), Err(Denied::NotFound));
    }
}
