"""The presenter alone: what a person and a script see for a result or an error, without a stack."""

from __future__ import annotations

import json

import pytest

from rotation import present, report
from rotation.errors import ConfigError, LockedError, RecoveryError, Step
from rotation.pipeline import Failure, RestartOutcome
from rotation.replacement import Strategy
from rotation.rollout import RestartResult


def test_an_error_is_one_escaped_line_for_people_and_data_for_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    error = ConfigError("secrets-config.yaml: secrets.X.length: 8 is \x1b[31mtoo short", key="secrets.X.length")
    done = present.error(error, json=True)
    assert done.code == 2
    assert "\x1b[31m" not in str(done.message) and "\\e[31m" in str(done.message)
    data = json.loads(capsys.readouterr().out)
    assert data["key"] == "secrets.X.length" and data["exit_code"] == 2 and data["kind"] == "config"


def inv(step: Step) -> str:
    """Our steps spelled as `inv` would print them from a repository with settings."""
    return f"inv -f /srv/invoke.yaml {step.words}" if step.ours else step.words


def test_a_failure_says_whether_it_was_rolled_back_or_needs_a_person() -> None:
    assert present.failure(Failure("restart failed: api", None, None), report.plain).code == 1
    steps = [Step("cd /srv/stack", ours=False), Step("restore --backup 1", why="files as before")]
    manual = RecoveryError("ROLLBACK FAILED: db\n  Every backup is kept. To recover by hand:", steps=steps)
    done = present.failure(Failure("restart failed: api", None, manual), inv)
    lines = str(done.message).splitlines()
    assert done.code == 5 and lines[0].endswith("rotation: restart failed: api") and "ROLLBACK FAILED: db" in lines[1]
    assert lines[-2:] == ["    cd /srv/stack", "    inv -f /srv/invoke.yaml restore --backup 1    # files as before"]


def test_the_steps_of_an_error_are_spelled_as_the_tool_was_invoked_in_text_and_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The core hands over task words; a person and a script both get commands that run as printed."""
    locked = LockedError(
        "run 1 is restarted but not verified; finish it first, or put it back:",
        steps=["restart verify", Step("restore --latest", why="puts it back")],
    )
    done = present.error(locked, json=True, spell=inv)
    assert str(done.message).splitlines()[1:] == [
        "    inv -f /srv/invoke.yaml restart verify",
        "    inv -f /srv/invoke.yaml restore --latest    # puts it back",
    ]
    data = json.loads(capsys.readouterr().out)
    assert data["steps"] == ["inv -f /srv/invoke.yaml restart verify", "inv -f /srv/invoke.yaml restore --latest"]
    assert present.error(locked, json=False).message.splitlines()[1] == "    rotation restart verify"  # type: ignore[union-attr]


def test_counts_read_in_the_singular_for_one() -> None:
    assert [report.count(n, "service") for n in (0, 1, 2)] == ["0 services", "1 service", "2 services"]


def test_a_restart_lists_each_services_strategy_and_why_only_where_it_tells_something(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = RestartResult({"api": "ok", "db": "ok", "auth": "ok"}, {}, {}, ("db", "api", "auth"), {"api": 0.0})
    strategies = {
        "api": Strategy("start-first", "declares deploy.update_config.order: start-first", "start-first"),
        "db": Strategy("stop-late", "writes db-data, which compose.single_writer marks single-writer", "start-first"),
        "auth": Strategy("stop-late", "declares no deploy.update_config.order"),
    }
    outcome = RestartOutcome(("db", "api", "auth"), (), result, (), None, strategies)
    assert present.restart(outcome, report.plain) is None
    out = capsys.readouterr().out.splitlines()
    assert "restart: 3 services healthy" in out
    assert "  start-first: api (declares deploy.update_config.order: start-first)" in out
    assert "  stop-late: db (writes db-data, which compose.single_writer marks single-writer)" in out
    assert "  stop-late: auth (no start-first declared)" in out
    assert "restart: without a healthy container: api 0.0s" in out


def test_progress_on_a_closed_pipe_goes_on_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    quieted = []
    monkeypatch.setattr(present, "quiet_stdout", lambda: quieted.append(True))

    def closed(*args: object, **kwargs: object) -> None:
        raise BrokenPipeError

    monkeypatch.setattr("builtins.print", closed)
    present.progress("api", "healthy", 1.5)
    assert quieted == [True]


def test_the_log_gives_an_outcome_the_room_the_terminal_has_and_keeps_to_its_width() -> None:
    why = "rolled back run 20261206-181939: restart failed: api: exited (code 1) after 12.3 s of waiting"
    entry: dict[str, object] = {"time": "2026-12-06T18:19:39", "task": "restart", "outcome": why}
    entry |= {"secrets": ["JWT_SECRET"] * 3, "services": ["auth", "rest", "kong"], "run": "20261206-181939"}
    entry["duration"] = 14.2
    for width in (100, 160, 240):
        lines = report.log_table([entry], width).splitlines()
        assert max(len(line) for line in lines) <= width, (width, lines)
        shown = lines[1].split("  restart  ", 1)[1]
        assert shown.startswith(why[:20])
    assert why in report.log_table([entry], 240)  # a wide terminal shows it whole
    assert "…" in report.log_table([entry], 100)  # a narrow one cuts its tail, not the other columns
