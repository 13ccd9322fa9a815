#!/bin/bash
# Start Squid on a free loopback port of the host's network namespace, then expose it
# as /run/askbox-egress/proxy.sock. The socket appears only once Squid listens, so a
# sandbox that sees the socket can use it at once.
set -euo pipefail
sock=/run/askbox-egress/proxy.sock
: "${ASKBOX_SQUID_CONF:?ASKBOX_SQUID_CONF must hold the generated squid.conf}"

listening() { grep -q ":$(printf '%04X' "$1") 00000000:0000 0A" /proc/net/tcp; }

port=${ASKBOX_EGRESS_PORT:-}
if [ -z "$port" ]; then
  for _ in $(seq 200); do
    candidate=$(shuf -i 20000-60999 -n 1)
    if ! listening "$candidate"; then port=$candidate; break; fi
  done
fi
printf '%s\n' "$ASKBOX_SQUID_CONF" | sed "s/@PORT@/$port/" > /tmp/squid.conf
squid -N -f /tmp/squid.conf &
squid_pid=$!
until listening "$port"; do
  kill -0 "$squid_pid" 2>/dev/null || { echo "squid exited before listening on $port" >&2; exit 1; }
  sleep 0.05
done
rm -f "$sock"
socat "UNIX-LISTEN:$sock,fork,mode=666,unlink-early" "TCP:127.0.0.1:$port" &
echo "askbox egress proxy: squid on 127.0.0.1:$port, socket $sock" >&2
wait -n
echo "askbox egress proxy: a child exited; stopping" >&2
exit 1
