"""Work that grows with input grows linearly: secrets x files x lines, in three sizes.

Each size builds a stack on disk (every file has LINES lines; each secret sits in 10 files) and
times what a rotation computes before writing: reading and validating every file, planning, and
rendering every new file. Run: python benchmarks/scale.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from rotation.config import check_stack, load
from rotation.plan import make_plan, render_files

SIZES = [(10, 1, 500), (100, 10, 5000), (1000, 100, 5000)]  # secrets, files, lines per file
GOAL_SECONDS = 1.0


def build(root: Path, secrets: int, files: int, lines: int) -> None:
    names = [f"SECRET_{i:04d}" for i in range(secrets)]
    per_file: dict[int, list[str]] = {f: [] for f in range(files)}
    config = {}
    for i, name in enumerate(names):
        homes = sorted({(i + k) % files for k in range(min(10, files))})
        for f in homes:
            per_file[f].append(name)
        config[name] = {"type": "random", "length": 32, "files": [f"env/{f:03d}.env" for f in homes]}
    (root / "env").mkdir()
    for f, keys in per_file.items():
        body = [f"{key}={'x' * 32}" for key in keys]
        body += [f"# filler line {n}" if n % 3 else f"OTHER_{f}_{n}=value-{n}" for n in range(lines - len(body))]
        (root / f"env/{f:03d}.env").write_text("\n".join(body) + "\n")
    (root / "secrets-config.yaml").write_text(yaml.safe_dump({"secrets": config}))


def measure(root: Path) -> float:
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        config = load(root / "secrets-config.yaml")
        files = check_stack(config, root)
        plan = make_plan(config, files)
        render_files(plan, files)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> int:
    results = []
    for secrets, files, lines in SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            build(root, secrets, files, lines)
            seconds = measure(root)
        total_lines = files * lines
        results.append((secrets, files, lines, seconds, total_lines))
        print(
            f"{secrets:5d} secrets x {files:3d} files x {lines:5d} lines: {seconds * 1000:8.1f} ms"
            f"  ({seconds / total_lines * 1e6:6.2f} us per line, {seconds / secrets * 1e3:6.3f} ms per secret)"
        )
    middle, large = results[-2], results[-1]
    growth, input_growth = large[3] / middle[3], large[4] / middle[4]
    print(
        f"summary: largest size {large[3]:.3f} s (goal < {GOAL_SECONDS:.0f} s); from the middle size to the largest, "
        f"time grew {growth:.1f}x for {input_growth:.0f}x the lines: {growth / input_growth:.2f}x linear"
    )
    return 0 if large[3] < GOAL_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
