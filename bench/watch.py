#!/usr/bin/env python3
"""Benchmark `ovl watch`: latency from a write to the rebuilt archive being published
(median and p95), with inotify and with polling, on a 1,000-device site; the reaction to
one changed overlay file of one profile (which devices, how long); and to a fleet-wide change
(one file of the overlay every device has, twice: all 1,000 archives, how long).

Usage: bench/watch.py [--devices 1000] [--rounds 20] [--poll-interval 1.0]
(OVL=/path/to/ovl: that binary instead of this repository's release build, to compare.)
"""
import argparse, json, os, queue, statistics, subprocess, sys, tempfile, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--devices", type=int, default=1000)
ap.add_argument("--rounds", type=int, default=20)
ap.add_argument("--poll-interval", type=float, default=1.0)
args = ap.parse_args()

repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ovl = os.environ.get("OVL")
if not ovl:
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", f"{repo}/Cargo.toml"], check=True)
    ovl = f"{repo}/target/release/ovl"

def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)

def make_site(root):
    write(f"{root}/ovl.toml", '[boot]\nserver = "10.0.0.1"\n')
    for i in range(30):
        write(f"{root}/overlays/base/etc/base{i}.conf", f"setting{i} = {'x' * 2000}\n")
    for p in range(10):
        write(f"{root}/profiles/p{p}.toml", f'overlays = ["base", "o{p}"]\npackages = ["openssh"]\nhostname = "p{p}-{{{{ mac_suffix }}}}"\n')
        write(f"{root}/overlays/o{p}/etc/profile{p}.conf", f"profile {p}\n")
    inv = []
    for i in range(args.devices):
        extra = '\noverlays = ["dev0"]' if i == 0 else ""
        inv.append(f'[[device]]\nmac = "02:00:00:00:{i >> 8:02x}:{i & 255:02x}"\nprofile = "p{i % 10}"{extra}\n')
    write(f"{root}/devices.toml", "".join(inv))
    write(f"{root}/overlays/dev0/etc/dev0.conf", "device 0\n")
    subprocess.run([ovl, "--site", root, "build", "--all"], check=True, stdout=subprocess.DEVNULL)

class Watch:
    def __init__(self, root, extra):
        self.p = subprocess.Popen([ovl, "--site", root, "watch", "--json", *extra], stdout=subprocess.PIPE, text=True)
        self.q = queue.Queue()
        threading.Thread(target=self.pump, daemon=True).start()
    def pump(self):
        for line in self.p.stdout:
            self.q.put((time.monotonic(), json.loads(line)))
    def next(self, event, timeout=60):
        end = time.monotonic() + timeout
        while True:
            t, v = self.q.get(timeout=max(0.01, end - time.monotonic()))
            if v["event"] == event:
                return t, v
    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=10)

def latencies(root, extra, label):
    w = Watch(root, extra)
    w.next("rebuild", 120)  # initial (all unchanged)
    lat = []
    for r in range(args.rounds):
        time.sleep(0.3)
        t0 = time.monotonic()
        write(f"{root}/overlays/dev0/etc/dev0.conf", f"device 0 round {label} {r}\n")
        t1, v = w.next("rebuild")
        assert [d["mac"] for d in v["devices"]] == ["02:00:00:00:00:00"], v
        lat.append((t1 - t0) * 1000)
    w.stop()
    lat.sort()
    p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
    return statistics.median(lat), p95

with tempfile.TemporaryDirectory() as root:
    make_site(root)
    ino = latencies(root, [], "inotify")
    poll = latencies(root, ["--poll", "--poll-interval", str(args.poll_interval)], "poll")
    w = Watch(root, [])
    w.next("rebuild", 120)
    time.sleep(0.3)
    t0 = time.monotonic()
    write(f"{root}/overlays/o3/etc/profile3.conf", "profile 3 changed\n")
    t1, v = w.next("rebuild", 120)
    # A fleet-wide change: one file of the overlay every device has, twice.
    fleet = []
    for r in range(2):
        time.sleep(0.3)
        f0 = time.monotonic()
        write(f"{root}/overlays/base/etc/base0.conf", f"setting0 = fleet-wide change {r} {'y' * 2000}\n")
        f1, fv = w.next("rebuild", 120)
        updated = sum(1 for d in fv["devices"] if d["state"] == "updated")
        fleet.append(((f1 - f0) * 1000, len(fv["devices"]), updated, fv["duration_ms"]))
    w.stop()
    macs = [d["mac"] for d in v["devices"]]
    expected = sum(1 for i in range(args.devices) if i % 10 == 3)
    print(f"site: {args.devices} devices, 10 profiles, {args.rounds} rounds per mode, {os.cpu_count()} cores")
    print(f"{'write → published archive':34} {'median (ms)':>12} {'p95 (ms)':>10}  goal")
    print(f"{'inotify':34} {ino[0]:12.1f} {ino[1]:10.1f}  median < 300 ms")
    print(f"{'polling every %.1f s' % args.poll_interval:34} {poll[0]:12.1f} {poll[1]:10.1f}  < {args.poll_interval * 1000 + 300:.0f} ms")
    print(f"one overlay file of profile p3 changed: {len(macs)} archives rebuilt (expected {expected}, all of p3: {all(d['state'] == 'updated' for d in v['devices'])}) in {(t1 - t0) * 1000:.0f} ms (ovl's own figure {v['duration_ms']} ms)")
    for i, (ms, n, updated, own) in enumerate(fleet):
        print(f"fleet-wide change {i + 1} (one file of overlay base, every device): {n} archives rebuilt, {updated} updated, published in {ms:.0f} ms from the write (ovl's own figure {own} ms; goal < 5,000 ms)")
