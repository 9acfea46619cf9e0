#!/usr/bin/env bash
# Install what `cargo xtask bench --peers ...` needs from Debian (bookworm) packages, then build
# the Go peer offline. Run once per machine, as root (or with sudo):
#
#   benches/peers/setup.sh            # apt-get install + build
#   benches/peers/setup.sh --build    # only (re)build the Go peer
#
# Installs: wrk (HTTP/1.1 and HTTPS load), nghttp2-client (h2load: HTTP/2 load), golang-go and
# golang-github-valyala-fasthttp-dev (the Go peer's compiler and sources), nginx-light and
# libnginx-mod-http-echo (the nginx peer; echo for the sleeping handler), procps, util-linux
# (taskset, prlimit). Node (the node-cluster peer) is not installed here: any node >= 18 works.
#
# The Go peer is built in GOPATH mode from Debian's /usr/share/gocode: no module proxy, no
# network. Output: $BENCH_OUT/bin/fasthttp-peer, BENCH_OUT defaulting to target/bench/peers of
# this workspace (where `cargo xtask bench` looks for it).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench/peers}

if [ "${1:-}" != "--build" ]; then
  SUDO=
  [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q wrk nghttp2-client golang-go golang-github-valyala-fasthttp-dev \
    nginx-light libnginx-mod-http-echo procps util-linux
  command -v node >/dev/null || echo "note: node not found; the node-cluster peer needs it" >&2
fi

mkdir -p "$BENCH_OUT/bin"
cd "$HERE/fasthttp"
export GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS= GOTOOLCHAIN=local
export GOCACHE=${GOCACHE:-$BENCH_OUT/gocache}
go build -trimpath -o "$BENCH_OUT/bin/fasthttp-peer" .
echo "built $BENCH_OUT/bin/fasthttp-peer ($(go version))"
