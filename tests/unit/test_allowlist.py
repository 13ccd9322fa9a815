import pytest

from sandbox.allowlist import allowlist_key, parse_allowlist, parse_entry, squid_config


@pytest.mark.parametrize(
    "text, host, port",
    [
        ("api2.cursor.sh", "api2.cursor.sh", 443),
        ("API2.Cursor.sh:8443", "api2.cursor.sh", 8443),
        ("*.cursor.sh", "*.cursor.sh", 443),
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("[::1]:99", "::1", 99),
        (" localhost:5 ", "localhost", 5),
    ],
)
def test_parse_entry(text, host, port):
    entry = parse_entry(text)
    assert (entry.host, entry.port) == (host, port)


@pytest.mark.parametrize("bad", ["http://x.com", "x.com:0", "x.com:70000", "x..com", "*", "a b", "[::1", "x.com:http"])
def test_bad_entries_are_refused_with_the_entry_named(bad):
    with pytest.raises(ValueError, match="egress entry"):
        parse_entry(bad)


def test_allowlist_is_deduplicated_and_keyed_stably():
    a = parse_allowlist("b.com, a.com:443, a.com")
    assert [str(e) for e in a] == ["a.com:443", "b.com:443"]
    assert allowlist_key(a) == allowlist_key(parse_allowlist("b.com,a.com"))
    assert allowlist_key(a) != allowlist_key(parse_allowlist("b.com"))
    assert parse_allowlist("") == ()


def test_squid_rules_order():
    conf = squid_config(parse_allowlist("127.0.0.1:8080,*.cursor.sh,api.example.com,localhost:9"))
    rules = [line for line in conf.splitlines() if line.startswith("http_access")]
    ip_entry = next(line for line in conf.splitlines() if "127\\.0\\.0\\.1" in line).split()[1]
    wildcard = next(line for line in conf.splitlines() if "cursor" in line).split()[1]
    # IP literals and localhost named exactly come before the blanket IP-literal deny ...
    assert rules.index(f"http_access allow {ip_entry} {ip_entry.replace('host', 'port')}") < rules.index(
        "http_access deny ip_literal"
    )
    # ... wildcard names may not resolve into private ranges, and everything else is denied.
    assert f"http_access allow {wildcard} {wildcard.replace('host', 'port')} !private_dst" in rules
    assert rules[-1] == "http_access deny all"
    assert "127.0.0.0/8" in conf and "10.0.0.0/8" in conf
    assert "access_log stdio:/dev/stdout askbox" in conf
