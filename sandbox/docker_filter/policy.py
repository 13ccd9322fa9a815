"""What the docker-filter lets through: the routes askbox's worker calls, and the one
container configuration per kind (sandbox, egress proxy) that askbox creates.

Everything here is pure: a request (method, path, query, body) in, a decision out, or
``Refused`` with the reason. Looking up a container's labels needs the daemon, so routes
that name a container return which one to check (``Decision.container``/``exec_id``) and
the proxy asks the daemon and calls ``check_target``.

The rules follow from how the daemon reads a request, not only from what docker-py sends:

- paths: the daemon's router decodes ``%2F`` and redirects ``//`` and ``..``; here a path
  must already be canonical (no ``%``, no empty, ``.`` or ``..`` segment), so the daemon
  sees the path that was checked;
- JSON: Go matches struct fields case-insensitively (``"privileged"`` sets
  ``Privileged``; with Unicode folding ``"ſ"`` is ``"s"``), takes the last of duplicate
  keys and ignores unknown ones. So keys must be ASCII, unique even ignoring case, and
  every field the policy does not vouch for must be empty; the body forwarded is the one
  parsed here, re-serialised;
- query strings: one value per parameter, only the parameters a route takes, re-encoded.

Bind mounts are resolved by the daemon when a container *starts*: a source is allowed only
in the shape askbox makes it, under a directory the worker cannot write
(sandbox/owned_dirs.py), and checked again at start, no symlink on the way.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sandbox import labels as askbox_labels
from sandbox import owned_dirs
from sandbox.allowlist import parse_allowlist, squid_config
from sandbox.users import PROXY_USER, SANDBOX_USER

MIN_API_VERSION = (1, 40)  # older versions read HostConfig from other places (e.g. the start body)

SANDBOX_LABEL = askbox_labels.SANDBOX
SANDBOX_REQUIRED_LABELS = (askbox_labels.RUN_ID, askbox_labels.OWNER, askbox_labels.DEADLINE)
EGRESS_LABEL = askbox_labels.EGRESS
EGRESS_ROOT_LABEL = askbox_labels.EGRESS_ROOT

# What the worker execs in an egress proxy (sandbox/egress.py), each argument in the shape
# askbox gives it; nothing else, nowhere else.
EXEC_COMMANDS = ("askbox-egress-listen", "askbox-egress-responder", "test")
SQUID_PORT_FILE = "/tmp/squid.port"  # `test -s` it: Squid listens (images/egress-proxy/entrypoint.sh)
PROXY_ENV = "ASKBOX_SQUID_CONF"  # the one variable an egress proxy is created with

NO_NEW_PRIVILEGES = frozenset({"no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"})
LOG_DRIVERS = frozenset({"", "json-file", "local", "none"})  # none that sends logs over a network
LOG_OPTIONS = frozenset({"max-size", "max-file", "compress"})
ULIMITS = {"core": 0, "nofile": 1 << 20}  # name -> highest value allowed (core dumps: none)
FORBIDDEN_TARGETS = ("/proc", "/sys", "/dev")

_PATH = re.compile(r"^(?:/v(?P<major>\d{1,2})\.(?P<minor>\d{1,3}))?(?P<rest>(?:/[A-Za-z0-9_.:@-]+)+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # a container's name or (short) id
_EXEC_ID = re.compile(r"^[0-9a-f]{64}$")
_IMAGE = re.compile(r"^(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")
_SESSION = re.compile(r"s-[A-Za-z0-9_-]{1,64}")  # a gateway session's socket directory
_RUN_DIR = re.compile(r"run-" + owned_dirs.RUN.pattern)


class Refused(Exception):
    """A request outside the policy; ``str()`` is the reason, shown to the caller."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Policy:
    """Who may be created and touched: askbox's images, deployment and directories."""

    deployment: str
    image_prefixes: tuple[str, ...]  # repositories, e.g. "askbox/"
    egress_image: str  # the repository allowed the host's network: "askbox/egress-proxy"
    # Egress socket roots: a proxy binds <root>/<proxy> read-write, a sandbox
    # <root>/<proxy>/runs/run-<id> read-only (sandbox/owned_dirs.py).
    egress_dirs: tuple[str, ...]
    # Repositories (ASKBOX_REPOS paths, ASKBOX_DOCKER_FILTER_ALLOW_BINDS): sandboxes bind
    # anything below, read-only. Directories the worker cannot write.
    read_only_dirs: tuple[str, ...]
    # ASKBOX_REPO_SNAPSHOTS: sandboxes bind <root>/sealed/<slug>/<name> read-only, and the
    # filter seals and removes snapshots there (its staging/ is the worker's: never bound).
    snapshot_dirs: tuple[str, ...] = ()
    gateway_dirs: tuple[str, ...] = ()  # gateway socket directories: sandboxes bind s-<session> read-only
    runtimes: frozenset[str] = frozenset({"runc", "runsc"})
    read_only_files: tuple[str, ...] = ("/dev/null",)  # the sandbox's empty /etc/resolv.conf
    sandbox_user: str = SANDBOX_USER  # exactly: any other gid (the Docker socket's group) is refused
    proxy_user: str = PROXY_USER

    def __post_init__(self) -> None:
        owned = (*self.egress_dirs, *self.snapshot_dirs, *self.gateway_dirs)
        for prefix in (*owned, *self.read_only_dirs):
            if not os.path.isabs(prefix) or os.path.normpath(prefix) in {"/", "//"}:
                raise ValueError(f"docker-filter: bind prefix {prefix!r} must be an absolute directory other than /")
        for prefix in self.read_only_dirs:
            for other in owned:
                if _under(prefix, [other]) or _under(other, [prefix]):
                    raise ValueError(
                        f"docker-filter: {prefix} (a directory sandboxes may bind anything below) overlaps {other}, "
                        "whose directories askbox binds only in the shapes it makes them (and whose snapshot "
                        "staging area the worker writes): name a directory beside it"
                    )


