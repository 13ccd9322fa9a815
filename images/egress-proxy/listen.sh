#!/bin/bash
# askbox-egress-listen RUN_DIR RUN_ID MAX_CONNECTIONS
# Give one run its own socket, RUN_DIR/proxy.sock, forwarded to Squid from a loopback
# source address of its own (127.x.y.z, recorded in /tmp/clients for the external ACL
# helper, so every decision is logged with the run id). At most MAX_CONNECTIONS at once:
# one sandbox's connections never eat the processes the others need. The listener stops
# when RUN_DIR is removed (by the worker's reaper). Returns once the socket exists.
set -euo pipefail
dir=$1 run=$2 max=$3
[ -d "$dir" ] || { echo "no run directory $dir" >&2; exit 2; }
port=$(cat /tmp/squid.port)
set -o noclobber
for _ in $(seq 100); do
  ip="127.$(shuf -i 1-254 -n 1).$(shuf -i 0-255 -n 1).$(shuf -i 1-254 -n 1)"
  if echo "$run" 2>/dev/null > "/tmp/clients/$ip"; then break; fi  # noclobber: claimed atomically
  ip=
done
set +o noclobber
[ -n "$ip" ] || { echo "no free loopback source address" >&2; exit 1; }
sock=$dir/proxy.sock
(
  socat "UNIX-LISTEN:$sock,fork,max-children=$max,backlog=1024,mode=666,unlink-early" "TCP:127.0.0.1:$port,bind=$ip" &
  socat_pid=$!
  while [ -d "$dir" ] && kill -0 "$socat_pid" 2>/dev/null; do sleep 2; done
  kill "$socat_pid" 2>/dev/null || true
  rm -f "/tmp/clients/$ip"
) </dev/null >/dev/null 2>&1 &
for _ in $(seq 200); do
  [ -S "$sock" ] && { echo "$ip"; exit 0; }
  sleep 0.02
done
echo "socket $sock did not appear" >&2
exit 1
