//! Running a parsed command line: each command reads the site through the [`Project`]
//! pipeline and prints results on stdout (text or JSON), diagnostics on stderr.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use clap::CommandFactory;
use serde_json::json;

use crate::build::archive;
use crate::build::layer::{self, LayerSource, Node};
use crate::build::manifest::{Kind, Listed};
use crate::build::plan::DevicePlan;
use crate::build::project::{OutcomeResult, Project, Selection, millis};
use crate::cli::{BuildArgs, Cli, Command, DeviceArgs, ExportArgs, ServeArgs, WatchArgs};
use crate::error::{EXIT_INPUT, EXIT_OK, Error, Result};
use crate::site::Site;

/// Print to stdout; a closed pipe (`ovl list | head`) ends the program quietly.
pub fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(text.as_bytes()).and_then(|_| o.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(EXIT_OK);
    }
}

fn out_json(v: &serde_json::Value) {
    out(&format!(
        "{}\n",
        serde_json::to_string_pretty(v).unwrap_or_default()
    ));
}

/// Run `cli`; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    let json = cli.json;
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            if json {
                out_json(&json!({ "error": e.to_string(), "kind": e.kind() }));
            }
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn project(cli: &Cli) -> Result<Project> {
    Project::load(Site::discover(cli.site.as_deref())?)
}

fn dispatch(cli: Cli) -> Result<i32> {
    match &cli.command {
        Command::Init { dir } => init(dir, cli.json),
        Command::Check => check(&project(&cli)?, cli.json),
        Command::Build(a) => build(&project(&cli)?, a, cli.json),
        Command::List => list(&project(&cli)?, cli.json),
        Command::Show(a) => show(&project(&cli)?, a, cli.json),
        Command::Diff(a) => diff(&project(&cli)?, a, cli.json),
        Command::Watch(a) => watch(&cli, a),
        Command::Serve(a) => serve(&cli, a),
        Command::Export(a) => export(&project(&cli)?, a, cli.json),
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "ovl", &mut buf);
            out(&String::from_utf8_lossy(&buf));
            Ok(EXIT_OK)
        }
        Command::Man => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut buf)
                .map_err(|e| Error::io("stdout", e))?;
            out(&String::from_utf8_lossy(&buf));
            Ok(EXIT_OK)
        }
    }
}

/// `ovl serve`: logging, the project, the effective settings, then the servers on a tokio
/// runtime until SIGINT or SIGTERM.
fn serve(cli: &Cli, a: &ServeArgs) -> Result<i32> {
    crate::serve::logging::init(a.log_format).map_err(Error::Env)?;
    let p = project(cli)?;
    let flags = crate::serve::Overrides {
        http: a.http,
        tftp: a.tftp,
        dhcp: a.dhcp,
        interface: a.interface.clone(),
        watch: a.watch.then(|| crate::watch::WatchOptions {
            force_poll: a.poll,
            poll_interval: a.poll_interval,
            ..Default::default()
        }),
    };
    let settings = crate::serve::Settings::resolve(&p.site.config.serve, &flags)?;
    settings.check()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Env(format!("cannot start the runtime: {e}")))?;
    // With --watch, watch mode runs beside the servers and feeds them the projects it loads;
    // the servers read what it publishes (archives are renamed into place, so a download
    // never sees half a file).
    rt.block_on(async {
        let token = tokio_util::sync::CancellationToken::new();
        crate::serve::cancel_on_signals(token.clone())?;
        crate::serve::run(p, settings, token).await
    })?;
    // Connections dropped after the grace period may still hold tasks; do not wait on them.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(EXIT_OK)
}

/// `ovl export FORMAT`: the site's DHCP configuration for another DHCP server, on stdout.
fn export(p: &Project, a: &ExportArgs, json: bool) -> Result<i32> {
    let cfg = crate::serve::dhcp::site::export_config(p, a.interface.as_deref())?;
    let text = crate::serve::dhcp::export::export(a.format, &cfg);
    if json {
        out_json(&json!({ "format": a.format.name(), "config": text }));
    } else {
        out(&text);
    }
    Ok(EXIT_OK)
}

fn init(dir: &std::path::Path, json: bool) -> Result<i32> {
    let written = crate::site::example::write_example(dir)?;
    if json {
        out_json(&json!({ "site": dir, "files": written }));
    } else {
        out(&format!(
            "created site {} ({} files)\nnext: cd {} && ovl check && ovl build --all\n",
            dir.display(),
            written.len(),
            dir.display()
        ));
    }
    Ok(EXIT_OK)
}