@dataclass(frozen=True)
class Decision:
    """Forward the request as ``path?query`` with ``body``; check a target first if named."""

    path: str
    query: str = ""
    body: bytes = b""
    hijack: bool = False  # the daemon takes over the connection (attach, exec start)
    container: str | None = None  # check this container's labels, then use its full id
    exec_id: str | None = None  # check this exec's container, then forward
    exec_only_egress: bool = False  # the target must be an egress proxy (exec create)
    recheck_mounts: bool = False  # container start: its bind mounts are checked again first
    summary: str = ""

    def target(self) -> str:
        return self.path + ("?" + self.query if self.query else "")


# -- requests -------------------------------------------------------------------------

# (method, route pattern over the unversioned path, query parameters it takes, kind)
_ROUTES: list[tuple[frozenset[str], re.Pattern[str], frozenset[str], str]] = [
    (frozenset({"GET", "HEAD"}), re.compile(r"^/_ping$"), frozenset(), "plain"),
    (frozenset({"GET"}), re.compile(r"^/version$"), frozenset(), "plain"),
    (frozenset({"GET"}), re.compile(r"^/info$"), frozenset(), "plain"),
    (
        frozenset({"GET"}),
        re.compile(r"^/containers/json$"),
        frozenset({"all", "limit", "size", "filters", "trunc_cmd", "since", "before"}),
        "list",
    ),
    (frozenset({"POST"}), re.compile(r"^/containers/create$"), frozenset({"name"}), "create"),
    (frozenset({"GET"}), re.compile(r"^/containers/(?P<id>[^/]+)/json$"), frozenset({"size"}), "container"),
    (frozenset({"POST"}), re.compile(r"^/containers/(?P<id>[^/]+)/start$"), frozenset(), "start"),
    (frozenset({"POST"}), re.compile(r"^/containers/(?P<id>[^/]+)/wait$"), frozenset({"condition"}), "container"),
    (frozenset({"POST"}), re.compile(r"^/containers/(?P<id>[^/]+)/kill$"), frozenset({"signal"}), "container"),
    (
        frozenset({"GET"}),
        re.compile(r"^/containers/(?P<id>[^/]+)/logs$"),
        frozenset({"stdout", "stderr", "follow", "timestamps", "tail", "since", "until"}),
        "container",
    ),
    (
        frozenset({"POST"}),
        re.compile(r"^/containers/(?P<id>[^/]+)/attach$"),
        frozenset({"stdin", "stdout", "stderr", "stream", "logs"}),
        "attach",
    ),
    (frozenset({"DELETE"}), re.compile(r"^/containers/(?P<id>[^/]+)$"), frozenset({"v", "force", "link"}), "container"),
    (frozenset({"POST"}), re.compile(r"^/containers/(?P<id>[^/]+)/exec$"), frozenset(), "exec-create"),
    (frozenset({"POST"}), re.compile(r"^/exec/(?P<id>[^/]+)/start$"), frozenset(), "exec-start"),
    (frozenset({"GET"}), re.compile(r"^/exec/(?P<id>[^/]+)/json$"), frozenset(), "exec"),
    (frozenset({"GET"}), re.compile(r"^/images/(?P<image>.+)/json$"), frozenset(), "image"),
]


