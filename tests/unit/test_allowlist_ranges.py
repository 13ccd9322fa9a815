"""The destinations an allowlisted name may never resolve to, and the rules that enforce it."""

import ipaddress

import pytest

from sandbox.allowlist import HOST_ADDRESSES_FILE, PRIVATE_RANGES, parse_allowlist, squid_config

NETWORKS = [ipaddress.ip_network(r) for r in PRIVATE_RANGES]


# Global on paper, refused on purpose: translation prefixes embed an IPv4 address (any
# private one included), and Azure's metadata/DNS address.
GLOBAL_BUT_REFUSED = {"192.88.99.0/24", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "168.63.129.16/32"}


@pytest.mark.parametrize("network", NETWORKS, ids=str)
def test_every_refused_range_is_special_purpose(network):
    sample = network.network_address + (1 if network.num_addresses > 1 else 0)
    special = not sample.is_global or sample.is_multicast or getattr(sample, "is_site_local", False)
    assert special or str(network) in GLOBAL_BUT_REFUSED


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.17.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "192.0.0.8",
        "192.0.2.2",
        "168.63.129.16",
        "224.0.0.251",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "fd00::2",
        "fe80::1",
        "ff02::1",
        "fd00:ec2::254",
    ],
)
def test_addresses_that_must_be_refused_are_covered(address):
    ip = ipaddress.ip_address(address)
    assert any(ip in n for n in NETWORKS if n.version == ip.version)


@pytest.mark.parametrize("address", ["8.8.8.8", "142.250.74.100", "2606:4700::1111"])
def test_public_addresses_stay_reachable(address):
    ip = ipaddress.ip_address(address)
    assert not any(ip in n for n in NETWORKS if n.version == ip.version)


def test_exact_names_get_the_private_check_too_and_nothing_reverse_resolves():
    conf = squid_config(parse_allowlist("api.example.com,*.cursor.sh,127.0.0.1:8080"))
    lines = conf.splitlines()
    exact = next(line for line in lines if "api\\.example" in line).split()[1]
    assert f"http_access allow {exact} {exact.replace('host', 'port')} !private_dst" in lines
    # the host's own addresses (written by the image at start) are part of the same ACL
    assert f'acl private_dst dst "{HOST_ADDRESSES_FILE}"' in lines
    regex_acls = [line for line in lines if " dstdom_regex " in line]
    assert regex_acls and all(" dstdom_regex -n " in line for line in regex_acls)


def test_only_a_runs_own_socket_is_served_and_decisions_name_the_run():
    lines = squid_config(parse_allowlist("a.com"), max_connections=7).splitlines()
    rules = [line for line in lines if line.startswith("http_access")]
    assert rules[0] == "http_access deny !run_client"
    assert "client_ip_max_connections 7" in lines
    assert any(line.startswith("logformat askbox ") and line.endswith(" run=%ea") for line in lines)


def test_dns_servers_are_addresses():
    assert "dns_nameservers 127.0.0.153" in squid_config((), dns_nameservers=["127.0.0.153"])
    with pytest.raises(ValueError):
        squid_config((), dns_nameservers=["127.0.0.1; http_access allow all"])
