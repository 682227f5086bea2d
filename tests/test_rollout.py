"""restart, dependents' rechecks, failure isolation and rollback, in milliseconds, on the fake engine.

The same orchestration runs on the real engines in test_engine.py and test_pipeline.py; here every
branch of it is driven on purpose.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rotation import pipeline, present, report, rollout
from rotation.config import load
from rotation.engines import ServiceState
from rotation.errors import RecoveryError
from rotation.replacement import Footprint
from rotation.rollback import manual_recovery, roll_back
from rotation.runs import rotate
from rotation.stack import Stack

from .conftest import edited_config
from .fakeengine import FakeEngine, Script


def shaped() -> dict[str, Script]:
    """db <- api <- gateway, and an independent worker: the engine test stack's shape."""
    return {
        "db": Script(ready=0.05),
        "api": Script(ready=0.03, depends_on=("db",)),
        "gateway": Script(ready=0.01, depends_on=("api",), container_name="fake-gateway"),
        "worker": Script(ready=0.01),
    }


def test_each_service_is_replaced_only_once_its_dependencies_are_healthy() -> None:
    engine = FakeEngine(shaped())
    moves: list[tuple[str, str]] = []
    result = rollout.restart(engine, ["db", "api"], timeout=5, progress=lambda s, what, _t: moves.append((s, what)))
    assert result.ok and set(result.order) == {"db", "api"}
    recreates = [names for what, names in engine.log if what == "recreate"]
    assert recreates == [("db",), ("api",)]  # api waited for db: stop late
    assert engine.started_after("db", "api")
    assert ("db", "recreated") in moves and ("api", "healthy") in moves
    assert set(result.downtime) == {"db", "api"} and all(0 <= d < 1 for d in result.downtime.values())


FIRST = Footprint(order="start-first")


def test_a_start_first_service_is_replaced_beside_its_old_container_after_what_it_depends_on() -> None:
    scripts = shaped()
    scripts["api"] = Script(ready=0.05, depends_on=("db",), footprint=FIRST)
    engine = FakeEngine(scripts)
    old_api = engine.container("api")
    moves: list[tuple[str, str]] = []
    result = rollout.restart(engine, ["db", "api"], timeout=5, progress=lambda s, what, _t: moves.append((s, what)))
    assert result.ok and result.order == ("db", "api")
    assert [entry for entry in engine.log if entry[0] in ("recreate", "replace")] == [
        ("recreate", ("db",)),
        ("replace", ("api",)),
    ]
    assert engine.started_after("db", "api")  # start-first still waits for what it depends on
    assert engine.serving == [("api", engine.container("api"))] and engine.container("api") != old_api
    assert result.strategies["api"].order == "start-first" and result.strategies["db"].order == "stop-late"
    assert result.downtime["api"] == 0.0
    assert ("api", "starting beside the old") in moves and ("api", "healthy") in moves


def test_a_start_first_replacement_that_never_turns_healthy_leaves_the_old_container_serving() -> None:
    scripts = shaped()
    scripts["api"] = Script(ready=0.02, fails=True, footprint=FIRST)
    scripts["gateway"] = Script(depends_on=("api",), footprint=FIRST)
    engine = FakeEngine(scripts)
    old_api = engine.container("api")
    result = rollout.restart(engine, ["api", "gateway"], timeout=5)
    assert result.outcome == {"api": "failed", "gateway": "skipped"}
    assert engine.container("api") == old_api and engine.serving == [("api", old_api)]
    assert "the new container was removed and the old one still serves" in result.errors["api"]


def test_a_compose_failure_beside_a_start_first_service_leaves_its_replacement_to_go_on() -> None:
    scripts = shaped()
    scripts["worker"] = Script(footprint=FIRST)
    engine = FakeEngine(scripts, recreate_fails={"db"})
    result = rollout.restart(engine, ["db", "worker"], timeout=5)
    assert result.outcome == {"db": "failed", "worker": "ok"} and result.order == ("worker",)


def test_an_engine_failure_during_a_start_first_replacement_fails_that_service_alone() -> None:
    scripts = shaped()
    scripts["api"] = Script(footprint=FIRST)
    engine = FakeEngine(scripts, recreate_fails={"api"})
    result = rollout.restart(engine, ["api", "worker"], timeout=5)
    assert result.outcome == {"api": "failed", "worker": "ok"}
    assert result.errors["api"].endswith("its old container still serves")


