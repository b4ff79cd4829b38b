//! The process limits `ovl serve` needs: the open-file limit raised to its hard limit at
//! start, and the HTTP connection cap kept within it.

/// File descriptors kept for everything but HTTP connections: TFTP transfers (a socket and a
/// file each), DHCP, watch mode, logs.
const RESERVED_FILES: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force
/// (unchanged when it cannot be read or raised).
pub(crate) fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// The HTTP connection cap: `configured`, lowered so that every connection can hold its
/// socket and an open file within `open_files`.
pub(crate) fn connection_cap(configured: u32, open_files: u64) -> usize {
    let room = open_files.saturating_sub(RESERVED_FILES) / 2;
    usize::try_from(u64::from(configured).min(room.max(16))).unwrap_or(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        assert_eq!(connection_cap(1024, 1_048_576), 1024);
        assert_eq!(connection_cap(1024, 1024), 384);
        assert_eq!(connection_cap(1024, 100), 16);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let now = raise_open_files();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
        assert_eq!(now, lim.rlim_cur);
    }
}
