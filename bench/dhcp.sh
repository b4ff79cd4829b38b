#!/usr/bin/env bash
# Benchmark: DORA exchanges/s and drops of `ovl serve --dhcp full` and of dnsmasq, in the same
# run, with perfdhcp (Kea's load generator, acting as a relay from 10.215.1.2) in a pair of
# network namespaces this script creates and removes. No traffic leaves the namespaces.
# For 200 and 1,000 simulated clients, a ladder of request rates, 5 s each (plus 1 s, -W, for
# the replies still in flight when sending stops), fresh leases per run.
#
# Usage (root): bench/dhcp.sh [RATES...]   (default: 250 500 1000 2000 4000)
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 2; }
rates=("${@:-250 500 1000 2000 4000}")
read -r -a rates <<< "${rates[*]}"
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
ovl="$repo/target/release/ovl"
work=$(mktemp -d)
srv="ovlb-s-$$"; cli="ovlb-c-$$"
pid=
cleanup() {
  [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null || true
  ip netns del "$srv" 2>/dev/null || true
  ip netns del "$cli" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$srv"; ip netns add "$cli"
ip -n "$srv" link add s0 type veth peer name c0 netns "$cli"
ip -n "$srv" addr add 10.215.1.1/16 dev s0; ip -n "$cli" addr add 10.215.1.2/16 dev c0
for ns in "$srv" "$cli"; do ip -n "$ns" link set lo up; done
ip -n "$srv" link set s0 up; ip -n "$cli" link set c0 up

site="$work/site"; mkdir -p "$site"
cat > "$site/ovl.toml" <<TOML
[boot]
server = "10.215.1.1"
[serve]
http = "off"
tftp = "off"
interface = "s0"
[serve.dhcp]
mode = "full"
range = ["10.215.1.10", "10.215.8.250"]
netmask = "255.255.0.0"
lease_time = 3600
TOML

start_server() { # $1 = ovl | dnsmasq
  rm -rf "$site/.ovl-state" "$work/dnsmasq.leases"
  if [ "$1" = ovl ]; then
    setsid ip netns exec "$srv" "$ovl" --site "$site" serve --dhcp full --interface s0 --http off --tftp off >"$work/server.log" 2>&1 &
  else
    setsid ip netns exec "$srv" dnsmasq -d --port=0 --interface=s0 --bind-interfaces \
      --dhcp-range=10.215.1.10,10.215.8.250,255.255.0.0,1h --no-ping --dhcp-lease-max=100000 \
      --dhcp-leasefile="$work/dnsmasq.leases" --conf-file=/dev/null --quiet-dhcp >"$work/server.log" 2>&1 &
  fi
  pid=$!
  sleep 1
}
stop_server() { kill -TERM -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=; }

# perfdhcp output → "rate drops"
measure() { # $1 clients $2 rate
  local out
  out=$(timeout 30 ip netns exec "$cli" perfdhcp -4 -l 10.215.1.2 -r "$2" -R "$1" -p 5 -W 1000000 10.215.1.1 2>&1 || true)
  local rate drops
  rate=$(printf '%s\n' "$out" | awk '/^Rate:/ {print $2; exit}')
  drops=$(printf '%s\n' "$out" | awk '/^drops:/ {s += $2} END {print s + 0}')
  echo "${rate:-0} ${drops:-0}"
}

printf "%-8s %-8s | %-22s | %-22s\n" "clients" "rate" "ovl: exch/s  drops" "dnsmasq: exch/s  drops"
declare -A res
for clients in 200 1000; do
  for rate in "${rates[@]}"; do
    for s in ovl dnsmasq; do
      start_server "$s"
      res[$clients,$rate,$s]=$(measure "$clients" "$rate")
      stop_server
    done
    read -r orate odrops <<< "${res[$clients,$rate,ovl]}"
    read -r drate ddrops <<< "${res[$clients,$rate,dnsmasq]}"
    printf "%-8s %-8s | %10.1f %8s    | %10.1f %8s\n" "$clients" "$rate" "$orate" "$odrops" "$drate" "$ddrops"
  done
done
echo
for clients in 200 1000; do
  best_o=0; best_d=0; clean=
  for rate in "${rates[@]}"; do
    read -r orate odrops <<< "${res[$clients,$rate,ovl]}"
    read -r drate ddrops <<< "${res[$clients,$rate,dnsmasq]}"
    best_o=$(echo "if ($orate > $best_o) $orate else $best_o" | bc -l)
    best_d=$(echo "if ($drate > $best_d) $drate else $best_d" | bc -l)
    [ "$ddrops" = 0 ] && clean=$rate
  done
  if [ -n "$clean" ]; then
    read -r _ odrops <<< "${res[$clients,$clean,ovl]}"
    note="dnsmasq's highest drop-free rate: $clean/s, ovl's drops there: $odrops"
  else
    note="dnsmasq dropped at every rate tried"
  fi
  printf "%s clients: best completed rate ovl %.1f/s, dnsmasq %.1f/s (ratio %.2f); %s\n" \
    "$clients" "$best_o" "$best_d" "$(echo "$best_o / ($best_d + 0.000001)" | bc -l)" "$note"
done
