#!/bin/bash
# Start Squid on a free loopback port of the host's network namespace. Squid has no
# socket of its own for sandboxes: each run gets one from askbox-egress-listen (started
# by the worker with `docker exec`), so one sandbox can never use up another's.
set -euo pipefail
: "${ASKBOX_SQUID_CONF:?ASKBOX_SQUID_CONF must hold the generated squid.conf}"

listening() { grep -q ":$(printf '%04X' "$1") 00000000:0000 0A" /proc/net/tcp; }

# The host's own addresses (this container shares its network namespace): names that
# resolve to them are refused like private ranges. From /proc, as iproute2 is not needed.
{
  awk '/^Local:/ {local = 1} local && /\|--/ {addr = $2} local && /\/32 host LOCAL/ {print addr}' /proc/net/fib_trie
  awk '{ s = ""; for (i = 1; i <= 32; i += 4) s = s (i > 1 ? ":" : "") substr($1, i, 4); print s }' /proc/net/if_inet6
} | sort -u > /tmp/host-addresses

port=${ASKBOX_EGRESS_PORT:-}
if [ -z "$port" ]; then
  for _ in $(seq 200); do
    candidate=$(shuf -i 20000-60999 -n 1)
    if ! listening "$candidate"; then port=$candidate; break; fi
  done
fi
mkdir -p /tmp/clients
printf '%s\n' "$ASKBOX_SQUID_CONF" | sed "s/@PORT@/$port/" > /tmp/squid.conf
squid -N -f /tmp/squid.conf &
squid_pid=$!
until listening "$port"; do
  kill -0 "$squid_pid" 2>/dev/null || { echo "squid exited before listening on $port" >&2; exit 1; }
  sleep 0.05
done
echo "$port" > /tmp/squid.port  # askbox-egress-listen connects here; written once Squid listens
echo "askbox egress proxy: squid on 127.0.0.1:$port" >&2
wait "$squid_pid"
echo "askbox egress proxy: squid exited; stopping" >&2
exit 1
