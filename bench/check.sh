#!/usr/bin/env bash
# Benchmark: `ovl check` of a 50,000-device inventory (goal: under 2 s on the project's
# 2-core machine). The site has 10 profiles in two chains, a small overlay with a template,
# and every device with a hostname template, a fixed IP and its own vars. Runs `ovl check`
# RUNS times (default 2) and prints each wall and CPU time and the peak RSS.
#
# Usage: bench/check.sh [DEVICES] [RUNS]   (defaults 50000 2)
set -euo pipefail
devices=${1:-50000}
runs=${2:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
ovl="$repo/target/release/ovl"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

site="$work/site"
python3 - "$site" "$devices" <<'PY'
import os, sys
site, devices = sys.argv[1], int(sys.argv[2])
os.makedirs(f"{site}/profiles"); os.makedirs(f"{site}/overlays/base/etc")
open(f"{site}/ovl.toml", "w").write('[boot]\nserver = "10.0.0.1"\n')
open(f"{site}/overlays/base/etc/motd", "w").write("welcome\n")
open(f"{site}/overlays/base/etc/app.conf.j2", "w").write("host={{ hostname }} room={{ vars.room }}\n")
open(f"{site}/profiles/p0.toml", "w").write(
    'overlays = ["base"]\npackages = ["openssh", "chrony"]\nhostname = "k-{{ mac_suffix }}"\n'
    '[services]\ndefault = ["sshd", "chronyd"]\n[vars]\nroom = "none"\n')
for p in range(1, 10):
    parent = "p0" if p < 5 else f"p{p - 4}"
    open(f"{site}/profiles/p{p}.toml", "w").write(
        f'extends = "{parent}"\npackages = ["pkg{p}"]\n[files."etc/p{p}"]\ncontent = "{{{{ hostname }}}}\\n"\n')
with open(f"{site}/devices.toml", "w") as f:
    for i in range(devices):
        f.write(f'[[device]]\nmac = "02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"\n'
                f'profile = "p{i % 10}"\nip = "10.{(i >> 16 & 255) + 1}.{i >> 8 & 255}.{i & 255}"\n'
                f'[device.vars]\nroom = "r{i}"\n')
PY
echo "site: $devices devices, 10 profiles, devices.toml $(du -h "$site/devices.toml" | cut -f1)"
for run in $(seq 1 "$runs"); do
    /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$ovl" --site "$site" check > "$work/out" 2> "$work/err" \
        || { cat "$work/err" >&2; exit 1; }
    read -r wall user sys rss_kb < "$work/time"
    printf "run %d: ovl check %s s wall (%s s user, %s s sys), peak RSS %.1f MB: %s\n" \
        "$run" "$wall" "$user" "$sys" "$(echo "$rss_kb/1024" | bc -l)" "$(cat "$work/out")"
done
# The machine is shared: the load says how much of the wall time was waiting for a core.
echo "cores: $(nproc), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