def decide(policy: Policy, method: str, target: str, body: bytes) -> Decision:
    """The decision for one request, or ``Refused``. ``target`` is the request line's."""
    path, _, query = target.partition("?")
    match = _PATH.match(path)
    if match is None or any(seg in {".", ".."} for seg in path.split("/")[1:]):
        raise Refused(f"path {path[:200]!r} is not in canonical form (no %-escapes, //, . or ..)")
    if match["major"] is not None and (int(match["major"]), int(match["minor"])) < MIN_API_VERSION:
        raise Refused(
            f"API version {match['major']}.{match['minor']} is older than "
            f"{MIN_API_VERSION[0]}.{MIN_API_VERSION[1]}, the oldest the filter allows"
        )
    rest = match["rest"]
    for methods, pattern, params, kind in _ROUTES:  # noqa: B007 - the matched route's, read after the break
        found = pattern.match(rest)
        if found and method in methods:
            break
    else:
        raise Refused(f"{method} {rest} is not a call askbox's worker makes")
    pairs = _query(query, params, rest)
    args = dict(pairs)
    if body and kind not in {"create", "exec-create", "exec-start"}:
        raise Refused(f"{method} {rest} takes no request body")
    clean = Decision(path=path, query=urlencode(pairs))
    if kind == "plain":
        return clean
    if kind == "list":
        _check_list_filters(args.get("filters", ""))
        return clean
    if kind == "image":
        check_image(policy, found["image"])
        return clean
    if kind == "create":
        return _create(policy, clean, args, body)
    if kind in {"container", "attach", "start"}:
        ident = _ident(found["id"])
        return Decision(
            path=path, query=clean.query, container=ident, hijack=kind == "attach", recheck_mounts=kind == "start"
        )
    if kind == "exec-create":
        ident = _ident(found["id"])
        payload = _exec_body(policy, parse_json(body, "exec"))
        return Decision(path=path, body=payload, container=ident, exec_only_egress=True)
    # exec start / inspect: the exec's container is checked by the proxy
    exec_id = found["id"]
    if not _EXEC_ID.match(exec_id):
        raise Refused(f"exec id {exec_id[:80]!r} is not a full exec id")
    payload = b""
    if kind == "exec-start":
        start = _fields(
            parse_json(body, "exec start") if body else _Obj(), {"Detach", "Tty", "ConsoleSize"}, "exec start"
        )
        if _get(start, "Detach") not in (None, False):
            raise Refused("detached execs are not used by askbox")
        payload = json.dumps(_unwrap(start)).encode()
    return Decision(path=path, body=payload, exec_id=exec_id, hijack=kind == "exec-start")


def _ident(value: str) -> str:
    if not _NAME.match(value):
        raise Refused(f"container reference {value[:80]!r} is not a container name or id")
    return value


def _query(query: str, params: frozenset[str], route: str) -> list[tuple[str, str]]:
    if ";" in query or re.search(r"%(?![0-9A-Fa-f]{2})", query):
        raise Refused("query string is malformed")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise Refused(f"query string is malformed ({exc})") from None
    seen: set[str] = set()
    for key, _value in pairs:
        if key not in params:
            raise Refused(f"query parameter {key[:40]!r} is not one askbox uses on {route}")
        if key in seen:
            raise Refused(f"query parameter {key!r} given twice")
        seen.add(key)
    return pairs


def _check_list_filters(raw: str) -> None:
    """A listing must be narrowed to askbox's own containers by a label filter."""
    try:
        filters = json.loads(raw) if raw else {}
    except ValueError:
        raise Refused("filters is not JSON") from None
    labels = filters.get("label") if isinstance(filters, dict) else None
    if isinstance(labels, dict):  # the older form: {"label": {"k=v": true}}
        labels = [k for k, v in labels.items() if v is True]
    if not isinstance(labels, list) or not any(
        isinstance(item, str) and item.split("=", 1)[0].startswith("askbox.") for item in labels
    ):
        raise Refused("container listings must filter on an askbox.* label")


# -- targets --------------------------------------------------------------------------


def target_kind(policy: Policy, container_labels: Mapping[str, str] | None) -> str | None:
    """'sandbox' or 'egress' for a container askbox created in this deployment, else None."""
    found = dict(container_labels or {})
    if found.get(SANDBOX_LABEL) == policy.deployment:
        return "sandbox"
    if EGRESS_LABEL in found and found.get(EGRESS_ROOT_LABEL) in policy.egress_dirs:
        return "egress"
    return None


def check_target(policy: Policy, decision: Decision, name: str, container_labels: Mapping[str, str] | None) -> None:
    kind = target_kind(policy, container_labels)
    if kind is None:
        raise Refused(f"container {name[:80]} is not one of this deployment's sandboxes or egress proxies")
    if decision.exec_only_egress and kind != "egress":
        raise Refused(f"exec is allowed only in egress proxies, and {name[:80]} is a sandbox")


def check_image(policy: Policy, image: str) -> str:
    """The image's repository when it is one of askbox's images, named by repository and tag."""
    match = _IMAGE.match(image or "")
    if match is None:
        raise Refused(f"image {str(image)[:120]!r} is not named as repository:tag (ids and digests are refused)")
    repo = match["repo"]  # as askbox names its images: no registry prefix is taken off (or let through)
    if not any(repo.startswith(prefix) for prefix in policy.image_prefixes):
        raise Refused(f"image {image[:120]!r} is not one of askbox's images ({', '.join(policy.image_prefixes)})")
    return repo


