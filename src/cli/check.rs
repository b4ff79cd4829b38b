//! `ovl check`: plan every device of the inventory (in parallel), and every profile no device
//! uses, and report every error found (each once, in inventory order).

use std::collections::BTreeSet;

use rayon::prelude::*;
use serde_json::json;

use crate::build::plan::DeviceSpec;
use crate::build::project::{Project, Selection};
use crate::cli::output;
use crate::error::{EXIT_OK, Error, Result};
use crate::mac::Mac;

/// The made-up MAC unused profiles are planned for, so that their errors show.
const SAMPLE_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);

/// Check the whole site; the exit code is the highest of the errors found.
pub(crate) fn run(p: &Project, json: bool) -> Result<i32> {
    let errors = site_errors(p)?;
    let warnings = p.warnings();
    if json {
        output::json(&json!({
            "ok": errors.is_empty(),
            "profiles": p.profiles.by_name.len(),
            "devices": p.inventory.devices.len(),
            "errors": errors.iter().map(output::error_json).collect::<Vec<_>>(),
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
    for e in &errors {
        output::error(e);
    }
    Ok(errors.iter().map(Error::exit_code).max().unwrap_or(EXIT_OK))
}

/// Every error of the site, without repeats: hostnames two inventory devices share (also
/// when templates render them), each device planned, each unused profile planned for
/// [`SAMPLE_MAC`].
fn site_errors(p: &Project) -> Result<Vec<Error>> {
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
    let mut errors: Vec<Error> = p.hostname_clashes().into_values().collect();
    let planned: Vec<Error> = specs
        .par_iter()
        .filter_map(|spec| p.plan(spec, &cache).err())
        .collect();
    errors.extend(planned);
    let mut seen = BTreeSet::new();
    errors.retain(|e| seen.insert(e.to_string()));
    Ok(errors)
}