def test_services_ready_together_share_one_compose_call() -> None:
    engine = FakeEngine(shaped())
    result = rollout.restart(engine, ["db", "worker"], timeout=5)
    assert result.ok
    assert [names for what, names in engine.log if what == "recreate"] == [("db", "worker")]


def test_a_failed_service_leaves_its_dependents_on_their_old_containers_and_others_go_on() -> None:
    scripts = shaped()
    scripts["api"] = Script(ready=0.01, fails=True, depends_on=("db",))
    engine = FakeEngine(scripts)
    old_gateway = engine.container("gateway")
    result = rollout.restart(engine, ["db", "api", "gateway", "worker"], timeout=5)
    assert result.outcome == {"db": "ok", "api": "failed", "gateway": "skipped", "worker": "ok"}
    assert engine.container("gateway") == old_gateway
    lines = result.failures()
    assert any(line.startswith("api: exited (code 1)") for line in lines)
    assert "gateway: left running on its old container, because a service it depends on failed" in lines


def test_a_compose_failure_fails_exactly_the_services_it_was_creating() -> None:
    engine = FakeEngine(shaped(), recreate_fails={"db"})
    result = rollout.restart(engine, ["db", "api", "worker"], timeout=5)
    assert result.outcome["db"] == "failed" and result.outcome["api"] == "skipped"
    assert "could not be created" in result.errors["db"]


def test_a_service_that_never_turns_healthy_fails_at_the_deadline() -> None:
    scripts = shaped()
    scripts["worker"] = Script(ready=60)
    result = rollout.restart(FakeEngine(scripts), ["worker"], timeout=0.2)
    assert result.outcome == {"worker": "failed"}
    assert "not healthy within 0.2s" in result.errors["worker"]


def test_without_healthcheck_nothing_is_waited_for() -> None:
    engine = FakeEngine(shaped())
    result = rollout.restart(engine, ["db", "api"], timeout=5, healthcheck=False)
    assert result.ok and not [e for e in engine.log if e[0] == "wait"]


def test_dependents_that_were_healthy_must_pass_a_new_healthcheck() -> None:
    engine = FakeEngine(shaped())
    result = rollout.restart(engine, ["api"], timeout=5)
    assert result.ok and result.outcome["gateway"] == "ok"
    assert ("recheck", ("gateway",)) in engine.log
    scripts = shaped()
    scripts["gateway"] = Script(recheck_fails=True, depends_on=("api",))
    engine = FakeEngine(scripts, grace=500_000_000)  # half a second, not the real engines' ten
    started = time.monotonic()
    result = rollout.restart(engine, ["api"], timeout=60, healthy_before={"gateway"})
    assert result.outcome == {"api": "ok", "gateway": "failed"}
    assert result.errors["gateway"].startswith("depends on api, which was recreated, and turned unhealthy")
    assert "it is in no restart_services" in result.errors["gateway"]
    assert time.monotonic() - started < 30  # ended by the verdict (after the grace), not by the deadline


def test_a_dependent_unhealthy_before_is_not_held_to_a_recheck() -> None:
    engine = FakeEngine(shaped())
    result = rollout.restart(engine, ["api"], timeout=5, healthy_before=set())
    assert result.outcome == {"api": "ok"} and ("recheck", ("gateway",)) not in engine.log


def test_a_client_that_cannot_resolve_a_replaced_name_yet_is_given_the_timeout_not_a_verdict() -> None:
    """Podman's DNS learns a recreated container's address seconds late under load; a wrong secret
    (401) is a verdict at once, a name that does not resolve is not."""
    waiting = ServiceState("gateway", "running", "unhealthy", health_output="wget: bad address 'api:8080'")
    refused = ServiceState("gateway", "running", "unhealthy", health_output="HTTP/1.1 401 Unauthorized")
    curl = ServiceState("gateway", "running", "unhealthy", health_output="curl: (6) Could not resolve host: kong")
    assert waiting.unresolved and curl.unresolved and not refused.unresolved
    assert not ServiceState("gateway", "exited", "unhealthy", health_output="bad address 'api'").unresolved


@pytest.fixture
def fake_stack(stack: Path) -> Path:
    """The example stack whose JWT secrets are read by the fake engine's services, which its compose file defines."""
    (stack / "compose.fake.yml").write_text(
        "services:\n  db: {image: x}\n  api: {image: x, depends_on: [db]}\n"
        "  gateway: {image: x, container_name: fake-gateway, depends_on: [api]}\n  worker: {image: x}\n"
    )
    with edited_config(stack) as raw:
        raw["verify"] = [{"jwt": {}}]  # the other probes reach for real containers and databases
        raw["compose"] = {**raw.get("compose", {}), "files": ["compose.fake.yml"]}
        for name in ("JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY"):
            raw["secrets"][name]["restart_services"] = ["db", "api"] if name == "JWT_SECRET" else ["fake-gateway"]
    return stack


