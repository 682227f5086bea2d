"""Restart wall time and per-service downtime, on a real Docker Engine.

A stack shaped like the local AI stack (a database, API services on it, a gateway on those, a
dashboard on the gateway, independent apps) where each service turns healthy a known time after
it starts. Measured in one run:

- R, the single-service recreate time: recreate one service and see it healthy, minus its delay;
- the limit: the critical path of the graph, each service costing R plus its ready delay;
- the wall time of `rollout.restart` over the graph, and of the same services one after another;
- downtime: sampling every 0.05 s whether each service has a running, healthy container, the
  seconds each has none during `rollout.restart` (stop late), during the previous strategy (every
  new container created at once, then started in dependency order), and each service's floor
  (recreated alone while everything it depends on is up); three runs of each strategy, taking
  turns, each service's median.

Needs DOCKER_HOST (see .ci/engine.sh) and docker-compose. Run: python benchmarks/restart_dag.py
"""

from __future__ import annotations

import functools
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rotation import rollout
from rotation.config import ComposeSpec
from rotation.engines.compose import ComposeEngine
from rotation.order import critical_path, restart_graph, run_in_order, topological
from tests.enginestack import IMAGE, ensure_image

# service: (ready delay in seconds, depends_on)
STACK = {
    "db": (1.9, []),
    "auth": (0.9, ["db"]),
    "rest": (0.9, ["db"]),
    "storage": (0.9, ["db", "rest"]),
    "meta": (0.9, ["db"]),
    "n8n": (1.9, ["db"]),
    "kong": (0.9, ["auth", "rest"]),
    "studio": (0.9, ["kong"]),
    "webui": (0.9, []),
    "crawl4ai": (0.9, []),
}
# Health is checked every second (a check is an exec, and ten services checking more often load a
# 2-core machine more than the restart itself); delays end just before a check.
GOAL = 1.15
RUNS = 3  # downtime runs of each strategy
WALL_RUNS = 5  # wall-time runs of each strategy


def compose_file() -> str:
    lines = ["services:"]
    for name, (delay, deps) in STACK.items():
        lines += [
            f"  {name}:",
            f"    image: {IMAGE}",
            "    init: true",
            f'    command: ["sh", "-c", "sleep {delay} && echo > /tmp/ready && exec sleep 1000000"]',
            "    healthcheck:",
            '      test: ["CMD", "test", "-f", "/tmp/ready"]',
            "      interval: 1s",
            "      timeout: 1s",
            "      retries: 3",
            "      start_period: 30s",
        ]
        if deps:
            lines.append("    depends_on:")
            lines += [f"      {dep}: {{condition: service_healthy}}" for dep in deps]
    return "\n".join(lines) + "\n"


def single_recreate(engine: ComposeEngine, service: str) -> float:
    """Recreate one service and see it healthy, the way restart does; minus its ready delay."""
    started = time.perf_counter()
    result = rollout.restart(engine, [service], timeout=60)
    assert result.ok, result.failures()
    return time.perf_counter() - started - STACK[service][0]