# -- JSON the way the daemon reads it -------------------------------------------------


class _Obj(dict):
    """A JSON object whose keys were checked: ASCII, no duplicates."""


def _pairs(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj()
    for key, value in pairs:
        if not key.isascii():
            raise Refused(f"JSON key {key[:40]!r} is not ASCII (the daemon folds Unicode case)")
        if key in obj:
            raise Refused(f"JSON key {key[:40]!r} given twice")
        obj[key] = value
    return obj


def _constant(name: str) -> None:
    raise Refused(f"JSON holds {name}, which is not JSON")


def parse_json(body: bytes, what: str) -> _Obj:
    try:
        text = body.decode("utf-8")  # not json.loads(bytes), which would also take UTF-16/32
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, Refused):
            raise
        raise Refused(f"{what} body is not JSON ({exc})") from None
    if not isinstance(value, _Obj):
        raise Refused(f"{what} body is not a JSON object")
    return value


@dataclass(frozen=True)
class _Field:
    key: str  # as the request spelled it
    value: Any


def _fields(obj: Any, known: Iterable[str], where: str) -> dict[str, _Field]:
    """A struct's fields by canonical name. A key matching none of ``known`` (ignoring
    case, as the daemon does) must be empty; two keys equal ignoring case are refused."""
    if obj is None:
        return {}
    if not isinstance(obj, _Obj):
        raise Refused(f"{where} is not a JSON object")
    canonical = {k.lower(): k for k in known}
    out: dict[str, _Field] = {}
    for key, value in obj.items():
        name = canonical.get(key.lower())
        if name is None:
            if not _empty(value):
                raise Refused(f"{where}.{key} is not allowed")
            name = "?" + key.lower()
        if name in out:
            raise Refused(f"{where}.{key} given twice (the daemon ignores case)")
        out[name] = _Field(key, value)
    return out


def _unwrap(fields: dict[str, _Field]) -> dict[str, Any]:
    return {f.key: f.value for f in fields.values()}


def _empty(value: Any) -> bool:
    if value is None or value is False:
        return True
    if type(value) in (str, list, dict, _Obj):
        return len(value) == 0
    return type(value) is int and value == 0


def _get(fields: dict[str, _Field], name: str, default: Any = None) -> Any:
    found = fields.get(name)
    return default if found is None or found.value is None else found.value


def _require_empty(fields: dict[str, _Field], names: Iterable[str], where: str) -> None:
    for name in names:
        if name in fields and not _empty(fields[name].value):
            raise Refused(f"{where}.{name} is not allowed")


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Refused(f"{where} must be a list of strings")
    return value


def _int(value: Any, where: str) -> int:
    if type(value) is not int:
        raise Refused(f"{where} must be an integer")
    return value


# -- containers/create ----------------------------------------------------------------

_CONFIG_FIELDS = {
    "Image",
    "User",
    "Labels",
    "Cmd",
    "Entrypoint",
    "Env",
    "WorkingDir",
    "Hostname",
    "Domainname",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "NetworkDisabled",
    "StopSignal",
    "StopTimeout",
    "ArgsEscaped",
    "HostConfig",
    "NetworkingConfig",
}
_HOST_FIELDS = {
    "NetworkMode",
    "Privileged",
    "CapAdd",
    "CapDrop",
    "SecurityOpt",
    "ReadonlyRootfs",
    "Mounts",
    "Tmpfs",
    "IpcMode",
    "PidMode",
    "UTSMode",
    "UsernsMode",
    "CgroupnsMode",
    "Init",
    "ShmSize",
    "Ulimits",
    "OomScoreAdj",
    "OomKillDisable",
    "PidsLimit",
    "Memory",
    "MemorySwap",
    "NanoCpus",
    "LogConfig",
    "Runtime",
    "RestartPolicy",
    "ExtraHosts",
    "AutoRemove",
    "MaskedPaths",
    "ReadonlyPaths",
    "CpuShares",
    "CpuPeriod",
    "CpuQuota",
    "MemoryReservation",
    "ConsoleSize",
}


