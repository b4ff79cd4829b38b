//! Fuzzes the lbu archive reader (`ovl::build::lbu::read_archive`), which reads captures that
//! devices write: it must never panic, and whatever it accepts must hold only relative names
//! without `..`, symlinks that stay inside the root, and no more file bytes than the limit.
#![no_main]

use std::io::Write;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ovl::build::layer::{LayerSource, Node};
use ovl::build::lbu::{ArchiveLimits, read_archive};

/// File bytes one fuzzed archive may hold: small, so no input costs much memory.
const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // The first byte says whether the rest is a gzip stream (odd) or a tar stream to gzip
    // first (even), so both the gzip decoder and the tar reader are reached.
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let gz = if selector & 1 == 1 {
        rest.to_vec()
    } else {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = enc.write_all(rest);
        enc.finish().unwrap_or_default()
    };
    let path = Path::new("captures/fuzz/fuzz.apkovl.tar.gz");
    let source = LayerSource::Archive(path.to_path_buf());
    let limits = ArchiveLimits { max_bytes: LIMIT, max_entries: 10_000 };
    let Ok(tree) = read_archive(&source, path, &gz[..], limits) else {
        return;
    };
    // Hard links share their target's bytes: count each stored file once.
    let mut files = std::collections::HashMap::new();
    for e in &tree.entries {
        assert!(!e.path.is_empty() && !e.path.starts_with('/'), "{:?}", e.path);
        assert!(e.path.split('/').all(|c| !c.is_empty() && c != "." && c != ".."), "{:?}", e.path);
        match &e.node {
            Node::File(b) => {
                files.insert(b.as_ptr() as usize, b.len() as u64);
            }
            Node::Symlink(t) if !t.starts_with('/') => {
                let mut depth = e.path.split('/').count() as i64 - 1;
                for c in t.split('/') {
                    match c {
                        "" | "." => {}
                        ".." => depth -= 1,
                        _ => depth += 1,
                    }
                    assert!(depth >= 0, "{} -> {t} escapes", e.path);
                }
            }
            _ => {}
        }
    }
    assert!(files.values().sum::<u64>() <= LIMIT);
});
