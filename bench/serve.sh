#!/usr/bin/env bash
# One loopback benchmark run of `ovl serve` (release build) against the reference servers:
#   HTTP: nginx (Debian nginx-light) — one 32 MiB file with curl (median of RUNS runs) and
#         requests/s for a 4 KiB config with wrk (2 threads, 50 connections, DURATION s);
#   TFTP: tftpd-hpa (in.tftpd -L) — one 32 MiB file with tftp-hpa (512-byte lockstep),
#         curl --tftp-blksize 1468 and atftp --option "blksize 1468" (median of RUNS runs);
#         atftp with "windowsize 8" against ovl only (tftpd-hpa 5.2 has no RFC 7440);
#   plus the idle RSS of `ovl serve` (VmRSS of /proc/PID/status).
# Every download is checked by sha256. Servers run in their own process groups (setsid)
# and are stopped by group id on exit. Needs: curl wrk nginx in.tftpd tftp atftp.
#
# Usage: bench/serve.sh   env: RUNS=5 DURATION=5 OVL=path/to/ovl (default: target/release/ovl,
#        built first unless OVL_NO_BUILD=1 and it exists). The machine's other load shows in
#        the figures: on a shared 2-core machine, run it twice and compare.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
OVL=${OVL:-$ROOT/target/release/ovl}
if [ ! -x "$OVL" ] || [ -z "${OVL_NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet)
fi
for t in curl wrk nginx in.tftpd tftp atftp setsid sha256sum; do
    command -v "$t" >/dev/null || { echo "bench: $t is missing" >&2; exit 3; }
done

W=$(mktemp -d /tmp/ovl-bench.XXXXXX)
PGIDS=()
cleanup() {
    for g in "${PGIDS[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
    sleep 0.3
    for g in "${PGIDS[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT INT TERM

# Ports: a random block of high ports, so parallel runs on a shared machine do not clash.
BASE=$((20000 + (RANDOM % 400) * 100))
OVL_HTTP=$((BASE + 1)); OVL_TFTP=$((BASE + 2)); NGINX=$((BASE + 3)); HPA=$((BASE + 4))

# The site: the example, built, plus a 32 MiB file and a 4 KiB "config".
"$OVL" init "$W/site" >/dev/null
"$OVL" --site "$W/site" build --all >/dev/null
head -c $((32 << 20)) /dev/urandom > "$W/site/big.bin"
# Only the public set is served: list the test file ([serve] is the example's last table).
echo 'public = ["big.bin"]' >> "$W/site/ovl.toml"
CFG="configs/02:00:00:00:00:01.tar.gz"
head -c 4096 /dev/urandom > "$W/site/$CFG"
BIG_SUM=$(sha256sum < "$W/site/big.bin" | cut -d' ' -f1)
# tftpd-hpa drops to nobody: the site must be world-readable.
chmod 755 "$W"; chmod -R a+rX "$W/site"

start() { # start NAME CMD... : runs CMD in its own session (pid = pgid) → $LAST_PID
    local name=$1; shift
    setsid "$@" > "$W/$name.out" 2> "$W/$name.err" < /dev/null &
    LAST_PID=$!
    PGIDS+=("$LAST_PID")
}
wait_port() { # wait_port tcp|udp PORT
    for _ in $(seq 100); do
        if [ "$1" = tcp ]; then ss -Htln "sport = :$2" | grep -q . && return 0
        else ss -Huln "sport = :$2" | grep -q . && return 0; fi
        sleep 0.1
    done
    echo "bench: nothing listens on $1 port $2" >&2; exit 3
}

start ovl "$OVL" --site "$W/site" serve --http "127.0.0.1:$OVL_HTTP" --tftp "127.0.0.1:$OVL_TFTP" --dhcp off
OVL_PID=$LAST_PID
wait_port tcp "$OVL_HTTP"; wait_port udp "$OVL_TFTP"
sleep 1
IDLE_RSS_KB=$(awk '/^VmRSS/ {print $2}' "/proc/$OVL_PID/status")

cat > "$W/nginx.conf" <<EOF
daemon off;
user root;
worker_processes auto;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 1024; }
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
        listen 127.0.0.1:$NGINX;
        root $W/site;
        location / { }
    }
}
EOF
mkdir -p "$W/nginx-tmp"
start nginx nginx -e "$W/nginx-error.log" -p "$W" -c "$W/nginx.conf"
wait_port tcp "$NGINX"
start hpa in.tftpd -L -s "$W/site" -a "127.0.0.1:$HPA"
wait_port udp "$HPA"

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
check() { # check FILE: the download must be the 32 MiB file
    local s; s=$(sha256sum < "$1" | cut -d' ' -f1)
    [ "$s" = "$BIG_SUM" ] || { echo "bench: $1: wrong sha256" >&2; exit 1; }
    rm -f "$1"
}

