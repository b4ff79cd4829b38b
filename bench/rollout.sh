#!/usr/bin/env bash
# Benchmark: the roll-out commands on a fleet of DEVICES devices in 10 profiles (FILES overlay
# files of about 6 KB each per profile, plus a shared base): `ovl build --all`, then
# `ovl diff --all` and `ovl build --all --dry-run` with nothing to change and after one
# profile's file changed, `ovl list --all`, and `ovl device add` + `ovl device rm` on the full
# inventory. Prints each wall time (best of RUNS).
#
# Usage: bench/rollout.sh [DEVICES] [FILES] [RUNS]   (defaults 1000 100 3)
set -euo pipefail
devices=${1:-1000}
files=${2:-100}
runs=${3:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
ovl="$repo/target/release/ovl"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
site="$work/site"

python3 - "$site" "$devices" "$files" <<'PY'
import os, random, sys
site, devices, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(7)
words = ["server", "option", "enable", "interface", "eth0", "timeout", "kiosk", "listen", "port"]
def tree(name, n):
    for i in range(n):
        d = f"{site}/overlays/{name}/etc/app{i % 13}"
        os.makedirs(d, exist_ok=True)
        text = "".join(" ".join(rnd.choice(words) for _ in range(8)) + "\n" for _ in range(120))
        open(f"{d}/f{i}.conf", "w").write(text)
os.makedirs(f"{site}/profiles"); os.makedirs(f"{site}/configs")
tree("base", files)
open(f"{site}/ovl.toml", "w").write('[boot]\nserver = "10.0.0.1"\n')
for p in range(10):
    tree(f"p{p}", files)
    open(f"{site}/profiles/p{p}.toml", "w").write(
        f'overlays = ["base", "p{p}"]\npackages = ["alpine-base", "openssh"]\nhostname = "p{p}-{{{{ mac_suffix }}}}"\n'
        f'[files."etc/motd"]\ncontent = "{{{{ hostname }}}} of profile {{{{ profile }}}}\\n"\n')
with open(f"{site}/devices.toml", "w") as f:
    f.write("# the fleet\n")
    for i in range(devices):
        f.write(f'\n[[device]]\nmac = "02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"\nprofile = "p{i % 10}"\n')
PY

# best WALL of $runs runs of the command, in seconds
best() {
  local b=""
  for _ in $(seq "$runs"); do
    local t0 t1 s
    t0=$(date +%s.%N); "$@" >/dev/null 2>"$work/err" || [ $? = 4 ] || { cat "$work/err" >&2; exit 1; }; t1=$(date +%s.%N)
    s=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$b" ] || [ "$(echo "$s < $b" | bc -l)" = 1 ]; then b=$s; fi
  done
  printf "%.3f" "$b"
}

o() { "$ovl" --site "$site" "$@"; }
row() { printf "%-52s %8s\n" "$1" "$2"; }
row "ovl build --all (first: $devices archives)" "$(runs=1 best o build --all)"
row "ovl build --all (nothing changed)" "$(best o build --all)"
row "ovl diff --all (nothing changed)" "$(best o diff --all)"
row "ovl build --all --dry-run (nothing changed)" "$(best o build --all --dry-run)"
row "ovl list --all" "$(best o list --all)"
echo "changed" >> "$site/overlays/p3/etc/app0/f0.conf"
row "ovl diff --all (one file of profile p3 changed)" "$(best o diff --all)"
row "ovl diff --profile p3 --exit-code" "$(best o diff --profile p3 --exit-code)"
row "ovl build --all --dry-run (p3 changed)" "$(best o build --all --dry-run)"
add() { o device add 02:ff:00:ff:ff:01 --profile p1 --var k=v && o device rm 02:ff:00:ff:ff:01; }
row "ovl device add + ovl device rm ($devices devices)" "$(best add)"
row "ovl build --all (p3 changed: $((devices / 10)) updated)" "$(runs=1 best o build --all)"
echo "cores: $(nproc)"
