"""Ordering and health logic on plain data, without an engine."""

from __future__ import annotations

import threading
import time

import pytest

from rotation.engines import Service, ServiceState, instant
from rotation.errors import ConfigError
from rotation.health import Snapshot, problems, regressions
from rotation.order import critical_path, dependents, restart_graph, run_in_order, topological

STACK = {
    "vector": Service("vector"),
    "db": Service("db", "supabase-db", frozenset({"vector"})),
    "analytics": Service("analytics", None, frozenset({"db"})),
    "auth": Service("auth", "supabase-auth", frozenset({"db", "analytics"})),
    "rest": Service("rest", None, frozenset({"db", "analytics"})),
    "kong": Service("kong", None, frozenset({"analytics"})),
    "studio": Service("studio", None, frozenset({"analytics"})),
    "n8n": Service("n8n", None, frozenset({"db"})),
    "webui": Service("webui"),
}


def test_a_service_waits_for_affected_services_even_through_unaffected_ones() -> None:
    graph = restart_graph(STACK, ["db", "auth", "kong", "webui"])
    assert graph == {
        "db": frozenset(),
        "auth": frozenset({"db"}),
        "kong": frozenset({"db"}),  # kong -> analytics (not recreated) -> db
        "webui": frozenset(),
    }


def test_recreating_a_service_disturbs_everything_downstream_of_it() -> None:
    assert dependents(STACK, ["analytics"]) == ["auth", "kong", "rest", "studio"]
    assert dependents(STACK, ["vector"]) == ["analytics", "auth", "db", "kong", "n8n", "rest", "studio"]
    assert dependents(STACK, ["webui", "kong"]) == []


def test_topological_order_is_dependencies_first_and_stable() -> None:
    graph = restart_graph(STACK, list(STACK))
    order = topological(graph)
    for name, deps in graph.items():
        assert all(order.index(d) < order.index(name) for d in deps)
    assert order == topological(graph)


def test_a_cycle_is_named() -> None:
    with pytest.raises(ConfigError, match="a, b"):
        topological({"a": frozenset({"b"}), "b": frozenset({"a"})})


def test_critical_path_is_the_longest_chain() -> None:
    graph = {"db": frozenset(), "api": frozenset({"db"}), "gw": frozenset({"api"}), "app": frozenset()}
    assert critical_path(graph, {"db": 2, "api": 1, "gw": 1, "app": 3}) == 4


def test_run_in_order_starts_each_node_after_its_dependencies_and_waves_together() -> None:
    graph = {"db": frozenset(), "api": frozenset({"db"}), "auth": frozenset({"db"}), "gw": frozenset({"api", "auth"})}
    batches: list[list[str]] = []
    started: dict[str, float] = {}
    finished: dict[str, float] = {}
    lock = threading.Lock()

    def begin(names: list[str]) -> dict[str, bool]:
        with lock:
            batches.append(names)
            started.update(dict.fromkeys(names, time.monotonic()))
        return dict.fromkeys(names, True)

    def finish(name: str) -> bool:
        time.sleep(0.1 if name != "auth" else 0.2)
        with lock:
            finished[name] = time.monotonic()
        return True

    assert run_in_order(graph, begin, finish, parallel=4) == dict.fromkeys(graph, "ok")
    for name, deps in graph.items():
        assert all(started[name] >= finished[d] for d in deps)
    assert batches == [["db"], ["api", "auth"], ["gw"]]  # independent services share one begin


def test_parallel_bounds_the_services_in_progress() -> None:
    graph: dict[str, frozenset[str]] = {name: frozenset() for name in "abcde"}
    batches: list[list[str]] = []

    def begin(names: list[str]) -> dict[str, bool]:
        batches.append(names)
        return dict.fromkeys(names, True)

    assert run_in_order(graph, begin, lambda name: True, 2) == dict.fromkeys("abcde", "ok")
    assert all(len(batch) <= 2 for batch in batches) and sum(map(len, batches)) == 5


def test_a_failure_skips_its_dependents_and_the_rest_finish() -> None:
    graph = {"db": frozenset(), "api": frozenset({"db"}), "gw": frozenset({"api"}), "app": frozenset()}
    outcome = run_in_order(graph, lambda names: dict.fromkeys(names, True), lambda name: name != "db", parallel=1)
    assert outcome == {"db": "failed", "api": "skipped", "gw": "skipped", "app": "ok"}
    begun = run_in_order(graph, lambda names: {n: n != "app" for n in names}, lambda name: True, parallel=4)
    assert begun == {"db": "ok", "api": "ok", "gw": "ok", "app": "failed"}


def state(name: str, **kw: object) -> ServiceState:
    return ServiceState(name, **{"state": "running", "container_id": f"{name}-1", **kw})  # type: ignore[arg-type]


def test_no_healthcheck_and_podman_empty_status_count_as_healthy() -> None:
    assert state("a").healthy and state("a", health=None).healthy
    assert not state("a", health="starting").healthy
    assert not state("a", state="exited").healthy


def test_regressions_name_unhealthy_missing_and_restarted_services() -> None:
    before = Snapshot("p", "t0", {n: state(n, health="healthy") for n in ("db", "api", "gw", "app")})
    after = Snapshot(
        "p",
        "t1",
        {
            "db": state("db", health="healthy", container_id="db-2"),
            "api": state("api", health="unhealthy", health_output="password mismatch"),
            "gw": ServiceState("gw", "missing"),
            "app": state("app", health="healthy", restarts=1),
        },
    )
    found = {r.service: r.describe() for r in regressions(before, after, recreated=["db"])}
    assert found == {
        "api": "api is no longer healthy: running (unhealthy); last healthcheck: password mismatch",
        "gw": "gw disappeared: missing",
        "app": "app was restarted: running (healthy)",
    }


def test_problems_without_a_precheck_are_the_services_unhealthy_now() -> None:
    now = Snapshot("p", "t1", {"db": state("db", health="healthy"), "api": state("api", health="unhealthy")})
    assert problems(None, now) == ["api running (unhealthy)"]
    before = Snapshot("p", "t0", {"db": state("db", health="healthy"), "api": state("api", health="healthy")})
    assert problems(before, now) == ["api is no longer healthy: running (unhealthy)"]


def test_engine_timestamps_with_trimmed_nanoseconds_keep_their_order() -> None:
    stamps = ["2026-11-29T02:00:26.4309339Z", "2026-11-29T02:00:26.43093399Z", "2026-11-29T03:00:26.5+01:00"]
    moments = [instant(s) for s in stamps]
    assert moments[0] is not None and moments[1] is not None and moments[2] is not None
    assert moments[0] < moments[1] < moments[2]
    assert instant(None) is None and instant("") is None
