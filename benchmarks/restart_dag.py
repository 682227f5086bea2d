"""Restart downtime against the dependency graph's limit, on a real Docker Engine.

A stack shaped like the local AI stack (a database, API services on it, a gateway on those, a
dashboard on the gateway, independent apps) where each service turns healthy a known time after
it starts. Measured in one run:

- R, the single-service recreate time: recreate one service and see it healthy, minus its delay;
- the limit: the critical path of the graph, each service costing R plus its ready delay;
- the downtime of `rollout.restart` over the graph, and of the same services one after another.

Needs DOCKER_HOST (see .ci/engine.sh) and docker-compose. Run: python benchmarks/restart_dag.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rotation import rollout
from rotation.compose import ComposeEngine
from rotation.config import ComposeSpec
from rotation.order import critical_path, restart_graph, topological
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
        finally:
            subprocess.run(["docker-compose", "-p", project, "down", "-t", "0"], cwd=root, capture_output=True)
    print(f"services: {len(STACK)}; single-service recreate R = {single:.2f} s (beyond the service's ready delay)")
    print(f"critical-path limit:   {limit:6.2f} s")
    print(f"measured (parallel 4): {measured:6.2f} s")
    print(f"sequential baseline:   {sequential:6.2f} s")
    ratio = measured / limit
    print(f"summary: measured/limit = {ratio:.2f} (goal <= {GOAL}), sequential/measured = {sequential / measured:.2f}")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
