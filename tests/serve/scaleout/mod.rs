//! The scale-out set-up of README "Scale-out", in network namespaces: one LAN (a bridge in
//! its own namespace) joining two `ovl serve --dhcp proxy` nodes on the same site folder, the
//! two Kea peers of `ovl export kea --ha` (hot-standby, each in its own namespace: Kea and a
//! proxyDHCP node cannot share one network stack, both need UDP port 67) and two client
//! namespaces of scripted devices ([`device`]); one `ovl watch` builds the archives. A device
//! boots with everything up (both nodes answer, the primary gives the address); then a storm
//! of devices, during which the Kea primary and one node are killed (SIGKILL): every device
//! still completes, the late ones through the standby and the surviving node. Real iPXE
//! in QEMU does the same across a reboot, and with the exported HA timers unchanged the
//! standby takes over within the minute PXE firmware keeps asking.
//!
//! Namespaces are named `so-<pid>-<n>-…`, addresses are 10.214.0.0/24 inside them only,
//! every wait is bounded, and everything is removed on drop, also when the test fails.

mod device;
mod lab;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::netns::Netns;
use crate::harness::proc::wait_for_text;
use crate::harness::qemu::{self, Firmware, require_qemu};
use device::{Booted, Device, Files};
use lab::{KEAS, NODES, STORM, ScaleOut};

/// Devices working at once: per client namespace.
const WORKERS: usize = 4;
/// Completed storm devices before the kill.
const KILL_AFTER: usize = 8;

type Outcome = (usize, Result<Booted, Vec<String>>);

/// Boots `devices[index]` for every index the shared counter hands out, in `ns`.
fn worker(
    ns: &Netns,
    devices: Arc<Vec<Device>>,
    files: Files,
    next: Arc<AtomicUsize>,
    results: Arc<Mutex<Vec<Outcome>>>,
    done: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    ns.thread(move || {
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(dev) = devices.get(i) else { return };
            let deadline = Instant::now() + Duration::from_secs(90);
            let r = device::boot(dev, &files, deadline);
            results.lock().expect("results").push((i, r));
            done.fetch_add(1, Ordering::SeqCst);
        }
    })
}

