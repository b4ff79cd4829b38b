//! QEMU VMs on a namespace's tap port (TCG, 256 MB, no display, serial console to a file):
//! SeaBIOS with an e1000 and Debian's iPXE option ROM, or OVMF (UEFI) with virtio-net and
//! no option ROM, so the firmware's own PXE client boots.

use std::path::Path;
use std::process::{Command, Stdio};

use super::netns::Netns;
use super::proc::{KillOnDrop, require, require_file};

/// Debian's iPXE option ROM for QEMU's e1000 (package `ipxe-qemu`).
pub const PXE_E1000_ROM: &str = "/usr/lib/ipxe/qemu/pxe-e1000.rom";
/// OVMF's code (package `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF's variable store template (package `ovmf`).
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// How the VM boots from the network.
#[derive(Debug, Clone, Copy)]
pub enum Firmware {
    /// SeaBIOS, e1000 with Debian's iPXE option ROM.
    Bios,
    /// OVMF, virtio-net without option ROM: the firmware's own PXE client.
    Uefi,
}

/// Fails the test unless QEMU and the files `firmware` needs are installed.
pub fn require_qemu(firmware: Firmware) {
    require("qemu-system-x86_64");
    match firmware {
        Firmware::Bios => require_file(PXE_E1000_ROM),
        Firmware::Uefi => {
            require_file(OVMF_CODE);
            require_file(OVMF_VARS);
        }
    }
}

/// The `qemu-system-x86_64` command inside `ns` on tap port `tap`, NIC MAC `mac`, serial
/// console to `serial`; for UEFI, OVMF's variables are copied to `vars` first.
pub fn command(
    ns: &Netns,
    tap: &str,
    firmware: Firmware,
    mac: &str,
    serial: &Path,
    vars: &Path,
) -> Command {
    let mut cmd = ns.command("qemu-system-x86_64");
    cmd.args(["-nographic", "-monitor", "none", "-m", "256"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-netdev")
        .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"));
    match firmware {
        Firmware::Bios => {
            cmd.args(["-boot", "n", "-device"])
                .arg(format!("e1000,netdev=n0,mac={mac},romfile={PXE_E1000_ROM}"));
        }
        Firmware::Uefi => {
            std::fs::copy(OVMF_VARS, vars).expect("copy OVMF vars (ovmf)");
            cmd.arg("-drive")
                .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
                .arg("-drive")
                .arg(format!("if=pflash,format=raw,file={}", vars.display()))
                .arg("-device")
                .arg(format!("virtio-net-pci,netdev=n0,mac={mac},romfile="));
        }
    }
    cmd
}

/// Starts `cmd` (from [`command`]) with stdio closed; the VM is killed on drop.
pub fn spawn(cmd: &mut Command) -> KillOnDrop {
    KillOnDrop::spawn(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}
