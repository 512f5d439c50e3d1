#!/usr/bin/env bash
# Topology "tls_pass_topology" for the shared harness (../shared/bench/run.sh), following
# ../shared/bench/topologies/_template.sh:
#   ../shared/bench/run.sh -o /tmp/bench-out haproxy2 "$PWD/bench/tls_pass_topology.sh"
# The real roles, each its own process (PID file in $(topo_state tls_pass_topology)):
#   public-eps   EPS of operator public-proxy-1    127.0.0.1:<spare+1>
#   private-eps  EPS of operator private-proxy-1   127.0.0.1:<spare+2>
#   private      private proxy: announces $BENCH_SNI → 127.0.0.1:$BENCH_BACKEND_PORT
#   public       public proxy: $BENCH_LISTEN_HOST:$BENCH_LISTEN_PORT, private port <spare>
# <spare> is the first port of $BENCH_SPARE_PORTS (4434). Settings come from
# bench/make_settings.ts, the PKI from `tls-pass certs --out`, all under the state folder.
# The roles run as `$BENCH_DENO run -A cli.ts` on this checkout, or as $TLS_PASS_BIN.
# TLS_PASS_LOG_LEVEL (default warning) is passed as --log-level.
#   tls_pass_topology.sh start|stop
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" # the product checkout holding this file
# The harness exports BENCH_DIR; by hand, the shared harness is expected beside the checkout.
source "${BENCH_DIR:-$repo/../shared/bench}/lib.sh"
name=tls_pass_topology
state="$(topo_state "$name")"
if [[ -n "${TLS_PASS_BIN:-}" ]]; then tls_pass=("$TLS_PASS_BIN") # a compiled binary
else tls_pass=("$BENCH_DENO" run --v8-flags=--max-semi-space-size=2,--expose-gc -A "$repo/cli.ts") # as deno task compile ships it (tools/v8_flags.ts)
fi
first=${BENCH_SPARE_PORTS%-*}
private_port=$first
public_eps_port=$((first + 1))
private_eps_port=$((first + 2))
level=${TLS_PASS_LOG_LEVEL:-warning}

start() {
  need_deno # make_settings.ts runs on Deno even when TLS_PASS_BIN is set
  mkdir -p "$state"
  # 1. PKI and settings under $state.
  if [[ ! -s "$state/pki/root.crt" ]]; then
    "${tls_pass[@]}" certs --out "$state/pki" >"$state/certs.log" 2>&1 ||
      { cat "$state/certs.log" >&2; die "$name: tls-pass certs failed"; }
  fi
  "$BENCH_DENO" run -A "$repo/bench/make_settings.ts" --out "$state/settings" --pki "$state/pki" \
    --host "$BENCH_LISTEN_HOST" --public-port "$BENCH_LISTEN_PORT" --private-port "$private_port" \
    --public-eps-port "$public_eps_port" --private-eps-port "$private_eps_port" \
    --internal "127.0.0.1:$BENCH_BACKEND_PORT" --domain "$BENCH_SNI" --store-dir "$state/store" \
    >"$state/settings.log" 2>&1 || { cat "$state/settings.log" >&2; die "$name: make_settings failed"; }
  local roles="$state/settings/roles"
  # 2. Every role, one PID file each (EPS servers first; the proxies retry until they are up).
  spawn "$state/public-eps.pid" "${tls_pass[@]}" run eps --settings "$roles/public-proxy-eps-1" --log-level "$level"
  spawn "$state/private-eps.pid" "${tls_pass[@]}" run eps --settings "$roles/private-proxy-eps-1" --log-level "$level"
  spawn "$state/private.pid" "${tls_pass[@]}" run private --settings "$roles/private-proxy-1" --log-level "$level"
  spawn "$state/public.pid" "${tls_pass[@]}" run public --settings "$roles/public-proxy-1" --log-level "$level"
  # 3. Ready = each role printed its ready line, then a real request goes through (the
  #    announcement has reached the public proxy).
  local f end=$((SECONDS + 60))
  for f in public-eps private-eps private public; do
    until grep -q '"event":"ready"' "$state/$f.log" 2>/dev/null; do
      if ! kill -0 "$(<"$state/$f.pid")" 2>/dev/null || ((SECONDS >= end)); then
        tail -n 20 "$state/$f.log" >&2 || true
        stop
        die "$name: $f did not get ready"
      fi
      sleep 0.1
    done
  done
  wait_route $((end - SECONDS > 5 ? end - SECONDS : 5)) ||
    { tail -n 20 "$state"/*.log >&2 || true; stop; die "$name: no route through :$BENCH_LISTEN_PORT after 60 s"; }
}

stop() { stop_all_pidfiles "$state"; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
