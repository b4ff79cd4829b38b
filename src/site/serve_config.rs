//! The `[serve]` keys that bound what the servers give out and hold: `public` (more site
//! files in the public set, never a private one) and the HTTP connection limits
//! (`max_connections`, `header_timeout`, `idle_timeout`) and the TFTP one
//! (`tftp_max_transfers`); see the README's Security section.

use std::path::Path;

use crate::error::{Error, Result};
use crate::site::ServeConfig;
use crate::site::layout::{CONFIGS_DIR, PRIVATE_TOP};

/// Checks `[serve] public` and the limits of `serve`; `path` is the `ovl.toml` read.
pub(crate) fn validate(serve: &ServeConfig, path: &Path) -> Result<()> {
    for (key, v) in [
        ("max_connections", serve.max_connections),
        ("header_timeout", serve.header_timeout),
        ("idle_timeout", serve.idle_timeout),
        ("tftp_max_transfers", serve.tftp_max_transfers),
    ] {
        if v == 0 {
            return Err(Error::at_path(
                path,
                format!("[serve] {key} = 0: expected a positive number"),
            ));
        }
    }
    for entry in &serve.public {
        check_public(entry)
            .map_err(|why| Error::at_path(path, format!("[serve] public: {entry:?} {why}")))?;
    }
    Ok(())
}

/// Why a `[serve] public` entry cannot be served, if it cannot.
fn check_public(entry: &str) -> std::result::Result<(), String> {
    if entry.starts_with('/') || entry.contains(['\\', '\0']) {
        return Err("must be a site-relative path such as \"extra.iso\" or \"alpine/\"".into());
    }
    let components: Vec<&str> = entry.split('/').filter(|c| !c.is_empty()).collect();
    let Some(first) = components.first() else {
        return Err("is empty".into());
    };
    if components
        .iter()
        .any(|c| *c == "." || *c == ".." || c.starts_with('.'))
    {
        return Err("must not hold `.`, `..` or hidden names".into());
    }
    if *first == CONFIGS_DIR {
        return Err("names configs/, whose archives are public by their MAC names only".into());
    }
    if PRIVATE_TOP.iter().any(|p| p.eq_ignore_ascii_case(first)) {
        return Err(format!(
            "names {first}, which is private (settings, inventory, profiles, overlays and \
             captures are never served)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::site::SiteConfig;

    #[test]
    fn public_entries_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ovl.toml");
        let check = |list: &str| {
            let c: SiteConfig = toml::from_str(&format!("[serve]\npublic = {list}\n")).unwrap();
            c.validate(&path)
        };
        assert!(check("[\"ipxe/\", \"alpine/\", \"extra.iso\", \"data/x.bin\"]").is_ok());
        for bad in [
            "[\"overlays/\"]",
            "[\"Devices.toml\"]",
            "[\"captures/x/\"]",
            "[\"configs/\"]",
            "[\"/etc/\"]",
            "[\"../x\"]",
            "[\".git/\"]",
            "[\"\"]",
        ] {
            let e = check(bad).unwrap_err();
            assert_eq!(e.exit_code(), 1, "{bad}");
            assert!(e.to_string().contains("[serve] public"), "{e}");
        }
    }
}
