"""Downtime of a whole rotation on Compose and on Swarm, same stack shape, measured in one run.

The stack of `tests/swarmstack.py`: `db` (one task, Swarm's default stop-first update) and `api`
(depends on db; on Swarm two tasks with `order: start-first`). Compose runs one container per
service, as compose files do without replicas. For each engine, `rotation precheck rotate
--secrets API_KEY,DB_PASSWORD restart verify` runs while a thread counts, every 0.1 s, each
service's containers whose healthcheck passes; a service's downtime is the time it had none.
Both stacks stay up and the two engines take turns, RUNS times each; medians are printed.

The goal (issue 13): 0 s on Swarm for every service with 2+ replicas and start-first, and no
worse than Compose for the rest. Needs DOCKER_HOST (see .ci/engine.sh), docker-compose, and an
engine that may be put in swarm mode for the run. Run: python benchmarks/swarm_downtime.py
"""

from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import yaml
from docker import DockerClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import swarmstack
from tests.enginestack import ensure_image

EVERY = 0.1
RUNS = 3
SERVICES = ("db", "api")


def compose_file() -> str:
    """The Swarm stack file as a plain compose file: one container per service, no Swarm secret
    (api's healthcheck then checks its key's length alone)."""
    model = yaml.safe_load(swarmstack.STACK_FILE)
    model.pop("version", None)
    model.pop("secrets", None)
    for body in model["services"].values():
        body.pop("deploy", None)
        body.pop("secrets", None)
    model["services"]["api"]["healthcheck"]["test"] = ["CMD-SHELL", "test $${#API_KEY} -eq 32"]
    return yaml.safe_dump(model, sort_keys=False)


def sample(count: Callable[[str], int], stop: threading.Event, seen: dict[str, list[tuple[float, int]]]) -> None:
    while not stop.is_set():
        moment = time.monotonic()
        for name in SERVICES:
            seen[name].append((moment, count(name)))
        stop.wait(EVERY)


def downtime(samples: list[tuple[float, int]]) -> float:
    """Seconds between consecutive samples during which the service had no healthy container."""
    return sum(later[0] - now[0] for now, later in itertools.pairwise(samples) if now[1] == 0)


def rotate(root: Path, count: Callable[[str], int]) -> tuple[dict[str, float], float, int]:
    """Run the pipeline while sampling; each service's downtime, the wall time and the exit code."""
    seen: dict[str, list[tuple[float, int]]] = {name: [] for name in SERVICES}
    stop = threading.Event()
    thread = threading.Thread(target=sample, args=(count, stop, seen), daemon=True)
    thread.start()
    began = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rotation",
            "precheck",
            "rotate",
            "--secrets",
            "API_KEY,DB_PASSWORD",
            "restart",
            "verify",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - began
    time.sleep(0.5)
    stop.set()
    thread.join()
    if done.returncode != 0:
        print(done.stdout, done.stderr, file=sys.stderr)
    return {name: downtime(samples) for name, samples in seen.items()}, wall, done.returncode


@contextmanager
def compose_stack(base: Path, client: DockerClient) -> Iterator[tuple[Path, Callable[[str], int]]]:
    project = "bdcompose"
    root = base / project
    root.mkdir()
    (root / "docker-compose.yml").write_text(compose_file())
    (root / ".env").write_text(f"DB_PASSWORD={'a' * 32}\nAPI_KEY={'b' * 32}\n")
    settings = swarmstack.config(project)
    del settings["engine"], settings["swarm"], settings["secrets"]["API_KEY"]["swarm_secret"]
    settings["compose"] = {"project": project}
    (root / "secrets-config.yaml").write_text(yaml.safe_dump(settings))

    def healthy(name: str) -> int:
        labels = [f"com.docker.compose.project={project}", f"com.docker.compose.service={name}"]
        return len(client.api.containers(filters={"label": labels, "health": "healthy"}))

    compose = ["docker-compose", "-p", project]
    subprocess.run([*compose, "up", "-d"], cwd=root, check=True, capture_output=True)
    try:
        deadline = time.monotonic() + 60
        while not all(healthy(n) for n in SERVICES) and time.monotonic() < deadline:
            time.sleep(0.2)
        yield root, healthy
    finally:
        subprocess.run([*compose, "down", "-t", "0"], cwd=root, capture_output=True, check=False)


@contextmanager
def swarm_stack(base: Path, client: DockerClient) -> Iterator[tuple[Path, Callable[[str], int]]]:
    with swarmstack.deployed(base, client) as (root, stack):
        yield root, lambda name: swarmstack.healthy_tasks(client, stack, name)


def main() -> None:
    if not os.environ.get("DOCKER_HOST"):
        sys.exit("DOCKER_HOST is not set: start the engine first (source .ci/engine.sh && engine_start)")
    client = docker.from_env()
    ensure_image(client)
    down: dict[str, dict[str, list[float]]] = {e: {n: [] for n in SERVICES} for e in ("compose", "swarm")}
    walls: dict[str, list[float]] = {"compose": [], "swarm": []}
    failed = 0
    with (
        tempfile.TemporaryDirectory() as base,
        swarmstack.swarm_mode(client),
        compose_stack(Path(base), client) as compose,
        swarm_stack(Path(base), client) as swarm,
    ):
        for _ in range(RUNS):
            for engine, (root, count) in (("compose", compose), ("swarm", swarm)):
                seconds, wall, code = rotate(root, count)
                failed += code != 0
                walls[engine].append(wall)
                for name in SERVICES:
                    down[engine][name].append(seconds[name])
    median = {e: {n: statistics.median(v) for n, v in per.items()} for e, per in down.items()}
    print(f"Rotation of API_KEY and DB_PASSWORD (precheck rotate restart verify), sampled every {EVERY} s,")
    print(f"medians of {RUNS} runs per engine, taking turns")
    print(f"{'service':<10}{'compose s down':>16}{'swarm s down':>14}   swarm shape")
    shapes = {"db": "1 task, stop-first", "api": "2 tasks, start-first"}
    for name in SERVICES:
        print(f"{name:<10}{median['compose'][name]:>16.2f}{median['swarm'][name]:>14.2f}   {shapes[name]}")
    walltime = {e: statistics.median(v) for e, v in walls.items()}
    print(f"{'wall time':<10}{walltime['compose']:>16.2f}{walltime['swarm']:>14.2f}")
    print(f"every run, api on swarm: {', '.join(f'{v:.2f}' for v in down['swarm']['api'])} s down")
    ratio = median["swarm"]["db"] / max(median["compose"]["db"], 1e-9)
    api = "met" if max(down["swarm"]["api"]) == 0 else "NOT met"
    print(f"goal: api 0 s on swarm in every run: {api}; db on swarm / compose: {ratio:.2f}x; failed runs: {failed}")


if __name__ == "__main__":
    main()