class Sampler:
    """Every 0.05 s, which services have a running, healthy container; sums the seconds without one."""

    def __init__(self, client: docker.DockerClient, project: str) -> None:
        self.client, self.project = client, project
        self.down: dict[str, float] = dict.fromkeys(STACK, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        label = {"label": f"com.docker.compose.project={self.project}"}
        last = time.perf_counter()
        while not self._stop.is_set():
            listed = self.client.api.containers(all=True, filters=label)
            now = time.perf_counter()
            healthy = {
                c["Labels"]["com.docker.compose.service"]
                for c in listed
                if c["State"] == "running" and "(healthy)" in c["Status"]
            }
            for name in STACK:
                if name not in healthy:
                    self.down[name] += now - last
            last = now
            self._stop.wait(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def previous_strategy(engine: ComposeEngine, project: str, root: Path, parallel: int) -> None:
    """The strategy before stop-late: every new container created in one compose call (which stops
    every old one), then each started through the engine API once its dependencies are healthy."""
    graph = restart_graph(engine.services(), list(STACK))
    before = {n: s.container_id for n, s in engine.states().items()}
    subprocess.run(
        ["docker-compose", "-p", project, "up", "--no-start", "--no-deps", "--force-recreate", *graph],
        cwd=root,
        check=True,
        capture_output=True,
    )
    client = engine.client

    def begin(names: list[str]) -> dict[str, bool]:
        for name in names:
            found = client.containers.list(
                all=True,
                filters={"label": [f"com.docker.compose.project={project}", f"com.docker.compose.service={name}"]},
            )
            found[0].start()
        return dict.fromkeys(names, True)

    def finish(name: str) -> bool:
        return engine.wait_healthy(name, before.get(name), 60).healthy

    outcome = run_in_order(graph, begin, finish, parallel)
    assert all(v == "ok" for v in outcome.values()), outcome


def downtime(client: docker.DockerClient, project: str, action: Callable[[], object]) -> tuple[float, dict[str, float]]:
    """Wall seconds of `action` and each service's seconds without a healthy container during it."""
    started = time.perf_counter()
    with Sampler(client, project) as sampler:
        action()
    return time.perf_counter() - started, sampler.down


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def timed_restart(engine: ComposeEngine, parallel: int) -> float:
    started = time.perf_counter()
    result = rollout.restart(engine, list(STACK), timeout=120, parallel=parallel)
    assert result.ok, result.failures()
    return time.perf_counter() - started


def timed_sequential(engine: ComposeEngine, order: list[str]) -> float:
    """The original scripts' way: each service recreated and waited for, one after another."""
    started = time.perf_counter()
    for service in order:
        result = rollout.restart(engine, [service], timeout=60)
        assert result.ok, result.failures()
    return time.perf_counter() - started


def main() -> int:
    client = docker.from_env()
    ensure_image(client)
    project = f"bench{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "docker-compose.yml").write_text(compose_file())
        engine = ComposeEngine(root, ComposeSpec(project=project))
        try:
            subprocess.run(["docker-compose", "-p", project, "up", "-d"], cwd=root, check=True, capture_output=True)
            timed_restart(engine, 4)  # settle: every service healthy once
            single = statistics.median(single_recreate(engine, "crawl4ai") for _ in range(3))
            graph = restart_graph(engine.services(), list(STACK))
            limit = critical_path(graph, {name: single + delay for name, (delay, _) in STACK.items()})
            measured = statistics.median(timed_restart(engine, 4) for _ in range(2))
            sequential = timed_sequential(engine, topological(graph))
            floors = {}
            for name in STACK:  # each alone, while everything it depends on is up
                _, down = downtime(client, project, functools.partial(single_recreate, engine, name))
                floors[name] = down[name]
            # Downtime: three runs of each strategy, interleaved so that drift on the machine falls on
            # both alike; each service's median.
            samples = [
                (
                    downtime(client, project, lambda: timed_restart(engine, 4))[1],
                    downtime(client, project, lambda: previous_strategy(engine, project, root, 4))[1],
                )
                for _ in range(RUNS)
            ]
            new_down = {n: statistics.median(new[n] for new, _ in samples) for n in STACK}
            old_down = {n: statistics.median(old[n] for _, old in samples) for n in STACK}
            # Wall time without the sampler, whose polling loads a 2-core machine, interleaved likewise.
            pairs = [
                (timed_restart(engine, 4), timed(lambda: previous_strategy(engine, project, root, 4)))
                for _ in range(WALL_RUNS)
            ]
            new_wall = statistics.median(new for new, _ in pairs)
            old_wall = statistics.median(old for _, old in pairs)
        finally:
            subprocess.run(["docker-compose", "-p", project, "down", "-t", "0"], cwd=root, capture_output=True)
    print(f"services: {len(STACK)}; single-service recreate R = {single:.2f} s (beyond the service's ready delay)")
    print(f"critical-path limit:   {limit:6.2f} s")
    print(f"measured (parallel 4): {measured:6.2f} s")
    print(f"sequential baseline:   {sequential:6.2f} s")
    ratio = measured / limit
    print(f"summary: measured/limit = {ratio:.2f} (goal <= {GOAL}), sequential/measured = {sequential / measured:.2f}")
    print(f"downtime per service (s), medians of {RUNS} runs: service  floor  stop-late  previous")
    for name in STACK:
        print(f"  {name:9} {floors[name]:6.2f}  {new_down[name]:9.2f}  {old_down[name]:8.2f}")
    floor_sum, new_sum, old_sum = sum(floors.values()), sum(new_down.values()), sum(old_down.values())
    worst = max(new_down, key=lambda n: new_down[n])
    print(
        f"sum of floors {floor_sum:.1f} s; stop-late {new_sum:.1f} s ({new_sum / floor_sum:.2f}x, goal <= 1.3); "
        f"previous {old_sum:.1f} s ({old_sum / floor_sum:.2f}x)"
    )
    print(f"worst service: {worst} {new_down[worst]:.1f} s (floor {floors[worst]:.1f} s)")
    print(
        f"wall time, without the sampler, median of {WALL_RUNS} interleaved: stop-late {new_wall:.2f} s, "
        f"previous {old_wall:.2f} s ({new_wall / old_wall:.2f}x, goal <= 1.1)"
    )
    return 0 if ratio <= GOAL and new_sum <= 1.3 * floor_sum and new_wall <= 1.1 * old_wall else 1


if __name__ == "__main__":
    sys.exit(main())
