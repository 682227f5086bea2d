"""The presenter alone: what a person and a script see for a result or an error, without a stack."""

from __future__ import annotations

import json

import pytest

from rotation import present
from rotation.errors import ConfigError, RecoveryError
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


def test_a_failure_says_whether_it_was_rolled_back_or_needs_a_person() -> None:
    assert present.failure(Failure("restart failed: api", None, None)).code == 1
    manual = RecoveryError("ROLLBACK FAILED: db\n    rotation restore --backup 1", steps=["restore --backup 1"])
    done = present.failure(Failure("restart failed: api", None, manual))
    assert done.code == 5 and "rotation restore --backup 1" in str(done.message)


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
    assert present.restart(outcome) is None
    out = capsys.readouterr().out.splitlines()
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
