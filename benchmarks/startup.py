"""Start-up cost: `rotation --help` and `rotation rotate --dry-run` against a bare `python -c pass`.

Each command runs several times, alternating, and the medians are compared. It also checks that
neither command imports the docker SDK or psycopg. Run: python benchmarks/startup.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = 9
GOAL = 0.35  # seconds over a bare interpreter, for --help


def timed(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True, env={**os.environ, "NO_COLOR": "1"})
    return time.perf_counter() - started


def heavy_imports(argv: list[str], cwd: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]], cwd=cwd, capture_output=True, text=True, check=True
    )
    names = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    return sorted(n for n in names if n in ("docker", "psycopg"))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "stack"
        shutil.copytree(REPO / "examples" / "localai", stack)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "rotation --help": [sys.executable, "-m", "rotation", "--help"],
            "rotation rotate --dry-run": [sys.executable, "-m", "rotation", "rotate", "--dry-run"],
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(RUNS):
            for name, argv in commands.items():
                samples[name].append(timed(argv, stack))
        medians = {name: statistics.median(values) for name, values in samples.items()}
        base = medians["python -c pass"]
        for name, median in medians.items():
            print(
                f"{name:28s} median {median * 1000:7.1f} ms  +{(median - base) * 1000:6.1f} ms  {median / base:5.1f}x"
            )
        for name in ("rotation --help", "rotation rotate --dry-run"):
            found = heavy_imports(commands[name], stack)
            print(f"{name:28s} imports docker/psycopg: {', '.join(found) or 'neither'}")
    over = medians["rotation --help"] - base
    print(f"summary: rotation --help costs {over:.3f} s over python -c pass (goal <= {GOAL} s)")
    return 0 if over <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