#[test]
#[ignore = "needs root: network namespaces, Kea"]
fn two_proxy_nodes_and_a_kea_ha_pair_boot_every_device_when_one_of_each_dies_mid_storm() {
    let mut lab = ScaleOut::start(&[]);
    let client = |i: usize| lab.ns(lab.client_ns[i]);

    // One device with everything up: both nodes answer, the primary gives the address.
    let booted = boot_one(client(0), &lab.devices[0], lab.files(0));
    assert_eq!(booted.attempts, 1);
    assert_eq!(
        booted.lease,
        Ipv4Addr::new(10, 214, 0, 50),
        "the reservation"
    );

    // The storm: the rest, WORKERS at a time in each client namespace.
    let all = Arc::new(lab.devices.clone());
    let next = Arc::new(AtomicUsize::new(1));
    let done = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let handles: Vec<_> = (0..2 * WORKERS)
        .map(|w| {
            worker(
                client(w % 2),
                all.clone(),
                lab.files(w + 1),
                next.clone(),
                results.clone(),
                done.clone(),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(Instant::now() < deadline, "the storm does not progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed_at = Instant::now();
    let in_flight = next.load(Ordering::SeqCst).min(STORM + 1) - 1 - done.load(Ordering::SeqCst);
    lab.keas[0].signal(libc::SIGKILL);
    lab.nodes[1].signal(libc::SIGKILL);
    eprintln!(
        "killed Kea {} and node {} after {} of {STORM} devices ({in_flight} in flight), {:?} \
         into the storm",
        KEAS[0],
        NODES[1],
        done.load(Ordering::SeqCst),
        killed_at - started
    );
    for h in handles {
        h.join().expect("worker");
    }
    let elapsed = started.elapsed();
    let results = results.lock().expect("results").clone();
    check_storm(&lab, &results, killed_at, elapsed);
    lab.wait_state(1, "partner-down", 10);
    let log = std::fs::read_to_string(lab.node_log("n0")).unwrap_or_default();
    assert!(
        !log.contains("boot_script_rewritten"),
        "the nodes agree on the boot script:\n{log}"
    );

    // Recovery: the killed peer and node start again; the pair returns to hot-standby and
    // a device sees both nodes and the primary again.
    lab.keas[0] = lab.start_kea(0);
    lab.nodes[1] = lab.start_node(1, "n1-again");
    lab.wait_state(0, "hot-standby", 60);
    lab.wait_state(1, "hot-standby", 60);
    let booted = boot_one(lab.ns(lab.client_ns[1]), &lab.devices[1], lab.files(99));
    assert_eq!(
        booted.lease,
        Ipv4Addr::new(10, 214, 0, 51),
        "the reservation"
    );
    assert!(!lab.builder.exited(), "the one ovl watch kept running");
}

/// Real iPXE (QEMU, BIOS, Debian's iPXE ROM) on the scale-out LAN: its address from Kea, its
/// script from the node whose proxyDHCP answer it took, and the kernel from the same node
/// (`${next-server}` is that node, not Kea's empty `siaddr`). That node and the Kea primary
/// are killed as soon as the script URL shows; the kernel (a stand-in iPXE cannot boot, or
/// a download the dead node cuts) fails, the script gives up (`tries = 2`) and reboots the
/// VM (`on_failure = "reboot"`), and the second boot takes its address from the standby and
/// everything from the other node.
#[test]
#[ignore = "needs root and QEMU: network namespaces, Kea, a VM on a tap port"]
fn real_ipxe_boots_from_the_node_that_answered_and_from_the_other_after_it_died() {
    require_qemu(Firmware::Bios);
    let mac = "52:54:00:5c:01:01";
    let vm_dev = Device {
        mac: [0x52, 0x54, 0x00, 0x5c, 0x01, 0x01],
        fixed: Some(Ipv4Addr::new(10, 214, 0, 90)),
    };
    let lab = ScaleOut::start(&[vm_dev]);
    let switch = &lab.lan.switch;
    switch.tap("tap0");
    switch.enslave("tap0", "br0");
    switch.up("tap0");
    let serial = lab.dir.path().join("serial.log");
    let vars = lab.dir.path().join("vars.fd");
    let _vm = qemu::spawn(&mut qemu::command(
        switch,
        "tap0",
        Firmware::Bios,
        mac,
        &serial,
        &vars,
    ));
    let script = |node: Ipv4Addr| format!("http://{node}/boot.ipxe?mac={mac}");
    let kernel = |node: Ipv4Addr| format!("http://{node}/vmlinuz-lts");
    let wait =
        |needle: &str, secs: u64| wait_for_text(&serial, needle, Duration::from_secs(secs), None);
    let text = wait(&format!("/boot.ipxe?mac={mac}"), 180);
    assert!(
        text.contains("net0: 10.214.0.90/255.255.255.0"),
        "the reservation:\n{text}"
    );
    let first = usize::from(!text.contains(&script(NODES[0])));
    assert!(text.contains(&script(NODES[first])), "{text}");
    let other = 1 - first;
    lab.nodes[first].signal(libc::SIGKILL);
    lab.keas[0].signal(libc::SIGKILL);
    let killed_len = text.len();
    eprintln!(
        "iPXE took node {}: killed it and Kea {}",
        NODES[first], KEAS[0]
    );
    let text = wait(&kernel(NODES[other]), 300);
    let after = &text[killed_len..];
    eprintln!("serial after the kill:\n{after}");
    assert!(after.contains(&script(NODES[other])), "{after}");
    assert!(after.contains("net0: 10.214.0.90/255.255.255.0"), "{after}");
    assert!(!after.contains(&script(NODES[first])), "{after}");
    let standby = std::fs::read_to_string(lab.dir.path().join("kea2.log")).unwrap_or_default();
    assert!(
        standby
            .lines()
            .any(|l| l.contains("DHCP4_LEASE_ALLOC") && l.contains(mac)),
        "the standby leased to the VM:\n{standby}"
    );
}

/// Boots one device in `ns`, which must see both nodes answer and get its address from the
/// primary.
fn boot_one(ns: &Netns, dev: &Device, mut files: Files) -> Booted {
    let dev = dev.clone();
    files.linger = Duration::from_secs(1);
    let booted = ns
        .thread(move || device::boot(&dev, &files, Instant::now() + Duration::from_secs(60)))
        .join()
        .expect("device thread")
        .unwrap_or_else(|e| panic!("the device did not boot: {e:#?}"));
    eprintln!("one device: {booted:?}");
    let answering: HashSet<Ipv4Addr> = booted.answering_nodes.iter().copied().collect();
    assert_eq!(answering, HashSet::from(NODES), "both nodes answer PXE");
    assert_eq!(booted.kea, KEAS[0], "the primary gives the addresses");
    booted
}

/// Every device of the storm booted, with its reservation and no address twice; before the
/// kill the primary gave the addresses, after it the surviving node served, and the
/// standby took over.
fn check_storm(lab: &ScaleOut, results: &[Outcome], killed_at: Instant, elapsed: Duration) {
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "devices that never booted: {failed:#?}");
    let booted: Vec<(usize, &Booted)> = results
        .iter()
        .filter_map(|(i, r)| r.as_ref().ok().map(|b| (*i, b)))
        .collect();
    assert_eq!(booted.len(), STORM, "every device of the storm");
    let after: Vec<&(usize, &Booted)> = booted.iter().filter(|(_, b)| b.done > killed_at).collect();
    let restarted = booted.iter().filter(|(_, b)| b.attempts > 1).count();
    let by_standby = booted.iter().filter(|(_, b)| b.kea == KEAS[1]).count();
    let from_b = booted
        .iter()
        .filter(|(_, b)| b.tftp_node == NODES[1] || b.http_node == NODES[1])
        .count();
    eprintln!(
        "storm of {STORM}: {elapsed:?}; {} completed after the kill, {restarted} restarted, \
         {by_standby} leased by the standby, {from_b} used node {} for TFTP or HTTP",
        after.len(),
        NODES[1]
    );
    for (i, b) in &booted {
        if b.done <= killed_at {
            assert_eq!(b.kea, KEAS[0], "device {i} before the kill: the primary");
        }
        if let Some(fixed) = lab.devices[*i].fixed {
            assert_eq!(b.lease, fixed, "device {i}: its reservation");
        }
    }
    for (i, b) in &after {
        assert_eq!(
            b.http_node, NODES[0],
            "device {i} finished after the kill: {b:?}"
        );
    }
    assert!(!after.is_empty(), "the kill came mid-storm");
    assert!(by_standby > 0, "the standby took over");
    let leases: HashSet<Ipv4Addr> = booted.iter().map(|(_, b)| b.lease).collect();
    assert_eq!(leases.len(), booted.len(), "no address given twice");
}

/// The exported HA timers as they are: the Kea primary dies while 8 devices boot at once
/// (each counting `secs` from its first DISCOVER, as firmware does); the standby takes over
/// by itself (15 s without an answer, then more than 3 clients unanswered for over 5 s) and
/// every device boots within a minute of its first DISCOVER, the time PXE firmware keeps
/// asking.
#[test]
#[ignore = "needs root: network namespaces, Kea"]
fn with_the_exported_ha_timers_the_standby_takes_over_within_a_pxe_minute() {
    let lab = ScaleOut::start_with(&[], false);
    let killed_at = Instant::now();
    lab.keas[0].signal(libc::SIGKILL);
    let all = Arc::new(lab.devices[1..=2 * WORKERS].to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..2 * WORKERS)
        .map(|w| {
            worker(
                lab.ns(lab.client_ns[w % 2]),
                all.clone(),
                lab.files(w + 1),
                next.clone(),
                results.clone(),
                done.clone(),
            )
        })
        .collect();
    for h in handles {
        h.join().expect("worker");
    }
    let results = results.lock().expect("results").clone();
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "devices that never booted: {failed:#?}");
    let waits: Vec<Duration> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|b| {
            assert_eq!(b.kea, KEAS[1], "{b:?}");
            b.done - killed_at
        })
        .collect();
    let longest = waits.iter().max().copied().unwrap_or_default();
    let first = waits.iter().min().copied().unwrap_or_default();
    eprintln!(
        "with the exported timers: all {} booted, the first {first:?} and the last {longest:?} \
         after the kill",
        waits.len()
    );
    assert!(longest < Duration::from_secs(60), "{waits:?}");
    lab.wait_state(1, "partner-down", 5);
}
