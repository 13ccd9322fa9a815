"""sandbox/owned_dirs.py and the filter's endpoints on it (no daemon): sealing a snapshot,
removing one, an egress proxy's and a run's socket directory; what a worker that writes
the staging area could plant there is never followed nor sealed. Through the real filter
and from a non-root worker's seat: tests/integration/test_docker_filter_sealing.py."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from sandbox import owned_dirs
from sandbox.docker_filter.endpoints import serve
from sandbox.docker_filter.policy import Policy, Refused
from sandbox.users import PROXY_UID

SLUG = "web-1234abcd"
NAME = "a" * 40 + "-0badcafe"


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "snapshots" / "staging" / SLUG).mkdir(parents=True)
    return tmp_path / "snapshots"


def build(root: Path, name: str = ".tmp-abc", files: dict[str, str] | None = None) -> Path:
    tmp = root / "staging" / SLUG / name
    tmp.mkdir()
    for rel, text in (files or {"README.md": "# hi\n"}).items():
        (tmp / rel).write_text(text)
    return tmp


def test_a_build_is_sealed_whole_and_leaves_staging(root):
    tmp = build(root)
    blob = root / "staging" / SLUG / ".blobs"
    blob.mkdir()
    os.link(tmp / "README.md", blob / "x.100644")  # snapshots hard-link the blob store's files
    owned_dirs.seal_snapshot(root, SLUG, tmp.name, NAME)
    sealed = root / "sealed" / SLUG / NAME
    assert (sealed / "README.md").read_text() == "# hi\n" and not tmp.exists()
    assert (sealed / "README.md").stat().st_ino == (blob / "x.100644").stat().st_ino  # the link survived
    assert stat.S_IMODE((root / "sealed" / SLUG).stat().st_mode) == 0o755
    # Sealed again by a second question: its build is dropped, the first stays.
    second = build(root, ".tmp-def", {"README.md": "other\n"})
    owned_dirs.seal_snapshot(root, SLUG, second.name, NAME)
    assert not second.exists() and (sealed / "README.md").read_text() == "# hi\n"
    assert list((root / "sealed" / ".incoming").iterdir()) == []


def test_a_symlink_or_file_is_never_sealed(root):
    (root / "staging" / SLUG / ".tmp-evil").symlink_to("/var/run")
    with pytest.raises(owned_dirs.Unsealable, match="not a directory"):
        owned_dirs.seal_snapshot(root, SLUG, ".tmp-evil", NAME)
    (root / "staging" / SLUG / ".tmp-file").write_text("x")
    with pytest.raises(owned_dirs.Unsealable):
        owned_dirs.seal_snapshot(root, SLUG, ".tmp-file", NAME)
    assert not (root / "sealed" / SLUG / NAME).exists()
    assert list((root / "sealed" / ".incoming").iterdir()) == []  # removed, not left anywhere
    assert os.path.isdir("/var/run")  # what the link pointed at is untouched


def test_a_symlinked_slug_in_staging_is_not_followed(root, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / ".tmp-x").mkdir(parents=True)
    (root / "staging" / "web-evil").symlink_to(elsewhere)
    with pytest.raises(OSError) as raised:
        owned_dirs.seal_snapshot(root, "web-evil", ".tmp-x", NAME)
    assert raised.value.errno in {errno.ELOOP, errno.ENOTDIR}  # the link itself, not followed
    assert (elsewhere / ".tmp-x").is_dir()


@pytest.mark.parametrize(
    "slug,build_name,name",
    [
        ("..", ".tmp-a", NAME),
        (".blobs", ".tmp-a", NAME),
        ("a/b", ".tmp-a", NAME),
        (SLUG, "../x", NAME),
        (SLUG, ".tmp-a/..", NAME),
        (SLUG, "tmp-a", NAME),
        (SLUG, ".tmp-a", "x"),
        (SLUG, ".tmp-a", NAME + "/x"),
        (SLUG, ".tmp-a", ".incoming"),
        (SLUG, ".tmp-a", None),
    ],
)
def test_names_askbox_does_not_make_are_refused(root, slug, build_name, name):
    with pytest.raises(owned_dirs.BadName):
        owned_dirs.seal_snapshot(root, slug, build_name, name)


def test_a_sealed_snapshot_is_removed_whole(root):
    owned_dirs.seal_snapshot(root, SLUG, build(root).name, NAME)
    owned_dirs.remove_snapshot(root, SLUG, NAME)
    assert not (root / "sealed" / SLUG / NAME).exists()
    assert list((root / "sealed" / ".trash").iterdir()) == []
    owned_dirs.remove_snapshot(root, SLUG, NAME)  # gone already: nothing to do
    owned_dirs.remove_snapshot(root, "web-other", NAME)


def test_egress_directories_belong_to_the_sealing_party_but_a_run_s_to_the_proxy(tmp_path):
    root = tmp_path / "egress"
    root.mkdir()
    owned_dirs.make_egress_dir(root, "0123456789ab")
    owned_dirs.make_egress_dir(root, "0123456789ab", "r1")
    owned_dirs.make_egress_dir(root, "0123456789ab", "r1")  # again: the same
    proxy, run = root / "0123456789ab", root / "0123456789ab" / "runs" / "run-r1"
    assert proxy.stat().st_uid == (proxy / "runs").stat().st_uid == os.geteuid()
    assert (run.stat().st_uid, run.stat().st_gid) == (PROXY_UID, PROXY_UID)
    assert stat.S_IMODE(run.stat().st_mode) == 0o755
    (run / "proxy.sock").write_text("")  # what the proxy puts there
    owned_dirs.remove_egress_dir(root, "0123456789ab", "r1")
    assert not run.exists() and (proxy / "runs").is_dir()
    owned_dirs.remove_egress_dir(root, "0123456789ab")
    assert list(root.iterdir()) == []
    for proxy_name, run_name in (("../x", None), ("0123456789ab", "../../x"), ("0123456789ab/runs", None)):
        with pytest.raises(owned_dirs.BadName):
            owned_dirs.make_egress_dir(root, proxy_name, run_name)


# -- the filter's endpoints -------------------------------------------------------------


@pytest.fixture()
def policy(root: Path, tmp_path: Path) -> Policy:
    (tmp_path / "egress").mkdir()
    return Policy(
        deployment="prod",
        image_prefixes=("askbox/",),
        egress_image="askbox/egress-proxy",
        egress_dirs=(str(tmp_path / "egress"),),
        read_only_dirs=(),
        snapshot_dirs=(str(root),),
    )


def post(policy: Policy, action: str, payload: object, method: str = "POST") -> dict:
    return serve(policy, method, f"/askbox/{action}", json.dumps(payload).encode())


def test_the_endpoints_run_the_same_functions(policy, root, tmp_path):
    tmp = build(root)
    assert post(policy, "snapshots/seal", {"root": str(root), "slug": SLUG, "build": tmp.name, "name": NAME})
    assert (root / "sealed" / SLUG / NAME / "README.md").is_file()
    assert post(policy, "snapshots/remove", {"root": str(root), "slug": SLUG, "name": NAME})
    assert not (root / "sealed" / SLUG / NAME).exists()
    egress = policy.egress_dirs[0]
    assert post(policy, "egress/make", {"root": egress, "proxy": "0123456789ab", "run": "r1"})
    assert (Path(egress) / "0123456789ab" / "runs" / "run-r1").stat().st_uid == PROXY_UID
    assert post(policy, "egress/remove", {"root": egress, "proxy": "0123456789ab", "run": None})
    assert list(Path(egress).iterdir()) == []


def test_the_endpoints_refuse_what_askbox_does_not_ask(policy, root, tmp_path):
    (root / "staging" / SLUG / ".tmp-evil").symlink_to("/var/run")
    good = {"root": str(root), "slug": SLUG, "build": ".tmp-evil", "name": NAME}
    cases = [
        ("snapshots/seal", good, "not a directory", 403),
        ("snapshots/seal", good | {"root": str(tmp_path)}, "not this filter's directory", 403),
        ("snapshots/seal", good | {"slug": "../x"}, "not a name askbox makes", 403),
        ("snapshots/seal", good | {"extra": "x"}, "takes root, slug, build, name", 400),
        ("snapshots/seal", {"root": str(root), "slug": SLUG}, "takes root", 400),
        ("snapshots/seal", good | {"name": 7}, "every field is a string", 400),
        ("egress/make", {"root": policy.egress_dirs[0], "proxy": "../../etc"}, "not a name askbox makes", 403),
        ("egress/make", {"root": str(root), "proxy": "0123456789ab"}, "not this filter's directory", 403),
        ("containers/create", {}, "not one of the filter's own endpoints", 404),
    ]
    for action, payload, expect, status in cases:
        with pytest.raises(Refused, match=expect) as refused:
            post(policy, action, payload)
        assert refused.value.status == status, (action, payload)
    with pytest.raises(Refused, match="POST") as refused:
        post(policy, "snapshots/seal", good, method="GET")
    assert refused.value.status == 405
    assert not (root / "sealed" / SLUG / NAME).exists()
