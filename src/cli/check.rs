//! `ovl check`: plan every device of the inventory (in parallel), and every profile no device
//! uses, and report every error found (each once, in inventory order). Missing or unreadable
//! boot files (kernel, initramfs, modloop, DHCP boot files) are warnings: a site that has not
//! run `ovl fetch` yet can still check its profiles.

use std::collections::BTreeSet;

use rayon::prelude::*;
use serde_json::json;

use crate::build::plan::DeviceSpec;
use crate::build::project::{Project, Selection};
use crate::cli::drift::conflict_warning;
use crate::cli::output;
use crate::error::{EXIT_OK, Error, Result};
use crate::fetch::{BootFile, BootRole, boot_files};
use crate::mac::Mac;

/// An error of the site with the inventory device it was met for.
type Found = (Option<Mac>, Error);

/// The made-up MAC unused profiles are planned for, so that their errors show.
const SAMPLE_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);

/// Check the whole site; the exit code is the highest of the errors found.
pub(crate) fn run(p: &Project, json: bool) -> Result<i32> {
    let (found, conflicts) = site_errors(p)?;
    let errors = output::group_errors(found.iter().map(|(m, e)| (*m, e)));
    let boot = boot_files(&p.site);
    let mut warnings = p.warnings();
    warnings.extend(boot.iter().filter_map(|f| boot_warning(p, f)));
    warnings.extend(conflicts);
    if json {
        output::json(&json!({
            "ok": errors.is_empty(),
            "profiles": p.profiles.by_name.len(),
            "devices": p.inventory.devices.len(),
            "errors": output::errors_json(&errors),
            "boot_files": boot,
            "warnings": warnings,
        }));
    } else if errors.is_empty() {
        output::text(&format!(
            "ok: {} profiles, {} devices, every template renders\n",
            p.profiles.by_name.len(),
            p.inventory.devices.len()
        ));
    }
    for w in &warnings {
        output::warning(w);
    }
    output::errors(&errors);
    Ok(output::worst_exit(&errors).unwrap_or(EXIT_OK))
}

/// The warning about a boot file with a problem: `boot file vmlinuz-lts (PATH): missing; …`.
fn boot_warning(p: &Project, f: &BootFile) -> Option<String> {
    let problem = f.problem.as_ref()?;
    let fetched = f.role != BootRole::Dhcp || p.site.config.fetch.ipxe_files.contains(&f.name);
    let hint = if fetched {
        "run `ovl fetch`"
    } else {
        "put it there yourself ([fetch] ipxe_files does not name it)"
    };
    Some(format!(
        "boot file {} ({}): {problem}; devices cannot boot without it: {hint}",
        f.name,
        f.path.display()
    ))
}

/// Every error of the site, with the inventory device it was met for: hostnames two
/// inventory devices share (also when templates render them), each device planned, each unused
/// profile planned for [`SAMPLE_MAC`] (no device); and a warning for each device whose capture
/// conflicts with the fleet.
fn site_errors(p: &Project) -> Result<(Vec<Found>, Vec<String>)> {
    let mut specs = p.select(&Selection {
        all: true,
        ..Default::default()
    })?;
    let used: BTreeSet<&str> = specs.iter().map(|s| s.profile.as_str()).collect();
    let unused: Vec<String> = p
        .profiles
        .by_name
        .keys()
        .filter(|n| !used.contains(n.as_str()))
        .cloned()
        .collect();
    specs.extend(unused.into_iter().map(|profile| DeviceSpec {
        mac: SAMPLE_MAC,
        profile,
        device: None,
    }));
    let cache = p.read_layers(&specs);
    let mut errors: Vec<Found> = p
        .hostname_clashes()
        .into_iter()
        .map(|(m, e)| (Some(m), e))
        .collect();
    let policy = p.site.config.capture.conflicts;
    let planned: Vec<Result<Option<String>, Found>> = specs
        .par_iter()
        .map(|spec| match p.plan(spec, &cache) {
            Ok(plan) => {
                let conflicts = plan.conflicts();
                Ok(conflict_warning(
                    &plan.mac,
                    &plan.hostname,
                    &conflicts,
                    policy,
                ))
            }
            Err(e) => Err((spec.device.as_ref().map(|d| d.mac), e)),
        })
        .collect();
    let mut warnings = Vec::new();
    for r in planned {
        match r {
            Ok(w) => warnings.extend(w),
            Err(e) => errors.push(e),
        }
    }
    Ok((errors, warnings))
}
