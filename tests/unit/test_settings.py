import pytest
from pydantic import ValidationError

from bot.cli import main
from sandbox.settings import SandboxSettings
from sandbox.spec import Limits, SandboxSpec, parse_size


def test_sizes():
    assert parse_size("512m") == 512 * 2**20
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    with pytest.raises(ValueError):
        parse_size("lots")


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("ASKBOX_SANDBOX_MEMORY", "1g")
    monkeypatch.setenv("ASKBOX_EGRESS_ALLOW", "*.cursor.sh,127.0.0.1:9")
    limits = SandboxSettings().limits()
    assert limits.memory == 2**30


def test_bad_setting_names_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("ASKBOX_EGRESS_ALLOW", "http://nope")
    assert main(["sandbox", "run", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert "ASKBOX_EGRESS_ALLOW" in err and "http://nope" in err


def test_spec_refuses_missing_repo(tmp_path):
    with pytest.raises(ValidationError, match="not a directory"):
        SandboxSpec(image="x", command=["true"], repo=tmp_path / "absent")


def test_spec_hides_env_values():
    spec = SandboxSpec(image="x", command=["true"], env={"CURSOR_API_KEY": "secret-value"})
    assert "secret-value" not in repr(spec)
    assert Limits().memory == Limits().model_copy().memory


@pytest.mark.parametrize(
    "flags, word", [(["--timeout", "-1"], "timeout"), (["--memory", "lots"], "memory"), (["--cpus", "0"], "cpus")]
)
def test_bad_limits_on_the_command_line_are_refused(flags, word, capsys):
    assert main(["sandbox", "run", *flags, "--", "true"]) == 2
    assert f"invalid {word}" in capsys.readouterr().err


def test_the_job_timeout_is_every_phases_bound_plus_the_margin(monkeypatch):
    from jobs.settings import FINAL_DELIVERY_ALLOWANCE, Settings

    for name in (
        "ASKBOX_REPO_FETCH_TIMEOUT",
        "ASKBOX_SANDBOX_TIMEOUT",
        "ASKBOX_JOB_TIMEOUT_MARGIN",
        "ASKBOX_SIDE_TASKS",
        "ASKBOX_REPO_SNAPSHOT_ALLOWANCE",
    ):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings.load()
    assert defaults.job_phases() == {
        "fetch": 240.0,
        "snapshot": 120.0,
        "side tasks": 0.0,
        "sandbox": 600.0,
        "final delivery": FINAL_DELIVERY_ALLOWANCE,
        "margin": 60.0,
    }
    # It used to be the deadline plus the margin (660 s): a 120 s fetch in front of a
    # full-length run overran it and RQ killed the question.
    assert defaults.job_timeout() == 1110 > 120 + 600 + 60
    monkeypatch.setenv("ASKBOX_SIDE_TASKS", "true")  # triage 8 s, compaction and summary 30 s each
    monkeypatch.setenv("ASKBOX_REPO_FETCH_TIMEOUT", "45")
    monkeypatch.setenv("ASKBOX_SANDBOX_TIMEOUT", "20")
    monkeypatch.setenv("ASKBOX_JOB_TIMEOUT_MARGIN", "10")
    assert Settings.load().job_timeout() == 90 + 120 + 68 + 20 + 90 + 10