def test_roll_back_restores_files_recreates_and_marks_the_run(fake_stack: Path) -> None:
    stack = Stack(fake_stack, load(fake_stack / "secrets-config.yaml"))
    original = (fake_stack / ".env").read_bytes()
    result = rotate(stack, ["JWT_SECRET"])
    assert result.backup is not None and (fake_stack / ".env").read_bytes() != original
    engine = FakeEngine(shaped())
    rolled = roll_back(stack, engine, result.backup, "verify failed: a probe", timeout=5, parallel=4)
    assert (fake_stack / ".env").read_bytes() == original
    assert set(rolled.restart.order) == {"db", "api", "gateway"}
    run = stack.store.get(result.backup.id)
    assert run.status == "rolled-back" and run.metadata["rollback_reason"] == "verify failed: a probe"
    assert {s for entry in run.metadata["restarts"] for s in entry["services"]} == {"db", "api", "gateway"}


def test_the_rollback_of_a_start_first_service_is_start_first_too(fake_stack: Path) -> None:
    stack = Stack(fake_stack, load(fake_stack / "secrets-config.yaml"))
    result = rotate(stack, ["JWT_SECRET"])
    assert result.backup is not None
    scripts = shaped()
    scripts["gateway"] = Script(depends_on=("api",), container_name="fake-gateway", footprint=FIRST)
    engine = FakeEngine(scripts)
    rolled = roll_back(stack, engine, result.backup, "verify failed: a probe", timeout=5, parallel=4)
    assert rolled.restart.ok and ("replace", ("gateway",)) in engine.log
    assert not any(what == "recreate" and "gateway" in names for what, names in engine.log)


def test_a_rollback_that_cannot_bring_services_back_says_how_to_finish_by_hand(fake_stack: Path) -> None:
    stack = Stack(fake_stack, load(fake_stack / "secrets-config.yaml"))
    result = rotate(stack, ["JWT_SECRET"])
    assert result.backup is not None
    scripts = shaped()
    scripts["api"] = Script(fails=True, depends_on=("db",))
    engine = FakeEngine(scripts)
    with pytest.raises(RecoveryError) as failed:
        roll_back(stack, engine, result.backup, "restart failed", timeout=5, parallel=4)
    assert str(failed.value).startswith("ROLLBACK FAILED: api: exited (code 1)")
    shown = report.step_lines(failed.value.steps, report.plain)
    assert shown[0] == f"    cd {fake_stack}"
    assert shown[1].startswith(f"    rotation restore --backup {result.backup.id}    # files")
    assert shown[2].startswith("    fake-compose -p fake up -d --force-recreate api db gateway")
    assert shown[3] == "    rotation check --verbose"
    assert stack.store.get(result.backup.id).status == "failed"
    steps = manual_recovery(stack, engine, result.backup, ["api"])
    assert report.step_lines(steps, lambda step: f"inv {step.words}" if step.ours else step.words)[1].startswith(
        f"    inv restore --backup {result.backup.id}"
    )


def test_a_rollback_whose_restore_fails_keeps_every_backup(fake_stack: Path) -> None:
    stack = Stack(fake_stack, load(fake_stack / "secrets-config.yaml"))
    result = rotate(stack, ["JWT_SECRET"])
    assert result.backup is not None
    (result.backup.path / ".env").unlink()  # the backup lost a file: the restore cannot run
    with pytest.raises(RecoveryError, match="ROLLBACK FAILED"):
        roll_back(stack, FakeEngine(shaped()), result.backup, "verify failed", timeout=5, parallel=4)
    assert result.backup.path.is_dir()


def test_a_run_naming_services_the_engine_lacks_skips_them_and_names_all_but_the_optional() -> None:
    """The plan warned about them before any change: a restart never fails on them half-way."""
    engine = FakeEngine(shaped())
    names = ["db", "fake-gateway", "langfuse-web", "langfuse-wbe"]
    known, absent = rollout.present(engine, names, optional={"langfuse-web"})
    assert known == ["db", "gateway"] and absent == ["langfuse-wbe"]