fn check(p: &Project, json: bool) -> Result<i32> {
    let mut specs = p.select(&Selection {
        all: true,
        ..Default::default()
    })?;
    // Profiles no device uses are still rendered, for a made-up MAC, so their errors show.
    let used: std::collections::BTreeSet<&str> = specs.iter().map(|s| s.profile.as_str()).collect();
    let unused: Vec<String> = p
        .profiles
        .by_name
        .keys()
        .filter(|n| !used.contains(n.as_str()))
        .cloned()
        .collect();
    let sample: crate::mac::Mac = crate::mac::Mac([0x02, 0, 0, 0, 0, 0x01]);
    for name in &unused {
        specs.push(crate::build::plan::DeviceSpec {
            mac: sample,
            profile: name.clone(),
            device: None,
        });
    }
    let cache = p.read_layers(&specs);
    let mut errors = Vec::new();
    let mut hostnames: BTreeMap<String, crate::mac::Mac> = BTreeMap::new();
    for spec in &specs {
        match p.plan(spec, &cache) {
            Ok(plan) => {
                if spec.device.is_some()
                    && let Some(other) =
                        hostnames.insert(plan.hostname.to_ascii_lowercase(), plan.mac)
                {
                    errors.push(Error::Device {
                        mac: plan.mac.to_string(),
                        message: format!("hostname {} is also {}'s", plan.hostname, other),
                    });
                }
            }
            Err(e) => errors.push(e),
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    errors.retain(|e| seen.insert(e.to_string()));
    if json {
        out_json(&json!({
            "ok": errors.is_empty(),
            "profiles": p.profiles.by_name.len(),
            "devices": p.inventory.devices.len(),
            "errors": errors.iter().map(|e| json!({"error": e.to_string(), "kind": e.kind()})).collect::<Vec<_>>(),
        }));
    } else if errors.is_empty() {
        out(&format!(
            "ok: {} profiles, {} devices, every template renders\n",
            p.profiles.by_name.len(),
            p.inventory.devices.len()
        ));
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    Ok(errors.iter().map(Error::exit_code).max().unwrap_or(EXIT_OK))
}

fn build(p: &Project, a: &BuildArgs, json: bool) -> Result<i32> {
    let start = Instant::now();
    if let Some(j) = a.jobs {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(j.max(1))
            .build_global();
    }
    let sel = Selection {
        all: a.all,
        macs: a.mac.clone(),
        profile: a.profile.clone(),
    };
    let specs = p.select(&sel)?;
    let bar = if a.all && !json && std::io::stderr().is_terminal() && specs.len() > 1 {
        let b = indicatif::ProgressBar::new(specs.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} archives {elapsed_precise}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let outcomes = p.build(&specs, &|| {
        if let Some(b) = &bar {
            b.inc(1);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let scripts = p.write_boot_scripts()?;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut code = EXIT_OK;
    let mut text = String::new();
    for o in &outcomes {
        match &o.result {
            OutcomeResult::Built {
                state,
                hostname,
                bytes,
                ..
            } => {
                let s = match state {
                    crate::build::publish::Published::Created => "created",
                    crate::build::publish::Published::Updated => "updated",
                    crate::build::publish::Published::Unchanged => "unchanged",
                };
                *counts.entry(s).or_default() += 1;
                if !matches!(state, crate::build::publish::Published::Unchanged)
                    || outcomes.len() <= 20
                {
                    text.push_str(&format!(
                        "{s:9} {} {:10} {hostname} ({bytes} bytes)\n",
                        o.mac, o.profile
                    ));
                }
            }
            OutcomeResult::Failed { error, code: c, .. } => {
                *counts.entry("failed").or_default() += 1;
                code = code.max(*c);
                eprintln!("error: {error}");
            }
        }
    }
    let ms = millis(start);
    if json {
        out_json(&json!({
            "devices": outcomes,
            "scripts": scripts.iter().map(|(p, s)| json!({"path": p, "state": s})).collect::<Vec<_>>(),
            "counts": counts,
            "duration_ms": ms,
        }));
    } else {
        let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        text.push_str(&format!(
            "{} archives: {} in {:.2}s\n",
            outcomes.len(),
            if summary.is_empty() {
                "none".to_string()
            } else {
                summary.join(", ")
            },
            ms as f64 / 1000.0
        ));
        out(&text);
    }
    Ok(code)
}

/// The state of a device's published archive compared with what a build would write now.
fn archive_state(p: &Project, plan: &DevicePlan) -> Result<&'static str> {
    let path = p.archive_path(&plan.mac);
    let Some(published) = archive::read_tar(&path).unwrap_or(Some(Vec::new())) else {
        return Ok("missing");
    };
    let now = archive::tar_bytes(&plan.manifest, p.site.mtime())?;
    Ok(if published == now { "built" } else { "stale" })
}

fn list(p: &Project, json: bool) -> Result<i32> {
    let specs = p.select(&Selection {
        all: true,
        ..Default::default()
    })?;
    let cache = p.read_layers(&specs);
    let mut rows = Vec::new();
    let mut code = EXIT_OK;
    for spec in &specs {
        let (hostname, state, error) = match p.plan(spec, &cache) {
            Ok(plan) => (plan.hostname.clone(), archive_state(p, &plan)?, None),
            Err(e) => {
                code = EXIT_INPUT;
                let state = if p.archive_path(&spec.mac).exists() {
                    "error"
                } else {
                    "missing"
                };
                (
                    spec.device
                        .as_ref()
                        .and_then(|d| d.hostname.clone())
                        .unwrap_or_default(),
                    state,
                    Some(e.to_string()),
                )
            }
        };
        let ip = spec.device.as_ref().and_then(|d| d.ip);
        rows.push(json!({"mac": spec.mac, "profile": spec.profile, "hostname": hostname, "ip": ip, "state": state, "error": error}));
    }
    if json {
        out_json(&json!({ "devices": rows }));
    } else {
        let mut t = format!(
            "{:17}  {:10}  {:20}  {:15}  {}\n",
            "MAC", "PROFILE", "HOSTNAME", "IP", "STATE"
        );
        for r in &rows {
            t.push_str(&format!(
                "{:17}  {:10}  {:20}  {:15}  {}\n",
                r["mac"].as_str().unwrap_or(""),
                r["profile"].as_str().unwrap_or(""),
                r["hostname"].as_str().unwrap_or(""),
                r["ip"].as_str().unwrap_or("-"),
                r["state"].as_str().unwrap_or("")
            ));
        }
        out(&t);
        for r in &rows {
            if let Some(e) = r["error"].as_str() {
                eprintln!("error: {e}");
            }
        }
    }
    Ok(code)
}

fn plan_for(p: &Project, a: &DeviceArgs) -> Result<DevicePlan> {
    let spec = p.spec(a.mac, a.profile.as_deref())?;
    let cache = p.read_layers(std::slice::from_ref(&spec));
    p.plan(&spec, &cache)
}

fn show(p: &Project, a: &DeviceArgs, json: bool) -> Result<i32> {
    let plan = plan_for(p, a)?;
    let files = plan.manifest.listing();
    let state = archive_state(p, &plan)?;
    if json {
        let mut v = serde_json::to_value(&plan).map_err(|e| Error::Env(e.to_string()))?;
        v["archive"] = json!({ "path": p.archive_path(&plan.mac), "state": state });
        v["files"] = serde_json::to_value(&files).map_err(|e| Error::Env(e.to_string()))?;
        out_json(&v);
        return Ok(EXIT_OK);
    }
    let mut t = format!(
        "mac:         {}\nprofile:     {} ({})\nhostname:    {}\nip:          {}\nin inventory: {}\nlayers:      {}\nkernel args: {}\nmodules:     {}\narchive:     {} ({state})\n\n",
        plan.mac,
        plan.profile,
        plan.chain.join(" → "),
        plan.hostname,
        plan.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
        if plan.known { "yes" } else { "no" },
        if plan.layers.is_empty() {
            "-".to_string()
        } else {
            plan.layers.join(", ")
        },
        if plan.kernel_args.is_empty() {
            "-".to_string()
        } else {
            plan.kernel_args.join(" ")
        },
        plan.modules.join(","),
        p.archive_path(&plan.mac).display(),
    );
    for f in &files {
        let name = match &f.target {
            Some(t) => format!("{} -> {t}", f.path),
            None if f.kind == "dir" => format!("{}/", f.path),
            None => f.path.clone(),
        };
        let owner = format!(
            "{}:{}",
            display_id(&f.user, f.uid),
            display_id(&f.group, f.gid)
        );
        t.push_str(&format!(
            "{} {:14} {:>8}  {:50}  {}\n",
            f.mode,
            owner,
            f.size.map(|s| s.to_string()).unwrap_or_default(),
            name,
            f.layer
        ));
    }
    out(&t);
    Ok(EXIT_OK)
}

fn display_id(name: &str, id: u32) -> String {
    if name.is_empty() {
        id.to_string()
    } else {
        name.to_string()
    }
}

/// A published archive read back: does it exist, its listing, its files' contents.
type Published = (
    bool,
    BTreeMap<String, Listed>,
    BTreeMap<String, std::sync::Arc<[u8]>>,
);

fn diff(p: &Project, a: &DeviceArgs, json: bool) -> Result<i32> {
    let plan = plan_for(p, a)?;
    let path = p.archive_path(&plan.mac);
    let new: BTreeMap<String, Listed> = plan
        .manifest
        .listing()
        .into_iter()
        .map(|l| (l.path.clone(), l))
        .collect();
    let (exists, old, old_content): Published = match std::fs::File::open(&path) {
        Ok(f) => {
            let tree = layer::read_archive(&LayerSource::Archive(path.clone()), &path, f)?;
            let mut m = crate::build::manifest::Manifest::default();
            let mut content = BTreeMap::new();
            for e in tree.entries {
                let kind = match e.node {
                    Node::Dir => Kind::Dir,
                    Node::File(b) => {
                        content.insert(e.path.clone(), b.clone());
                        Kind::File(b)
                    }
                    Node::Symlink(t) => Kind::Symlink(t),
                    Node::Template(t) => Kind::File(t.as_bytes().into()),
                };
                m.put(&e.path, kind, e.mode, e.stored.as_ref(), "archive")
                    .map_err(|msg| Error::at_path(&path, msg))?;
            }
            (
                true,
                m.listing()
                    .into_iter()
                    .map(|l| (l.path.clone(), l))
                    .collect(),
                content,
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (false, BTreeMap::new(), BTreeMap::new())
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let added: Vec<&String> = new.keys().filter(|k| !old.contains_key(*k)).collect();
    let removed: Vec<&String> = old.keys().filter(|k| !new.contains_key(*k)).collect();
    let mut changed = Vec::new();
    for (k, n) in &new {
        let Some(o) = old.get(k) else { continue };
        let mut what = Vec::new();
        if o.kind != n.kind {
            what.push("type");
        }
        if o.sha256 != n.sha256 {
            what.push("content");
        }
        if o.target != n.target {
            what.push("target");
        }
        if o.mode != n.mode {
            what.push("mode");
        }
        if (o.uid, o.gid) != (n.uid, n.gid) {
            what.push("owner");
        }
        if !what.is_empty() {
            changed.push((k, what));
        }
    }
    let identical = added.is_empty() && removed.is_empty() && changed.is_empty();
    if json {
        out_json(&json!({
            "mac": plan.mac, "archive": path, "exists": exists, "identical": identical,
            "added": added, "removed": removed,
            "changed": changed.iter().map(|(k, w)| json!({"path": k, "what": w})).collect::<Vec<_>>(),
        }));
        return Ok(EXIT_OK);
    }
    let mut t = String::new();
    if !exists {
        t.push_str(&format!(
            "{} does not exist yet; a build creates it with {} entries\n",
            path.display(),
            new.len()
        ));
    } else if identical {
        t.push_str(&format!("{}: up to date\n", path.display()));
    }
    if exists {
        for k in &added {
            t.push_str(&format!("+ {k}\n"));
        }
        for k in &removed {
            t.push_str(&format!("- {k}\n"));
        }
        for (k, what) in &changed {
            t.push_str(&format!("~ {k} ({})\n", what.join(", ")));
            if what.contains(&"content")
                && let (Some(ob), Some(Kind::File(nb))) = (
                    old_content.get(*k),
                    plan.manifest.entries.get(*k).map(|e| &e.kind),
                )
                && let (Ok(os), Ok(ns)) = (std::str::from_utf8(ob), std::str::from_utf8(nb))
            {
                let d = similar::TextDiff::from_lines(os, ns);
                t.push_str(
                    &d.unified_diff()
                        .context_radius(2)
                        .header(&format!("a/{k}"), &format!("b/{k}"))
                        .to_string(),
                );
            }
        }
    }
    out(&t);
    Ok(EXIT_OK)
}

fn watch(cli: &Cli, a: &WatchArgs) -> Result<i32> {
    // The site must exist; its contents may be broken and get fixed while watching.
    let root = match Site::discover(cli.site.as_deref()) {
        Ok(site) => site.root,
        Err(Error::Input { loc, .. }) if loc.path.ends_with(crate::site::SITE_FILE) => loc
            .path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default(),
        Err(e) => return Err(e),
    };
    let stop = crate::watch::stop_on_signals()?;
    let opts = crate::watch::WatchOptions {
        force_poll: a.poll,
        poll_interval: a.poll_interval,
        debounce: std::time::Duration::from_millis(a.debounce),
        prune: a.prune,
    };
    let json = cli.json;
    crate::watch::run(&root, &opts, stop, &mut |r| {
        if json {
            out(&format!(
                "{}\n",
                serde_json::to_string(&r).unwrap_or_default()
            ));
        } else if let crate::watch::Report::Error { .. } = r {
            eprintln!("{r}");
        } else {
            out(&format!("{r}\n"));
            if let crate::watch::Report::Rebuild { devices, .. } = &r {
                for d in devices {
                    if let Some(e) = &d.error {
                        eprintln!("error: {e}");
                    }
                }
            }
        }
    })?;
    Ok(EXIT_OK)
}
