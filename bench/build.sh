#!/usr/bin/env bash
# Benchmark: build 1,000 devices of one profile (300 files, 2.4 MB each) with ovl, and in the
# same run pack the same file sets with GNU tar + gzip, as a site without ovl would: one device
# at a time, then with as many jobs as cores (xargs -P$(nproc)). Prints the wall times, the
# ratios, ovl's peak RSS and the number of gzip members in one of ovl's archives.
#
# Usage: bench/build.sh [DEVICES] [FILES] [BYTES]   (defaults 1000 300 2000000: file bytes; the
# overlay is 2.4 MB as `du -sb` counts it, folders included). With WATCH=1, then `ovl watch
# --json` on the same site: one file of the overlay every device has is changed, twice, and the
# time from the write to the report of the republished fleet is printed. OVL=/path/to/ovl runs
# that binary instead of this repository's release build (to compare with another version).
set -euo pipefail
devices=${1:-1000}
files=${2:-300}
bytes=${3:-2000000}
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${OVL:-}" ]; then
    ovl=$OVL
else
    cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
    ovl="$repo/target/release/ovl"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

site="$work/site"
python3 - "$site" "$devices" "$files" "$bytes" <<'PY'
import os, random, sys
site, devices, files, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(42)
words = ["server", "option", "enable", "disable", "interface", "eth0", "timeout", "kiosk", "chromium",
         "listen", "port", "user", "group", "path", "/usr/share", "/etc/conf.d", "true", "false",
         "include", "log", "level", "debug", "info", "cache", "size", "0x1f", "192.168.0.", "retry"]
os.makedirs(f"{site}/profiles"); os.makedirs(f"{site}/configs")
ov = f"{site}/overlays/fleet"
per = total // files
for i in range(files):
    d = f"{ov}/etc/app{i % 17}/sub{i % 5}"
    os.makedirs(d, exist_ok=True)
    out, n = [], 0
    while n < per:
        line = " ".join(rnd.choice(words) + (str(rnd.randrange(1000)) if rnd.random() < .3 else "") for _ in range(rnd.randrange(3, 12))) + "\n"
        out.append(line); n += len(line)
    with open(f"{d}/file{i}.conf", "w") as f:
        f.write("".join(out)[:per])
open(f"{site}/ovl.toml", "w").write('[boot]\nserver = "10.0.0.1"\n')
open(f"{site}/profiles/fleet.toml", "w").write('overlays = ["fleet"]\npackages = ["alpine-base", "openssh"]\nhostname = "f-{{ mac_suffix }}"\n')
with open(f"{site}/devices.toml", "w") as f:
    for i in range(devices):
        f.write(f'[[device]]\nmac = "02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"\nprofile = "fleet"\n')
PY
du -sb "$site/overlays/fleet" | awk -v f="$files" '{printf "input: %d files, %.2f MB per device\n", f, $1/1e6}'

now() { date +%s.%N; }

# ovl: all devices, one process, parallel over the cores.
t0=$(now)
/usr/bin/time -f "%M" -o "$work/rss" "$ovl" --site "$site" build --all >/dev/null
t1=$(now)
ovl_s=$(echo "$t1 - $t0" | bc -l)
rss_kb=$(cat "$work/rss")

# Peer: GNU tar + gzip -n, one device at a time.
mkdir -p "$work/peer"
t0=$(now)
for i in $(seq 0 $((devices - 1))); do
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$site/overlays/fleet" -c . | gzip -n > "$work/peer/$i.tar.gz"
done
t1=$(now)
tar_s=$(echo "$t1 - $t0" | bc -l)
tar_mb=$(du -sb "$work/peer" | awk '{print $1/1e6}')

# Peer: the same loop, as many jobs as cores.
rm -rf "$work/peer"
mkdir -p "$work/peer"
export site work
t0=$(now)
seq 0 $((devices - 1)) | xargs -P"$(nproc)" -I{} sh -c \
    'tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$site/overlays/fleet" -c . | gzip -n > "$work/peer/{}.tar.gz"'
t1=$(now)
par_s=$(echo "$t1 - $t0" | bc -l)
par_mb=$(du -sb "$work/peer" | awk '{print $1/1e6}')

ovl_mb=$(du -sb "$site/configs" | awk '{print $1/1e6}')
archives=("$site"/configs/*.tar.gz)
first=$(basename "${archives[0]}")
members=$(python3 - "$site/configs/$first" <<'PY'
import sys, zlib
data, n = open(sys.argv[1], "rb").read(), 0
while data:
    d = zlib.decompressobj(31)
    d.decompress(data)
    data, n = d.unused_data, n + 1
print(n)
PY
)
printf "%-36s %10s %12s %14s\n" "" "wall (s)" "output (MB)" "peak RSS (MB)"
printf "%-36s %10.2f %12.1f %14.1f\n" "ovl build --all" "$ovl_s" "$ovl_mb" "$(echo "$rss_kb/1024" | bc -l)"
printf "%-36s %10.2f %12.1f %14s\n" "tar | gzip -n, one at a time" "$tar_s" "$tar_mb" "-"
printf "%-36s %10.2f %12.1f %14s\n" "tar | gzip -n, xargs -P$(nproc)" "$par_s" "$par_mb" "-"
printf "ovl / one at a time: %.3f (goal <= 0.1)   ovl / parallel: %.3f (goal <= 0.5)\n" \
    "$(echo "$ovl_s / $tar_s" | bc -l)" "$(echo "$ovl_s / $par_s" | bc -l)"
printf "devices: %d   cores: %d   gzip members in %s: %d   load average: %s\n" \
    "$devices" "$(nproc)" "$first" "$members" "$(cut -d' ' -f1-3 /proc/loadavg)"

if [ "${WATCH:-0}" = 1 ]; then
    python3 - "$ovl" "$site" <<'PY'
import json, queue, subprocess, sys, threading, time
ovl, root = sys.argv[1], sys.argv[2]
p = subprocess.Popen([ovl, "--site", root, "watch", "--json"], stdout=subprocess.PIPE, text=True)
q = queue.Queue()
threading.Thread(target=lambda: [q.put((time.monotonic(), json.loads(l))) for l in p.stdout], daemon=True).start()
def rebuild(timeout=300):
    end = time.monotonic() + timeout
    while True:
        t, v = q.get(timeout=max(0.01, end - time.monotonic()))
        if v["event"] == "rebuild":
            return t, v
rebuild()
for r in range(2):
    time.sleep(1)
    t0 = time.monotonic()
    with open(f"{root}/overlays/fleet/etc/app0/sub0/file0.conf", "a") as f:
        f.write(f"fleet-wide change {r}\n")
    t1, v = rebuild()
    up = sum(1 for d in v["devices"] if d["state"] == "updated")
    print(f"ovl watch, fleet-wide change {r + 1}: {len(v['devices'])} archives, {up} updated, "
          f"published {(t1 - t0) * 1000:.0f} ms after the write (ovl's own figure {v['duration_ms']} ms; goal < 5,000 ms)")
p.terminate()
p.wait(timeout=10)
PY
fi