def test_a_failed_verify_rolls_back_and_marks_the_run_without_invoke(fake_stack: Path) -> None:
    from rotation import pipeline

    stack = Stack(fake_stack, load(fake_stack / "secrets-config.yaml"))
    original = (fake_stack / ".env").read_bytes()
    rotated = rotate(stack, ["JWT_SECRET"])
    assert rotated.backup is not None
    scripts = shaped()
    scripts["worker"] = Script(ready=0, fails=True)  # a service down after the rotation
    said: list[str] = []
    dry = pipeline.verify(stack, FakeEngine(scripts), rotated.backup, dry_run=True, say=said.append)
    assert dry.failure is not None and dry.failure.rolled_back is None and not said
    assert stack.store.get(rotated.backup.id).status == "applied"  # a dry run writes nothing
    outcome = pipeline.verify(stack, FakeEngine(scripts), rotated.backup, timeout=5, say=said.append)
    assert outcome.failure is not None and outcome.failure.reason.startswith("verify failed: worker exited")
    assert outcome.failure.rolled_back is not None and said == [
        f"rolling back run {rotated.backup.id}: {outcome.failure.reason}"
    ]
    assert stack.store.get(rotated.backup.id).status == "rolled-back"
    assert (fake_stack / ".env").read_bytes() == original


def test_a_good_restart_moves_the_run_on_and_names_what_it_recreated(fake_stack: Path) -> None:
    from rotation import pipeline

    stack = Stack(fake_stack, load(fake_stack / "secrets-config.yaml"))
    rotated = rotate(stack, ["JWT_SECRET"])
    assert rotated.backup is not None
    outcome = pipeline.restart(stack, FakeEngine(shaped()), rotated.backup, timeout=5)
    assert outcome.ok and outcome.services == ("api", "db", "gateway") and outcome.result is not None
    assert stack.store.get(rotated.backup.id).status == "restarted"
    assert pipeline.restart(stack, FakeEngine(shaped()), rotated.backup, dry_run=True).result is None


def test_precheck_restart_choices_and_a_restart_that_cannot_roll_back(fake_stack: Path) -> None:
    from rotation import pipeline
    from rotation.errors import SelectionError

    stack = Stack(fake_stack, load(fake_stack / "secrets-config.yaml"))
    gate = pipeline.precheck(stack, FakeEngine(shaped()))
    assert gate.ok and gate.run is not None and stack.state_before(gate.run) is not None
    assert pipeline.precheck(stack, FakeEngine(shaped()), dry_run=True).run is None
    scripts = shaped()
    scripts["worker"] = Script(ready=0, fails=True)
    assert not pipeline.precheck(stack, FakeEngine(scripts)).ok
    every = pipeline.restart(stack, FakeEngine(shaped()), None, every=True, timeout=5)
    assert every.services == ("api", "db", "gateway", "worker") and every.ok
    named = pipeline.restart(stack, FakeEngine(shaped()), None, services=["fake-gateway"], timeout=5)
    assert named.services == ("gateway",) and named.ok
    with pytest.raises(SelectionError, match="no rotation to restart after"):
        pipeline.restart(stack, FakeEngine(shaped()), None)
    failing = pipeline.restart(stack, FakeEngine(scripts), None, services=["worker"], timeout=5)
    assert failing.failure is not None and failing.failure.rolled_back is None  # no run: nothing to roll back
    rotated = rotate(stack, ["JWT_SECRET"])
    assert rotated.backup is not None
    scripts["api"] = Script(ready=0, fails=True, depends_on=("db",))
    kept = pipeline.restart(stack, FakeEngine(scripts), rotated.backup, timeout=5, rollback=False)
    assert kept.failure is not None and kept.failure.rolled_back is None
    assert stack.store.get(rotated.backup.id).status == "failed"


def test_check_saves_the_state_it_took_except_in_a_dry_run_and_compares_with_it(
    fake_stack: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = Stack(fake_stack, load(fake_stack / "secrets-config.yaml"))
    engine = FakeEngine(shaped())
    state = tmp_path / "state.json"
    dry = pipeline.check(stack, engine, save=state, dry_run=True)
    assert dry.unsaved == state and not state.exists()
    present.check(dry, stack.config, False, None)
    assert f"dry run: the state was not saved to {state}" in capsys.readouterr().err
    assert pipeline.check(stack, engine, save=state).unsaved is None and state.is_file()
    again = pipeline.check(stack, engine, compare=state)
    assert again.healthy and again.regressions == ()