# HTTP, one 32 MiB file: seconds per download.
http_big() { # http_big PORT
    for _ in $(seq "$RUNS"); do
        curl -s --max-time 60 -o "$W/dl" -w '%{time_total}\n' "http://127.0.0.1:$1/big.bin"
        check "$W/dl"
    done | median
}
# HTTP, requests/s for the 4 KiB config.
http_small() { # http_small PORT
    wrk -t2 -c50 -d"${DURATION}s" "http://127.0.0.1:$1/$CFG" | awk '/^Requests\/sec/ {print $2}'
}
# TFTP, one 32 MiB file with a client: seconds per download.
tftp_big() { # tftp_big PORT CLIENT [OPTIONS...]
    local port=$1 client=$2; shift 2
    for _ in $(seq "$RUNS"); do
        local t0 t1; t0=$(now)
        case $client in
            hpa) timeout 120 tftp -m binary 127.0.0.1 "$port" -c get big.bin "$W/dl" >/dev/null ;;
            curl) timeout 120 curl -s --tftp-blksize 1468 -o "$W/dl" "tftp://127.0.0.1:$port/big.bin" ;;
            atftp) timeout 120 atftp --get -r big.bin -l "$W/dl" "$@" 127.0.0.1 "$port" >/dev/null 2>&1 ;;
        esac
        t1=$(now)
        check "$W/dl"
        echo "$t1 - $t0" | bc -l
    done | median
}
mibs() { echo "scale=1; 32 / $1" | bc -l; }

printf '\novl serve benchmark, loopback, %s runs (median), %s\n' "$RUNS" "$(date -u +%FT%TZ)"
printf 'machine: %s cores, %s\n\n' "$(nproc)" "$(uname -r)"
printf '%-44s %14s %14s %8s %s\n' "test" "ovl" "reference" "ratio" "goal"
row() { # row NAME OVL REF UNIT GOAL
    local r; r=$(echo "scale=2; $2 / $3" | bc -l)
    printf '%-44s %10s %-3s %10s %-3s %8s %s\n' "$1" "$2" "$4" "$3" "$4" "$r" "$5"
}

o=$(http_big "$OVL_HTTP"); n=$(http_big "$NGINX")
row "HTTP 32 MiB, curl (vs nginx)" "$(mibs "$o")" "$(mibs "$n")" "MiB/s" ">= 0.8"
o=$(http_small "$OVL_HTTP"); n=$(http_small "$NGINX")
row "HTTP 4 KiB config, wrk -t2 -c50 (vs nginx)" "${o%.*}" "${n%.*}" "r/s" ">= 1.0"

o_hpa=$(tftp_big "$OVL_TFTP" hpa); h=$(tftp_big "$HPA" hpa)
row "TFTP 32 MiB, tftp-hpa 512 lockstep" "$(mibs "$o_hpa")" "$(mibs "$h")" "MiB/s" ">= 1"
o=$(tftp_big "$OVL_TFTP" curl); h=$(tftp_big "$HPA" curl)
row "TFTP 32 MiB, curl blksize 1468" "$(mibs "$o")" "$(mibs "$h")" "MiB/s" ">= 1"
o=$(tftp_big "$OVL_TFTP" atftp --option "blksize 1468"); h=$(tftp_big "$HPA" atftp --option "blksize 1468")
row "TFTP 32 MiB, atftp blksize 1468" "$(mibs "$o")" "$(mibs "$h")" "MiB/s" ">= 1"
w=$(tftp_big "$OVL_TFTP" atftp --option "blksize 1468" --option "windowsize 8")
row "TFTP 32 MiB, ovl: atftp window 8 vs lockstep" "$(mibs "$w")" "$(mibs "$o_hpa")" "MiB/s" ">= 3"

printf '%-44s %10s KiB   (goal < 20480 KiB)\n' "idle ovl serve RSS (VmRSS)" "$IDLE_RSS_KB"
printf '%-44s %10s KiB\n' "ovl serve RSS after the runs" "$(awk '/^VmRSS/ {print $2}' "/proc/$OVL_PID/status")"