def _create(policy: Policy, clean: Decision, args: dict[str, str], body: bytes) -> Decision:
    config = parse_json(body, "create")
    fields = _fields(config, _CONFIG_FIELDS, "create")
    repo = check_image(policy, _get(fields, "Image", ""))
    kind = "egress" if repo == policy.egress_image else "sandbox"
    name = args.get("name", "")
    if name and not re.fullmatch(r"askbox-[A-Za-z0-9_.-]{1,120}", name):
        raise Refused(f"container name {name[:80]!r} does not start with askbox-")
    check_user(policy, kind, _get(fields, "User", ""), "create")
    _check_labels(policy, kind, _get(fields, "Labels", {}))
    env = _str_list(_get(fields, "Env"), "create.Env")
    if kind == "egress":
        # The proxy runs its image's own entrypoint, nothing else, with its Squid
        # configuration and no other variable (LD_PRELOAD and the like run code of the
        # caller's choosing in the host's network namespace).
        _require_empty(fields, ["Cmd"], "create")
        if len(env) != 1 or not env[0].startswith(PROXY_ENV + "="):
            raise Refused(f"create.Env of an egress proxy must be {PROXY_ENV}=<its squid.conf> and nothing else")
        check_squid_conf(env[0].removeprefix(PROXY_ENV + "="), _get(fields, "Labels", {}))
    if "Entrypoint" in fields and fields["Entrypoint"].value is not None:
        raise Refused("create.Entrypoint may not be set: the image's own is used")
    _str_list(_get(fields, "Cmd"), "create.Cmd")
    networking = _fields(_get(fields, "NetworkingConfig"), {"EndpointsConfig"}, "create.NetworkingConfig")
    _require_empty(networking, ["EndpointsConfig"], "create.NetworkingConfig")
    host = _get(fields, "HostConfig")
    if host is None:
        raise Refused("create.HostConfig is required")
    _check_host(policy, kind, _fields(host, _HOST_FIELDS, "HostConfig"))
    return Decision(
        path=clean.path, query=clean.query, body=json.dumps(config).encode(), summary=f"{kind} {_get(fields, 'Image')}"
    )


def check_squid_conf(conf: str, labels: Mapping[str, str]) -> None:
    """The proxy's squid.conf must be the one askbox writes (sandbox/allowlist.py) for the
    allowlist on its label: Squid runs the programs its configuration names (helpers,
    rewriters), so any other text could be code of the caller's choosing in the host's
    network namespace. Only the allowlist, the per-run connection cap and the resolvers
    vary; they are read back and the whole text made again to compare."""
    allow = labels.get(askbox_labels.EGRESS_ALLOW)
    cap = re.search(r"^client_ip_max_connections ([1-9][0-9]{0,3})$", conf, re.MULTILINE)
    servers = re.search(r"^dns_nameservers (.+)$", conf, re.MULTILINE)
    try:
        if not isinstance(allow, str) or cap is None:
            raise ValueError("no allowlist label or connection cap")
        expected = squid_config(
            parse_allowlist(allow), max_connections=int(cap[1]), dns_nameservers=servers[1].split() if servers else ()
        )
    except ValueError:  # pydantic's ValidationError is one too
        expected = None
    if conf != expected:
        raise Refused(
            f"create.Env {PROXY_ENV} is not the squid.conf askbox writes for the allowlist in the "
            f"proxy's {askbox_labels.EGRESS_ALLOW} label"
        )


def check_user(policy: Policy, kind: str, user: Any, where: str) -> None:
    """A sandbox runs as exactly the sandbox user, a proxy as exactly the proxy's: no
    other uid, and no other gid (the Docker socket's group would open it)."""
    wanted = policy.proxy_user if kind == "egress" else policy.sandbox_user
    if user != wanted:
        raise Refused(
            f"{where}.User {str(user)[:40]!r}: a{'n egress proxy' if kind == 'egress' else ' sandbox'} "
            f"runs as {wanted} exactly"
        )


def _check_labels(policy: Policy, kind: str, labels: Any) -> None:
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise Refused("create.Labels must map names to strings")
    if kind == "sandbox":
        if EGRESS_LABEL in labels or EGRESS_ROOT_LABEL in labels:
            raise Refused("a sandbox may not carry the egress proxy's labels")
        if labels.get(SANDBOX_LABEL) != policy.deployment:
            raise Refused(f"a sandbox must be labelled {SANDBOX_LABEL}={policy.deployment}")
        missing = [name for name in SANDBOX_REQUIRED_LABELS if not labels.get(name)]
        if missing:
            raise Refused(f"a sandbox must carry the labels {', '.join(missing)}")
        if not labels[askbox_labels.DEADLINE].isdigit():
            raise Refused("askbox.deadline must be a unix time")
    elif SANDBOX_LABEL in labels:
        raise Refused("an egress proxy may not carry the sandbox label")
    elif not labels.get(EGRESS_LABEL) or labels.get(EGRESS_ROOT_LABEL) not in policy.egress_dirs:
        raise Refused(
            f"an egress proxy must be labelled {EGRESS_LABEL} and {EGRESS_ROOT_LABEL}=<an egress socket root>"
        )


