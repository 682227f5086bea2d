"""How long a client finds `api` unavailable while it is replaced, stop-late against start-first, in one run.

The stack is tests/fixtures/startfirst: `api` has a container_name and needs 3 s to be ready; its
`probe` asks it by name every 0.05 s, with a 1 s timeout and one retry, as a proxy does. Two
copies run at once, identical but for api's `deploy.update_config.order` (stop-first in one,
start-first in the other), and take turns, RUNS times each, for three cases: rotating API_TOKEN
(only api reads it), rotating DB_PASSWORD (db is replaced stop-late under api), and a replacement
that never turns healthy (a 40-character token) with its rollback. Medians are printed.

The goal (issue 25): start-first at most 0.25 s in every case. Needs DOCKER_HOST (see
.ci/engine.sh) and docker-compose. Run: python benchmarks/zero_downtime.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import yaml
from docker import DockerClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import enginestack

RUNS = 3
CASES = {"API_TOKEN": "API_TOKEN", "DB_PASSWORD": "DB_PASSWORD", "failed replacement": "API_TOKEN"}
GOAL = 0.25


@contextmanager
def stack(base: Path, client: DockerClient, order: str) -> Iterator[tuple[Path, str]]:
    """The fixture stack with api declaring `order`, up and healthy."""
    (base / order).mkdir()
    with enginestack.from_fixture(base / order, client, "startfirst") as (root, project):
        compose = root / "docker-compose.yml"
        model = yaml.safe_load(compose.read_text())
        if model["services"]["api"]["deploy"]["update_config"]["order"] != order:
            compose.write_text(compose.read_text().replace("order: start-first", f"order: {order}"))
            subprocess.run(["docker-compose", "up", "-d"], cwd=root, check=True, capture_output=True)
            enginestack.wait_healthy(client, project)
        yield root, project


def run(client: DockerClient, root: Path, project: str, case: str) -> float:
    """One pipeline for `case`; the seconds the probe found api unavailable."""
    config = root / "secrets-config.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["secrets"]["API_TOKEN"]["length"] = 40 if case == "failed replacement" else 32
    config.write_text(yaml.safe_dump(raw))
    enginestack.forget_asks(client, project)
    done = subprocess.run(
        [sys.executable, "-m", "rotation", "precheck", "rotate", "--secrets", CASES[case], "restart", "verify"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != (1 if case == "failed replacement" else 0):
        print(done.stdout, done.stderr, file=sys.stderr)
    enginestack.wait_healthy(client, project)
    return enginestack.unavailable(client, project)[0]


def main() -> None:
    if not os.environ.get("DOCKER_HOST"):
        sys.exit("DOCKER_HOST is not set: start the engine first (source .ci/engine.sh && engine_start)")
    client = docker.from_env()
    enginestack.ensure_image(client)
    down: dict[str, dict[str, list[float]]] = {case: {"stop-first": [], "start-first": []} for case in CASES}
    with (
        tempfile.TemporaryDirectory() as base,
        stack(Path(base), client, "stop-first") as late,
        stack(Path(base), client, "start-first") as first,
    ):
        for _ in range(RUNS):
            for case in CASES:
                for order, (root, project) in (("stop-first", late), ("start-first", first)):
                    down[case][order].append(run(client, root, project, case))
    print("api unavailable to a client that asks by name every 0.05 s (1 s timeout, one retry),")
    print(f"precheck rotate restart verify, medians of {RUNS} runs per strategy, taking turns")
    print(f"{'case':<20}{'stop-late s':>12}{'start-first s':>15}")
    for case, per in down.items():
        print(f"{case:<20}{statistics.median(per['stop-first']):>12.2f}{statistics.median(per['start-first']):>15.2f}")
    worst = max(max(per["start-first"]) for per in down.values())
    verdict = "met" if worst <= GOAL else "NOT met"
    print(f"goal: start-first at most {GOAL} s in every run: {verdict} (worst {worst:.2f} s)")


if __name__ == "__main__":
    main()
