#!/bin/sh
# Starts Redis with the password in REDIS_PASSWORD, and refuses to start without one.
#
# The password is handed to redis-server as configuration on its standard input, never as
# an argument: arguments are world-readable in ps and /proc/PID/cmdline on the host. The
# heredoc keeps redis-server as PID 1 (exec), so `docker stop` reaches it directly.
set -eu
if [ -z "${REDIS_PASSWORD:-}" ]; then
    echo "askbox redis: REDIS_PASSWORD is not set; it will not run without a password" >&2
    exit 1
fi
# URL-safe characters only: the same password goes unencoded into every service's
# ASKBOX_REDIS_URL (redis://:PASSWORD@redis:6379/0) and into Redis's config syntax.
case "$REDIS_PASSWORD" in
    *[!A-Za-z0-9._~-]*)
        echo "askbox redis: the password may hold only letters, digits and . _ ~ - (e.g. openssl rand -hex 32)" >&2
        exit 1
        ;;
esac
exec redis-server - "$@" <<CONFIG
requirepass $REDIS_PASSWORD
CONFIG
