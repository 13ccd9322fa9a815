#!/bin/bash
# Squid external ACL helper: a connection's source address -> the run it belongs to.
# Replies "OK log=RUN" for an address askbox-egress-listen gave a run, "ERR" otherwise
# (so nothing but a run's own socket reaches Squid); %ea puts RUN in the access log.
while read -r src _; do
  if [[ $src =~ ^127\.[0-9.]+$ ]] && [ -f "/tmp/clients/$src" ]; then
    echo "OK log=$(< "/tmp/clients/$src")"
  else
    echo "askbox-egress-client: refused a connection from $src (no run has that address)" >&2
    echo "ERR log=unknown"
  fi
done
