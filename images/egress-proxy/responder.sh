#!/bin/bash
# askbox-egress-responder PORT TOKEN SECONDS
# For sandbox.egress.self_test: answer HTTP on 127.0.0.1:PORT of the host's network
# namespace with TOKEN for SECONDS, so the self-test has an allowed local target
# wherever the worker itself runs. Returns once it listens.
set -euo pipefail
port=$1 token=$2 seconds=$3
[[ $port =~ ^[0-9]+$ && $token =~ ^[A-Za-z0-9]+$ && $seconds =~ ^[0-9]+$ ]] || { echo "bad arguments" >&2; exit 2; }
response=/tmp/self-test-$port
printf 'HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s' "${#token}" "$token" > "$response"
timeout "$seconds" socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "SYSTEM:cat $response" </dev/null >/dev/null 2>&1 &
pid=$!
for _ in $(seq 200); do
  grep -q ":$(printf '%04X' "$port") 00000000:0000 0A" /proc/net/tcp && exit 0
  kill -0 "$pid" 2>/dev/null || { echo "port $port is in use" >&2; exit 1; }
  sleep 0.02
done
exit 1