def _check_host(policy: Policy, kind: str, host: dict[str, _Field]) -> None:
    where = "HostConfig"
    network = _get(host, "NetworkMode", "")
    allowed_network = "host" if kind == "egress" else "none"
    if network != allowed_network:
        raise Refused(
            f"{where}.NetworkMode {network!r}: a{'n egress proxy' if kind == 'egress' else ' sandbox'} "
            f"runs with {allowed_network!r}"
        )
    if _get(host, "Privileged") not in (None, False):
        raise Refused(f"{where}.Privileged is not allowed")
    if _str_list(_get(host, "CapAdd"), f"{where}.CapAdd"):
        raise Refused(f"{where}.CapAdd is not allowed: askbox's containers drop every capability")
    if "ALL" not in {c.upper() for c in _str_list(_get(host, "CapDrop"), f"{where}.CapDrop")}:
        raise Refused(f"{where}.CapDrop must hold ALL")
    options = _str_list(_get(host, "SecurityOpt"), f"{where}.SecurityOpt")
    if not options or any(opt not in NO_NEW_PRIVILEGES for opt in options):
        raise Refused(f"{where}.SecurityOpt must be no-new-privileges and nothing else (got {options})")
    if _get(host, "ReadonlyRootfs") is not True:
        raise Refused(f"{where}.ReadonlyRootfs must be true")
    for name in ("PidMode", "UTSMode", "UsernsMode"):
        if _get(host, name, "") != "":
            raise Refused(f"{where}.{name} {_get(host, name)!r} is not allowed (no shared namespaces)")
    private = {"private"} if kind == "sandbox" else {"", "private"}
    for name in ("IpcMode", "CgroupnsMode"):
        if _get(host, name, "") not in private:
            raise Refused(f"{where}.{name} {_get(host, name, '')!r} is not allowed (private only)")
    for name in ("MaskedPaths", "ReadonlyPaths"):
        if name in host and host[name].value is not None:  # even [] unmasks /proc
            raise Refused(f"{where}.{name} may not be set")
    if _get(host, "OomKillDisable") not in (None, False):
        raise Refused(f"{where}.OomKillDisable is not allowed")
    if _int(_get(host, "OomScoreAdj", 0), f"{where}.OomScoreAdj") < 0:
        raise Refused(f"{where}.OomScoreAdj may not be negative")
    _check_limits(kind, host, where)
    runtime = _get(host, "Runtime", "")
    if runtime and runtime not in policy.runtimes:
        raise Refused(f"{where}.Runtime {runtime!r} is not one of {sorted(policy.runtimes)}")
    _check_log_config(_get(host, "LogConfig"), where)
    _check_restart(kind, _get(host, "RestartPolicy"), where)
    hosts = _str_list(_get(host, "ExtraHosts"), f"{where}.ExtraHosts")
    if hosts and kind != "egress":
        raise Refused(f"{where}.ExtraHosts: a sandbox has no network")
    _check_tmpfs(_get(host, "Tmpfs"), where)
    _check_mounts(policy, kind, _get(host, "Mounts"), where)
    _check_ulimits(_get(host, "Ulimits"), where)


def _check_limits(kind: str, host: dict[str, _Field], where: str) -> None:
    memory = _int(_get(host, "Memory", 0), f"{where}.Memory")
    if memory <= 0:
        raise Refused(f"{where}.Memory: a memory limit is required")
    swap = _int(_get(host, "MemorySwap", 0), f"{where}.MemorySwap")
    if swap != 0 and swap < memory:  # -1 (unlimited swap) included
        raise Refused(f"{where}.MemorySwap must be unset or at least Memory")
    if _int(_get(host, "PidsLimit", 0), f"{where}.PidsLimit") <= 0:
        raise Refused(f"{where}.PidsLimit: a process limit is required")
    if kind == "sandbox" and _int(_get(host, "NanoCpus", 0), f"{where}.NanoCpus") <= 0:
        raise Refused(f"{where}.NanoCpus: a sandbox needs a CPU limit")


def _check_ulimits(value: Any, where: str) -> None:
    for item in value or []:
        limit = _fields(item, {"Name", "Soft", "Hard"}, f"{where}.Ulimits[]")
        ulimit = _get(limit, "Name", "")
        if ulimit not in ULIMITS:
            raise Refused(f"{where}.Ulimits: {str(ulimit)[:40]!r} is not one askbox sets")
        for bound in ("Soft", "Hard"):
            number = _int(_get(limit, bound, 0), f"{where}.Ulimits.{bound}")
            if not 0 <= number <= ULIMITS[ulimit]:
                raise Refused(f"{where}.Ulimits {ulimit} {bound} {number} is over {ULIMITS[ulimit]}")


def _check_log_config(value: Any, where: str) -> None:
    log = _fields(value, {"Type", "Config"}, f"{where}.LogConfig")
    driver = _get(log, "Type", "")
    if driver not in LOG_DRIVERS:
        raise Refused(f"{where}.LogConfig.Type {str(driver)[:40]!r} is not allowed (local drivers only)")
    options = _get(log, "Config", {})
    if not isinstance(options, dict) or set(options) - LOG_OPTIONS:
        raise Refused(f"{where}.LogConfig.Config may hold only {sorted(LOG_OPTIONS)}")


