#!/usr/bin/env bash
# Boot-storm benchmark: N simulated devices run the whole network boot chain at once —
# DHCP as PXE firmware, TFTP of undionly.kpxe (blksize 1468), DHCP as iPXE, the HTTP boot
# script, kernel (8 MiB), initramfs (20 MiB), DHCP as Alpine's initramfs, the apkovl config —
# against `ovl serve --dhcp full` and, in the same run with the same client and the same
# files, against the seed's stack: dnsmasq (DHCP + TFTP, configured by `ovl export dnsmasq`)
# and nginx (HTTP) serving the same site folder.
#
# The client is `examples/storm/` (release build): one process, one task per device; each
# device has its own MAC and uses its leased address as the source of its TFTP and HTTP
# traffic (the pool is routed as local in the client namespace), so the servers see one
# client per device. Two network namespaces joined by a veth pair, created here and removed
# on exit; no traffic leaves them. The kernel's ARP table is shared by all namespaces and
# holds 1,024 entries by default (gc_thresh3): the script raises gc_thresh1/2/3 for the run
# when they are too small for N devices and puts the old values back on exit.
#
# Per stack and size: time until all N devices finished, p50/p99 per device (power-on to
# config), failures by phase, server CPU seconds (utime + stime of the server's processes,
# from /proc/PID/stat) and peak RSS (VmHWM, summed over the server's processes).
# Both stacks are sized for the storm where they have a setting: ovl `[serve] max_connections
# = 8192`; dnsmasq no-ping, dhcp-lease-max, tftp-max; nginx worker_connections 8192.
#
# Usage (root): bench/storm.sh [DEVICES...]   (default: 500)
#   env: RUNS=1 (runs per size; stacks alternate), DEADLINE=600 (s per storm),
#        SPREAD_MS=0 (devices power on over this many ms), OVL_NO_BUILD=1 (use target/release),
#        SEED_HOSTS=0 (dnsmasq without the export's per-device dhcp-host lines),
#        OVL=path/to/ovl (default: target/release/ovl), STACKS="ovl seed" (which stacks, in this order),
#        KEEP=1 (keep the work folder: site, server logs, per-device details)
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "bench: run as root (network namespaces)" >&2; exit 2; }
sizes=("${@:-500}")
RUNS=${RUNS:-1}
DEADLINE=${DEADLINE:-600}
SPREAD_MS=${SPREAD_MS:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for t in dnsmasq nginx ip setsid; do
    command -v "$t" >/dev/null || { echo "bench: $t is missing" >&2; exit 3; }
done
if [ -z "${OVL_NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release --locked --quiet --bin ovl --example storm)
fi
OVL=${OVL:-$ROOT/target/release/ovl}
STORM=$ROOT/target/release/examples/storm
IPXE=/usr/lib/ipxe/undionly.kpxe
[ -r "$IPXE" ] || { echo "bench: $IPXE is missing (Debian package ipxe)" >&2; exit 3; }

W=$(mktemp -d /tmp/storm.XXXXXX)
SRV="storm-s-$$"; CLI="storm-c-$$"
PGID=; NGINX_PGID=
declare -A SAVED
cleanup() {
    for g in $PGID $NGINX_PGID; do kill -KILL -- "-$g" 2>/dev/null || true; done
    ip netns del "$SRV" 2>/dev/null || true
    ip netns del "$CLI" 2>/dev/null || true
    for k in "${!SAVED[@]}"; do sysctl -qw "$k=${SAVED[$k]}" || true; done
    if [ -n "${KEEP:-}" ]; then echo "bench: kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT INT TERM
ulimit -n "$(ulimit -Hn)"

# The lab: server 10.216.0.1/16 on s0, client 10.216.0.2/16 on c0; the DHCP pool
# 10.216.16.1–10.216.31.254 is local in the client namespace (one address per device).
ip netns add "$SRV"; ip netns add "$CLI"
ip -n "$SRV" link add s0 type veth peer name c0 netns "$CLI"
ip -n "$SRV" addr add 10.216.0.1/16 dev s0
ip -n "$CLI" addr add 10.216.0.2/16 dev c0
for ns in "$SRV" "$CLI"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set s0 up; ip -n "$CLI" link set c0 up
ip -n "$CLI" route add local 10.216.16.0/20 dev lo

max=0; for n in "${sizes[@]}"; do [ "$n" -gt "$max" ] && max=$n; done
need=$((2 * max + 1024))
for k in 1 2 3; do
    key=net.ipv4.neigh.default.gc_thresh$k
    cur=$(sysctl -n "$key")
    want=$((need * k / 3))
    if [ "$cur" -lt "$want" ]; then SAVED[$key]=$cur; sysctl -qw "$key=$want"; fi
done

# The site: the example's profile S for every device, the boot files, built archives.
SITE=$W/site
"$OVL" init "$SITE" >/dev/null
cat > "$SITE/ovl.toml" <<'TOML'
[boot]
server = "10.216.0.1"
[serve]
http = "0.0.0.0:80"
tftp = "0.0.0.0:69"
interface = "s0"
max_connections = 8192
[serve.dhcp]
mode = "full"
range = ["10.216.16.1", "10.216.31.254"]
netmask = "255.255.0.0"
lease_time = 3600
TOML
head -c $((8 << 20)) /dev/urandom > "$SITE/vmlinuz-lts"
head -c $((20 << 20)) /dev/urandom > "$SITE/initramfs-lts"
head -c $((2 << 20)) /dev/urandom > "$SITE/modloop-lts"
cp "$IPXE" "$SITE/undionly.kpxe"

inventory() { # inventory N: devices.toml with N devices (MACs 02:5e:00:00:00:01…), built
    local n=$1 i
    for ((i = 1; i <= n; i++)); do
        printf '[[device]]\nmac = "02:5e:00:%02x:%02x:%02x"\nprofile = "S"\n\n' \
            $((i >> 16)) $(((i >> 8) & 255)) $((i & 255))
    done > "$SITE/devices.toml"
    rm -rf "$SITE/configs"; mkdir "$SITE/configs"
    "$OVL" --site "$SITE" build --all 2>/dev/null | tail -1 >&2
    chmod 755 "$W"; chmod -R a+rX "$SITE"
}

nginx_conf() {
    cat > "$W/nginx.conf" <<EOF
daemon off;
user root;
worker_processes auto;
worker_rlimit_nofile 16384;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 8192; }
http {
    access_log $W/nginx-access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path $W/nginx-tmp;
    proxy_temp_path $W/nginx-tmp;
    fastcgi_temp_path $W/nginx-tmp;
    uwsgi_temp_path $W/nginx-tmp;
    scgi_temp_path $W/nginx-tmp;
    server {
        listen 80 backlog=4096;
        root $SITE;
        location / { }
    }
}
EOF
    mkdir -p "$W/nginx-tmp"
}

dnsmasq_conf() {
    # SEED_HOSTS=0 leaves out the export's dhcp-host line per device (names only, no address)
    { "$OVL" --site "$SITE" export dnsmasq 2>/dev/null | { [ "${SEED_HOSTS:-1}" = 0 ] && grep -v '^dhcp-host=' || cat; }
      cat <<EOF

# The bench's additions: DHCP and TFTP only, on s0, sized for the storm.
port=0
interface=s0
bind-interfaces
user=root
no-ping
dhcp-lease-max=100000
dhcp-leasefile=$W/dnsmasq.leases
enable-tftp
tftp-root=$SITE
tftp-max=10000
EOF
    } > "$W/dnsmasq.conf"
}

start() { # start NAME CMD... in the server namespace, its own session → $PGID
    local name=$1; shift
    setsid ip netns exec "$SRV" "$@" > "$W/$name.log" 2>&1 < /dev/null &
    PGID=$!
}
wait_ports() { # the DHCP, TFTP and HTTP ports are bound
    for _ in $(seq 100); do
        if ip netns exec "$SRV" ss -Hlnu 'sport = :67' | grep -q . \
            && ip netns exec "$SRV" ss -Hlnu 'sport = :69' | grep -q . \
            && ip netns exec "$SRV" ss -Hltn 'sport = :80' | grep -q .; then return 0; fi
        sleep 0.1
    done
    echo "bench: the servers did not bind 67, 69 and 80; logs:" >&2; tail "$W"/*.log >&2; exit 3
}
usage() { # "cpu_s rss_mb" of every process of group $PGID (read before stopping it)
    local cpu=0 rss=0 p f
    for p in $(pgrep -g "$PGID"); do
        f=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        # fields after "comm) ": 12 utime, 13 stime, 14 cutime, 15 cstime
        cpu=$((cpu + $(echo "$f" | awk '{print $12 + $13 + $14 + $15}')))
        rss=$((rss + $(awk '/^VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
    done
    awk -v c="$cpu" -v t="$(getconf CLK_TCK)" -v r="$rss" 'BEGIN {printf "%.2f %.1f\n", c / t, r / 1024}'
}
stop() { # SIGTERM to group $PGID, SIGKILL after 8 s (ovl gives transfers 5 s)
    kill -TERM -- "-$PGID" 2>/dev/null || true
    for _ in $(seq 80); do pgrep -g "$PGID" >/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$PGID" 2>/dev/null || true
    wait "$PGID" 2>/dev/null || true
    PGID=
}

storm() { # storm STACK N RUN → $RESULT, one result line
    local stack=$1 n=$2 run=$3 line
    rm -rf "$SITE/.ovl-state/dhcp-leases.json" "$W/dnsmasq.leases"
    ip -n "$SRV" neigh flush all; ip -n "$CLI" neigh flush all
    if [ "$stack" = ovl ]; then
        start ovl "$OVL" --site "$SITE" serve
    else
        start dnsmasq dnsmasq -d --conf-file="$W/dnsmasq.conf"
        local dpg=$PGID
        setsid ip netns exec "$SRV" nginx -e "$W/nginx-error.log" -p "$W" -c "$W/nginx.conf" \
            > "$W/nginx.log" 2>&1 < /dev/null &
        NGINX_PGID=$!
        PGID=$dpg
    fi
    wait_ports; sleep 1
    local drops_srv drops_cli
    drops_srv=$(udp_drops "$SRV"); drops_cli=$(udp_drops "$CLI")
    line=$(timeout $((DEADLINE + 60)) ip netns exec "$CLI" "$STORM" --interface c0 \
        --site "$SITE" --devices "$n" --deadline "$DEADLINE" --spread-ms "$SPREAD_MS" \
        --details "$W/details-$stack-$n-$run.txt" 2> "$W/storm-$stack-$n-$run.err" | grep '^STORM' || true)
    echo "  UDP datagrams dropped (receive buffer full / no socket): server $(udp_delta "$SRV" "$drops_srv"), client $(udp_delta "$CLI" "$drops_cli")" >&2
    local use
    if [ "$stack" = ovl ]; then
        use=$(usage); stop
    else
        local d n2; d=$(usage); stop
        PGID=$NGINX_PGID; NGINX_PGID=; n2=$(usage); stop
        use=$(awk -v a="$d" -v b="$n2" 'BEGIN {split(a, x); split(b, y); printf "%.2f %.1f", x[1] + y[1], x[2] + y[2]}')
        echo "  (dnsmasq cpu_s rss_mb: $d; nginx: $n2)" >&2
    fi
    [ -n "$line" ] || { line="STORM devices=$n ok=0 failed=$n failures=client-did-not-report dhcp_retx=0 rom_over_4_discovers=0 tftp_retx=0 http_retries=0"; tail "$W/storm-$stack-$n-$run.err" >&2; }
    sed 's/^/  /' "$W/storm-$stack-$n-$run.err" >&2
    RESULT="$stack $n $run $use $line"
}

udp_drops() { # "RcvbufErrors NoPorts" of namespace $1 (absolute counters)
    ip netns exec "$1" nstat -saz UdpRcvbufErrors UdpNoPorts \
        | awk '$1 == "UdpRcvbufErrors" {r = $2} $1 == "UdpNoPorts" {n = $2} END {printf "%d %d", r, n}'
}
udp_delta() { # udp_delta NS "BEFORE" → "rcvbuf/noport" since BEFORE
    local now; now=$(udp_drops "$1")
    awk -v a="$2" -v b="$now" 'BEGIN {split(a, x); split(b, y); printf "%d/%d", y[1] - x[1], y[2] - x[2]}'
}
field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}'; }

printf 'boot storm, %s, %s cores, %s, load %s\n' "$(date -u +%FT%TZ)" "$(nproc)" "$(uname -r)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
nginx_conf
results=()
for n in "${sizes[@]}"; do
    inventory "$n"
    dnsmasq_conf
    for run in $(seq "$RUNS"); do
        for stack in ${STACKS:-ovl seed}; do
            echo "storm: $stack, $n devices, run $run" >&2
            storm "$stack" "$n" "$run"
            results+=("$RESULT")
        done
    done
done

printf '\n%-5s %-5s %-3s | %8s %7s %7s | %6s %-24s | %6s %6s | %7s %7s\n' stack devs run \
    all_done p50 p99 failed "failures by phase" "ROM>4" retx cpu_s rss_MB
for r in "${results[@]}"; do
    read -r stack n run cpu rss line <<< "$r"
    printf '%-5s %-5s %-3s | %7ss %6ss %6ss | %6s %-24s | %6s %6s | %7s %7s\n' "$stack" "$n" "$run" \
        "$(field "$line" all_done_s)" "$(field "$line" p50_s)" "$(field "$line" p99_s)" \
        "$(field "$line" failed)" "$(field "$line" failures)" \
        "$(field "$line" rom_over_4_discovers)" \
        "$(( $(field "$line" dhcp_retx) + $(field "$line" tftp_retx) + $(field "$line" http_retries) ))" \
        "$cpu" "$rss"
done
cat <<'EOF'
(all_done: seconds from the start until the last device finished, booted or failed; p50/p99:
 per booted device, power-on to config; ROM>4: devices whose firmware DHCP needed a fifth
 DISCOVER, where real PXE firmware gives up (PXE-E51); retx: DHCP + TFTP retransmissions and
 HTTP retries; cpu_s, rss_MB: the server processes' utime+stime and summed VmHWM)
EOF
echo
for n in "${sizes[@]}"; do
    for run in $(seq "$RUNS"); do
        o=; s=; of=; sf=
        for r in "${results[@]}"; do
            read -r stack rn rr _ _ line <<< "$r"
            [ "$rn" = "$n" ] && [ "$rr" = "$run" ] || continue
            if [ "$stack" = ovl ]; then o=$(field "$line" all_done_s); of=$(field "$line" failed)
            else s=$(field "$line" all_done_s); sf=$(field "$line" failed); fi
        done
        [ -n "$o" ] && [ -n "$s" ] || continue
        ratio=$(awk -v a="$o" -v b="$s" 'BEGIN {printf "%.2f", a / (b + 1e-9)}')
        note=; [ "$of$sf" = 00 ] || note=" (not comparable: failed devices ovl $of, seed $sf)"
        printf '%s devices, run %s: time until all finished, ovl / seed = %s / %s s = %s%s (goal <= 1.0, no failures)\n' \
            "$n" "$run" "$o" "$s" "$ratio" "$note"
    done
done
