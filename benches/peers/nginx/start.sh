#!/usr/bin/env bash
# Start the nginx peer in the foreground (exec: the caller's child pid is nginx's master).
#
# Usage: start.sh PORT [WORKERS=2] [SLEEP_MS=0] [MODE=plain]
#   MODE: plain (HTTP/1.1), ssl (HTTPS, TLS 1.3), h2 (HTTPS with HTTP/2 by ALPN), h2c
#         (cleartext HTTP/2 with prior knowledge). ssl and h2 need CERT and KEY (env, PEM paths).
#   SLEEP_MS>0 answers through the echo module's non-blocking echo_sleep (needs
#   libnginx-mod-http-echo; the body is then chunked).
# Env: NGINX_REUSEPORT=1 adds `reuseport` (one SO_REUSEPORT socket per worker); the default is
#   one shared listening socket, like fasthttp prefork. BENCH_TMP: where the per-port state
#   directory goes (default /tmp).
set -euo pipefail
PORT=${1:?usage: start.sh PORT [WORKERS] [SLEEP_MS] [MODE]}
WORKERS=${2:-2}
SLEEP_MS=${3:-0}
MODE=${4:-plain}
HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${BENCH_TMP:-/tmp}/prefork-bench-nginx-$PORT
mkdir -p "$PREFIX"

LISTEN_OPTS=
TLS=
case "$MODE" in
  plain) ;;
  h2c) LISTEN_OPTS="http2" ;;
  ssl | h2)
    : "${CERT:?MODE=$MODE needs CERT and KEY}" "${KEY:?MODE=$MODE needs CERT and KEY}"
    LISTEN_OPTS="ssl"
    [ "$MODE" = h2 ] && LISTEN_OPTS="ssl http2"
    TLS="ssl_certificate $CERT; ssl_certificate_key $KEY; ssl_protocols TLSv1.3;"
    ;;
  *) echo "start.sh: unknown mode $MODE (plain, ssl, h2, h2c)" >&2; exit 2 ;;
esac
[ "${NGINX_REUSEPORT:-0}" = 1 ] && LISTEN_OPTS="$LISTEN_OPTS reuseport"

LOAD_MODULES=
HANDLER='return 200 "Hello, World!";'
if [ "$SLEEP_MS" != 0 ]; then
  SECS=$(awk -v ms="$SLEEP_MS" 'BEGIN{printf "%.3f", ms/1000}')
  LOAD_MODULES="load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;"
  HANDLER="echo_sleep $SECS; echo -n \"Hello, World!\";"
fi

sed -e "s#@PREFIX@#$PREFIX#g" \
    -e "s#@PORT@#$PORT#" \
    -e "s#@WORKERS@#$WORKERS#" \
    -e "s#@LISTEN_OPTS@#$LISTEN_OPTS#" \
    -e "s#@TLS@#$TLS#" \
    -e "s#@LOAD_MODULES@#$LOAD_MODULES#" \
    -e "s#@HANDLER@#$HANDLER#" \
    "$HERE/nginx.conf" > "$PREFIX/nginx.conf"
exec nginx -p "$PREFIX/" -c "$PREFIX/nginx.conf"