def _check_restart(kind: str, value: Any, where: str) -> None:
    restart = _fields(value, {"Name", "MaximumRetryCount"}, f"{where}.RestartPolicy")
    name = _get(restart, "Name", "")
    allowed = {"", "no"} | ({"unless-stopped", "on-failure"} if kind == "egress" else set())
    if name not in allowed:
        raise Refused(f"{where}.RestartPolicy {str(name)[:40]!r} is not allowed for a {kind}")


def _check_tmpfs(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise Refused(f"{where}.Tmpfs must map paths to options")
    for target, options in value.items():
        _check_target_path(target, f"{where}.Tmpfs")
        opts = set(str(options).split(","))
        if not {"nosuid", "nodev"} <= opts:
            raise Refused(f"{where}.Tmpfs {target}: needs nosuid,nodev")


def _check_target_path(target: Any, where: str) -> None:
    if not isinstance(target, str) or not target.startswith("/") or os.path.normpath(target) != target:
        raise Refused(f"{where}: target {str(target)[:120]!r} is not a normalised absolute path")
    if target == "/" or any(target == p or target.startswith(p + "/") for p in FORBIDDEN_TARGETS):
        raise Refused(f"{where}: target {target!r} is not allowed")


def _under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def _shaped(source: str, roots: Iterable[str], shape: tuple[re.Pattern[str] | str, ...]) -> bool:
    """Whether ``source`` is ``<one of roots>/<part>/...`` with exactly the parts of ``shape``."""
    for root in roots:
        prefix = root.rstrip("/") + "/"
        if source.startswith(prefix):
            parts = source[len(prefix) :].split("/")
            if len(parts) == len(shape) and all(
                part == want if isinstance(want, str) else want.fullmatch(part) is not None
                for part, want in zip(parts, shape)
            ):
                return True
    return False


def _sealed(policy: Policy) -> list[str]:
    return [f"{root.rstrip('/')}/{owned_dirs.SEALED}" for root in policy.snapshot_dirs]


def check_source(policy: Policy, source: Any, read_only: bool, kind: str, where: str = "HostConfig.Mounts") -> None:
    """A bind mount's host path: canonical, in a shape askbox makes under a directory the
    worker cannot write (sandbox/owned_dirs.py), and reached without a symlink on the way
    (as this process sees the host's directories: they must be mounted into the filter at
    the same path)."""
    if not isinstance(source, str) or "\0" in source or not source.startswith("/"):
        raise Refused(f"{where}: source {str(source)[:120]!r} is not an absolute path")
    if os.path.normpath(source) != source:
        raise Refused(f"{where}: source {source[:200]!r} is not normalised (.., //, trailing /)")
    if source in policy.read_only_files:
        if not read_only:
            raise Refused(f"{where}: {source} only read-only")
        return
    if kind == "egress":
        shapes = [f"{root}/<proxy>" for root in policy.egress_dirs]
        allowed = _shaped(source, policy.egress_dirs, (owned_dirs.PROXY,))
    else:
        if not read_only:
            raise Refused(f"{where}: a sandbox's mounts are read-only ({source[:200]})")
        shapes = [
            *(f"{root}/..." for root in policy.read_only_dirs),
            *(f"{root}/<slug>/<snapshot>" for root in _sealed(policy)),
            *(f"{root}/s-<session>" for root in policy.gateway_dirs),
            *(f"{root}/<proxy>/{owned_dirs.RUNS}/run-<id>" for root in policy.egress_dirs),
        ]
        allowed = (
            _under(source, policy.read_only_dirs)
            or _shaped(source, _sealed(policy), (owned_dirs.SLUG, owned_dirs.SNAPSHOT))
            or _shaped(source, policy.gateway_dirs, (_SESSION,))
            or _shaped(source, policy.egress_dirs, (owned_dirs.PROXY, owned_dirs.RUNS, _RUN_DIR))
        )
    if not allowed:
        raise Refused(
            f"{where}: {source[:200]} is not under a directory askbox mounts, in a shape it mounts "
            f"({', '.join(shapes) or 'none configured'})"
        )
    try:
        owned_dirs.check_no_symlink(source)
    except FileNotFoundError:
        raise Refused(
            f"{where}: {source[:200]} is not visible to the filter (mount the directory into it at the same path)"
        ) from None
    except OSError as exc:  # ELOOP, ENOTDIR: a symlink (or a file) on the way
        raise Refused(f"{where}: {source[:200]} is or passes through a symlink or a file ({exc.strerror})") from None


def _check_mounts(policy: Policy, kind: str, value: Any, where: str) -> None:
    for item in value or []:
        mount = _fields(
            item, {"Type", "Source", "Target", "ReadOnly", "Consistency", "BindOptions"}, f"{where}.Mounts[]"
        )
        if _get(mount, "Type") != "bind":
            raise Refused(f"{where}.Mounts: only bind mounts (got {str(_get(mount, 'Type'))[:20]!r})")
        _check_target_path(_get(mount, "Target"), f"{where}.Mounts")
        read_only = _get(mount, "ReadOnly") is True
        options = _fields(_get(mount, "BindOptions"), {"Propagation", "NonRecursive"}, f"{where}.Mounts.BindOptions")
        if _get(options, "Propagation", "") not in {"", "rprivate", "private"}:
            raise Refused(f"{where}.Mounts.BindOptions.Propagation must be private")
        check_source(policy, _get(mount, "Source"), read_only, kind)


# -- exec -----------------------------------------------------------------------------

# docker-py also sends "Container" (its id), which the daemon ignores (the path names it).
_EXEC_FIELDS = {
    "Container",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "Cmd",
    "User",
    "Privileged",
    "Env",
    "WorkingDir",
    "DetachKeys",
    "ConsoleSize",
}


def _exec_body(policy: Policy, config: _Obj) -> bytes:
    fields = _fields(config, _EXEC_FIELDS, "exec")
    if _get(fields, "Privileged") not in (None, False):
        raise Refused("exec.Privileged is not allowed")
    user = _get(fields, "User", "")
    if user not in ("", policy.proxy_user):
        raise Refused(f"exec.User {str(user)[:40]!r} must be empty (the proxy's own) or {policy.proxy_user}")
    # No variable (LD_PRELOAD makes any command arbitrary code), no other directory.
    _require_empty(fields, ["Env", "WorkingDir"], "exec")
    check_exec_command(_str_list(_get(fields, "Cmd"), "exec.Cmd"))
    return json.dumps(config).encode()


def check_exec_command(command: list[str]) -> None:
    """One of the commands sandbox/egress.py runs in a proxy, each argument in its shape."""
    name, args = (command[0], command[1:]) if command else ("", [])
    if name not in EXEC_COMMANDS:
        raise Refused(f"exec of {command[:1]} is not allowed (only {', '.join(EXEC_COMMANDS)})")
    if name == "test":
        ok = args == ["-s", SQUID_PORT_FILE]
        shape = f"test -s {SQUID_PORT_FILE}"
    elif name == "askbox-egress-listen":  # RUN_DIR RUN_ID MAX_CONNECTIONS
        ok = (
            len(args) == 3
            and owned_dirs.RUN.fullmatch(args[1]) is not None
            and args[0] == f"{owned_dirs.EGRESS_MOUNT_POINT}/{owned_dirs.RUNS}/run-{args[1]}"
            and _number(args[2], 1, 1024)
        )
        shape = f"askbox-egress-listen {owned_dirs.EGRESS_MOUNT_POINT}/{owned_dirs.RUNS}/run-<id> <id> <1-1024>"
    else:  # askbox-egress-responder PORT TOKEN SECONDS
        ok = (
            len(args) == 3
            and _number(args[0], 1, 65535)
            and re.fullmatch(r"[A-Za-z0-9]{1,64}", args[1]) is not None
            and _number(args[2], 1, 3600)
        )
        shape = "askbox-egress-responder <port> <token> <1-3600>"
    if not ok:
        raise Refused(f"exec {' '.join(command)[:200]!r} is not in the shape askbox runs it ({shape})")


def _number(text: str, low: int, high: int) -> bool:
    return re.fullmatch(r"[1-9][0-9]{0,5}", text) is not None and low <= int(text) <= high


# -- start ----------------------------------------------------------------------------


def check_at_start(policy: Policy, info: Mapping[str, Any]) -> None:
    """Before a container starts (``info``: the daemon's inspect of it), its bind mounts
    and user are checked again: defence in depth. A source is resolved by the daemon at
    start, so one replaced since the create (a symlink now) is refused here. Not the fix:
    nothing sandboxes bind is the worker's to replace (sandbox/owned_dirs.py)."""
    config = info.get("Config") or {}
    kind = target_kind(policy, config.get("Labels"))
    if kind is None:
        raise Refused("the container to start is not one of this deployment's sandboxes or egress proxies")
    host = info.get("HostConfig") or {}
    check_user(policy, kind, config.get("User", ""), "start")
    if host.get("Binds") or host.get("VolumesFrom") or host.get("Devices"):
        raise Refused("start: the container has Binds, VolumesFrom or Devices")
    for mount in host.get("Mounts") or []:
        if not isinstance(mount, dict) or mount.get("Type") != "bind":
            raise Refused(f"start: only bind mounts (got {str(mount)[:80]})")
        check_source(policy, mount.get("Source"), mount.get("ReadOnly") is True, kind, where="start: Mounts")
