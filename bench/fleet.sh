#!/usr/bin/env bash
# Benchmark: a fleet-wide three-way merge of lbu captures and `ovl drift --all`, against a
# plain build of the same site, on 1,000 devices of one profile.
#
# Each run makes a fresh site (FILES text files under etc/, BYTES in all, per device), builds
# it once (archives and the kept manifests, the bases of later merges), then gives every device
# a capture as lbu would write it from its archive (everything under etc/, one file changed,
# one added, one deleted, the build identity kept), and changes one overlay file of the fleet.
# Then, from empty configs/ each time:
#   plain  `ovl build --all` with the captures moved away
#   ontop  `ovl build --all` with the captures but no kept manifests (no known base: each
#          capture lies on top of the fleet, as before the merge existed)
#   merge  `ovl build --all` with the 1,000 captures (each merged three ways)
#   drift  `ovl drift --all`
# Prints wall and CPU (user + system) times, the merge/plain and merge/on-top ratios (goal:
# the merge costs under 20 % over the on-top build, which reads the same captures; on a
# machine shared with other work the CPU ratio is the steadier one), peak RSS and the disk
# used by the kept manifests.
#
# Usage: bench/fleet.sh [DEVICES] [FILES] [BYTES] [RUNS]   (defaults 1000 100 200000 2)
set -euo pipefail
devices=${1:-1000}
files=${2:-100}
bytes=${3:-200000}
runs=${4:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
ovl="$repo/target/release/ovl"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

make_site() {
    python3 - "$1" "$devices" "$files" "$bytes" <<'PY'
import os, random, sys
site, devices, files, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(42)
words = ["server", "option", "enable", "disable", "interface", "eth0", "timeout", "kiosk",
         "listen", "port", "user", "group", "path", "/usr/share", "true", "false", "retry"]
os.makedirs(f"{site}/profiles"); os.makedirs(f"{site}/configs")
ov = f"{site}/overlays/fleet"
per = total // files
for i in range(files):
    d = f"{ov}/etc/app{i % 17}"
    os.makedirs(d, exist_ok=True)
    out, n = [], 0
    while n < per:
        line = " ".join(rnd.choice(words) for _ in range(rnd.randrange(3, 9))) + "\n"
        out.append(line); n += len(line)
    with open(f"{d}/file{i}.conf", "w") as f:
        f.write("".join(out)[:per])
open(f"{site}/ovl.toml", "w").write('[boot]\nserver = "10.0.0.1"\n')
open(f"{site}/profiles/fleet.toml", "w").write(
    'overlays = ["fleet"]\npackages = ["alpine-base", "openssh"]\nhostname = "f-{{ mac_suffix }}"\n')
with open(f"{site}/devices.toml", "w") as f:
    for i in range(devices):
        f.write(f'[[device]]\nmac = "02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"\nprofile = "fleet"\n')
PY
}

# What lbu commit writes for each device: its etc/ tree as the archive gave it (the build
# identity included), one file changed, one added, one deleted.
make_captures() {
    python3 - "$1" <<'PY'
import io, os, sys, tarfile
site = sys.argv[1]
for name in sorted(os.listdir(f"{site}/configs")):
    mac = name[:-len(".tar.gz")]
    with tarfile.open(f"{site}/configs/{name}") as t:
        members = [(m, t.extractfile(m).read() if m.isfile() else None) for m in t.getmembers()]
    host = next(d for m, d in members if m.name == "etc/hostname").decode().strip()
    os.makedirs(f"{site}/captures/{mac}", exist_ok=True)
    with tarfile.open(f"{site}/captures/{mac}/{host}.apkovl.tar.gz", "w:gz") as out:
        for m, data in members:
            if not m.name.startswith("etc/") or m.name == "etc/app1/file1.conf":
                continue
            if m.name == "etc/app0/file0.conf":
                data = data + b"changed on the device\n"
                m.size = len(data)
            out.addfile(m, io.BytesIO(data) if data is not None else None)
        key = tarfile.TarInfo("etc/ssh/ssh_host_ed25519_key")
        key.mode, secret = 0o600, b"PRIVATE " + mac.encode() + b"\n"
        key.size = len(secret)
        out.addfile(key, io.BytesIO(secret))
PY
}

now() { date +%s.%N; }

# `timed NAME CMD…`: wall seconds into $work/NAME.s, peak RSS (MB) into $work/NAME.rss, CPU
# seconds (user + system) into $work/NAME.cpu.
timed() {
    local name=$1; shift
    local t0 t1
    t0=$(now)
    /usr/bin/time -f "%M %U %S" -o "$work/$name.time" "$@" >/dev/null 2>"$work/$name.err" || {
        cat "$work/$name.err" >&2; return 1; }
    t1=$(now)
    echo "$t1 - $t0" | bc -l > "$work/$name.s"
    read -r rss user sys < "$work/$name.time"
    echo "$rss / 1024" | bc -l > "$work/$name.rss"
    echo "$user + $sys" | bc -l > "$work/$name.cpu"
}

# `report LABEL NAME`: one line of figures.
report() {
    printf '  %-18s %7.2f s wall %7.2f s CPU  peak RSS %6.1f MB\n' "$1" \
        "$(cat "$work/$2.s")" "$(cat "$work/$2.cpu")" "$(cat "$work/$2.rss")"
}

for run in $(seq 1 "$runs"); do
    site="$work/site$run"
    make_site "$site"
    "$ovl" --site "$site" build --all >/dev/null
    make_captures "$site"
    echo "changed by the fleet" >> "$site/overlays/fleet/etc/app2/file2.conf"
    mv "$site/captures" "$site/captures.off"
    rm -rf "$site/configs"
    timed plain "$ovl" --site "$site" build --all
    mv "$site/captures.off" "$site/captures"
    # The captures on top, as before the merge (no kept manifest: no known base).
    mv "$site/.ovl-state/manifests" "$site/manifests.off"
    rm -rf "$site/configs"
    timed ontop "$ovl" --site "$site" build --all
    rm -rf "$site/.ovl-state/manifests"
    mv "$site/manifests.off" "$site/.ovl-state/manifests"
    rm -rf "$site/configs"
    timed merge "$ovl" --site "$site" build --all
    timed drift "$ovl" --site "$site" drift --all
    summary=$("$ovl" --site "$site" drift --all | tail -1)
    printf 'run %d: %d devices, %d files, %d bytes each\n' "$run" "$devices" "$files" "$bytes"
    report "plain build --all" plain
    report "on-top build --all" ontop
    report "merge build --all" merge
    report "drift --all" drift
    printf '  merge/plain: wall %.3f, CPU %.3f\n' \
        "$(echo "$(cat "$work/merge.s") / $(cat "$work/plain.s")" | bc -l)" \
        "$(echo "$(cat "$work/merge.cpu") / $(cat "$work/plain.cpu")" | bc -l)"
    printf '  merge/on-top: wall %.3f, CPU %.3f (goal < 1.20)\n' \
        "$(echo "$(cat "$work/merge.s") / $(cat "$work/ontop.s")" | bc -l)" \
        "$(echo "$(cat "$work/merge.cpu") / $(cat "$work/ontop.cpu")" | bc -l)"
    printf '  %s\n' "$summary"
    printf '  kept manifests: %s, captures: %s\n' \
        "$(du -sh "$site/.ovl-state/manifests" | cut -f1)" "$(du -sh "$site/captures" | cut -f1)"
    rm -rf "$site"
done
