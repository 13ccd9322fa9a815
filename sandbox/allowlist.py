"""The egress allowlist (``ASKBOX_EGRESS_ALLOW``) and the Squid rules it becomes.

Entries are ``host`` or ``host:port`` (port 443 when absent), ``*.domain`` for any
subdomain, ``[v6addr]:port`` for IPv6 literals. The rules, in Squid's order:

0. refuse any client that is not a run's own socket (the external ACL helper also names
   the run, which goes into every log line);
1. allow each entry that names an IP literal or ``localhost``, on its port: the operator
   named that address itself;
2. deny every other IP literal, so the agent cannot dial addresses directly;
3. allow each named host (exact or ``*.domain``) on its port, only when none of its
   addresses is loopback, link-local, private, reserved, multicast, a translation
   prefix or one of the host's own addresses (no DNS rebinding into the host's network);
4. deny everything else. Nothing outside the allowlist is ever resolved, and no ACL
   does reverse lookups (``-n``): an agent-chosen IP literal never becomes a PTR query.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

DEFAULT_PORT = 443
_HOST = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")
# Every destination a name may not resolve to: what Python's ``ipaddress`` calls not
# global, multicast or site-local, plus translation prefixes (NAT64, 6to4: they embed any
# IPv4 address) and 168.63.129.16, Azure's metadata/DNS address (tests/unit check this). IPv4-mapped IPv6 is absent on
# purpose: Squid compares IPv4 addresses in that form, so it would match every name.
PRIVATE_RANGES: tuple[str, ...] = (
    # IPv4: "this network", private, CGNAT, loopback, link-local, IETF protocol
    # assignments, documentation, 6to4 relay, benchmarking, multicast, reserved+broadcast
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "168.63.129.16/32",
    # IPv6: unspecified, loopback, NAT64 (well-known and local-use), discard, IETF/ORCHID/
    # documentation, 6to4, unique-local, link-local, site-local, multicast
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
)
HOST_ADDRESSES_FILE = "/tmp/host-addresses"  # written by the image's entrypoint at start
CLIENT_HELPER = "/usr/local/bin/askbox-egress-client"
# Squid's descriptors (two per tunnel); the proxy container's nofile limit is the same.
# Docker daemons often run with 20000 themselves, and a container cannot exceed that.
MAX_FILEDESCRIPTORS = 16384


class AllowEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str  # lower case; "*.x.y" for a wildcard; an IP address without brackets
    port: int

    @property
    def is_wildcard(self) -> bool:
        return self.host.startswith("*.")

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_entry(text: str) -> AllowEntry:
    raw = text.strip()
    host, port = raw, DEFAULT_PORT
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise ValueError(f"egress entry {text!r}: unclosed '['")
        host, rest = raw[1:end], raw[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"egress entry {text!r}: expected ':port' after ']'")
            port = _port(rest[1:], text)
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
        port = _port(port_text, text)
    host = host.lower()
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if not _HOST.match(host):
            raise ValueError(
                f"egress entry {text!r}: expected host, host:port, *.domain[:port] or [IPv6]:port"
            ) from None
    return AllowEntry(host=host, port=port)


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"egress entry {entry!r}: port must be a number from 1 to 65535")
    return int(text)


def parse_allowlist(entries: Iterable[str] | str) -> tuple[AllowEntry, ...]:
    if isinstance(entries, str):
        entries = entries.split(",")
    parsed = {parse_entry(e) for e in entries if e.strip()}
    return tuple(sorted(parsed, key=str))


def allowlist_key(entries: Iterable[AllowEntry]) -> str:
    """A short stable name for one allowlist: one proxy serves every run that shares it."""
    text = ",".join(sorted(str(e) for e in entries))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _host_regex(entry: AllowEntry) -> str:
    if entry.is_wildcard:
        return r"^([^.]+\.)+" + re.escape(entry.host[2:]) + "$"
    if ":" in entry.host:  # Squid may or may not keep an IPv6 literal's brackets
        return r"^\[?" + re.escape(entry.host) + r"\]?$"
    return "^" + re.escape(entry.host) + "$"


def squid_config(
    entries: Iterable[AllowEntry],
    *,
    max_connections: int = 64,
    dns_nameservers: Iterable[str] = (),
    port_placeholder: str = "@PORT@",
) -> str:
    """A complete squid.conf for this allowlist; the listening port is filled in at start.

    ``max_connections`` caps one run's open connections (each run has a source address
    of its own); ``dns_nameservers`` replaces the host's resolvers (tests watch theirs)."""
    entries = tuple(entries)
    lines = [
        "# generated by askbox: sandbox/allowlist.py",
        f"http_port 127.0.0.1:{port_placeholder}",
        "pid_filename none",
        "cache deny all",
        "cache_mem 8 MB",
        "coredump_dir /tmp",
        "shutdown_lifetime 1 seconds",
        "pinger_enable off",
        "forwarded_for delete",
        "via off",
        "httpd_suppress_version_string on",
        "logfile_rotate 0",
        f"max_filedescriptors {MAX_FILEDESCRIPTORS}",
        f"client_ip_max_connections {max_connections}",
        "logformat askbox egress %ts.%03tu %Ss/%>Hs %rm %ru run=%ea",
        "access_log stdio:/dev/stdout askbox",
        "cache_log stdio:/dev/stderr",
    ]
    servers = " ".join(str(ipaddress.ip_address(s)) for s in dns_nameservers)
    if servers:
        lines.append(f"dns_nameservers {servers}")
    lines += [
        # ttl: an address is a run's for its life, and stays unique meanwhile (listen.sh).
        f"external_acl_type askbox_run ttl=5 negative_ttl=0 children-startup=1 children-max=4 %>a {CLIENT_HELPER}",
        "acl run_client external askbox_run",
        "http_access deny !run_client",
        # -n everywhere: without it Squid reverse-resolves IP literals to match names.
        r"acl ip_literal dstdom_regex -n ^[0-9.]+$ ^\[?[0-9a-fA-F]*:[0-9a-fA-F:.]*\]?$",
        f"acl private_dst dst {' '.join(PRIVATE_RANGES)}",
        f'acl private_dst dst "{HOST_ADDRESSES_FILE}"',  # a second line adds to the same ACL
    ]
    first, named = [], []
    for i, entry in enumerate(entries):
        lines.append(f"acl e{i}_host dstdom_regex -n -i {_host_regex(entry)}")
        lines.append(f"acl e{i}_port port {entry.port}")
        rule = f"http_access allow e{i}_host e{i}_port"
        if entry.is_ip or entry.host == "localhost":
            first.append(rule)
        else:  # exact names too: whoever controls their DNS must not reach the host
            named.append(rule + " !private_dst")
    lines += first
    lines.append("http_access deny ip_literal")
    lines += named
    lines.append("http_access deny all")
    return "\n".join(lines) + "\n"
