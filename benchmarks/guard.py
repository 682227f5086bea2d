"""`rotation guard` on a large repository: 10,000 small text files and a few large ones.

Prints the wall time of the real command over all of them (end to end, as pre-commit runs it),
the core scan alone, and the naive way measured in the same run (every value searched for
separately in every file), with their ratio.

    python benchmarks/guard.py
"""

from __future__ import annotations

import random
import shutil
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rotation import envfile
from rotation.backup import BackupStore
from rotation.config import load
from rotation.guard import Values, scan, values_of

REPO = Path(__file__).resolve().parent.parent
SMALL, LARGE, LARGE_MB = 10_000, 4, 8


def _text(rng: random.Random, size: int) -> str:
    words = ["def", "return", "import", "value", "config", "service", "# comment", "x = 1", "print(x)"]
    out, length = [], 0
    while length < size:
        line = " ".join(rng.choice(words) for _ in range(8)) + "".join(rng.choices(string.ascii_letters, k=12))
        out.append(line)
        length += len(line) + 1
    return "\n".join(out) + "\n"


def _token(rng: random.Random) -> bytes:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=32)).encode()


def main() -> None:
    rng = random.Random(7)
    base = Path(tempfile.mkdtemp(prefix="rotation-guard-bench-"))
    try:
        stack = base / "stack"
        shutil.copytree(REPO / "examples" / "localai", stack, ignore=shutil.ignore_patterns("backups"))
        shutil.copy(REPO / "secrets-config.yaml", stack / "secrets-config.yaml")
        files = []
        for i in range(SMALL):
            path = stack / "src" / f"d{i % 100}" / f"f{i}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_text(rng, rng.randint(200, 3000)))
            files.append(str(path.relative_to(stack)))
        secret = envfile.read(stack / ".env").get("JWT_SECRET") or ""
        for i in range(LARGE):
            path = stack / "data" / f"large{i}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            body = _text(rng, LARGE_MB << 20)
            path.write_text(body + (f"leak = {secret}\n" if i == 0 else ""))
            files.append(str(path.relative_to(stack)))
        total = sum((stack / f).stat().st_size for f in files) / (1 << 20)

        config = load(stack / "secrets-config.yaml")
        store = BackupStore.for_stack(stack, config.backup.directory)
        values = values_of(config, stack, store)
        listed = [f for spec in config.secrets.values() for f in spec.files]

        started = time.perf_counter()
        result = scan(files, stack, values, root=stack, backups=store.directory, listed=listed)
        core = time.perf_counter() - started
        assert [f.secret for f in result.findings] == ["JWT_SECRET"], result.findings

        started = time.perf_counter()
        naive_hits = 0
        for name in files:
            data = (stack / name).read_bytes()
            naive_hits += sum(1 for value in values.names if value in data)  # one search per value
        naive = time.perf_counter() - started
        assert naive_hits == 1

        # After 20 rotations, the backups hold 20 earlier values of every secret: 21x as many values.
        many = Values({**values.names, **{_token(rng): ("OLD",) for _ in range(20 * len(values.names))}}, values.short)
        started = time.perf_counter()
        scan(files, stack, many, root=stack, backups=store.directory, listed=listed)
        core_many = time.perf_counter() - started
        started = time.perf_counter()
        for name in files:
            data = (stack / name).read_bytes()
            sum(1 for value in many.names if value in data)
        naive_many = time.perf_counter() - started

        rotation = shutil.which("rotation", path=str(Path(sys.executable).parent)) or "rotation"
        started = time.perf_counter()
        done = subprocess.run([rotation, "guard", *files], cwd=stack, capture_output=True, text=True)
        command = time.perf_counter() - started
        assert done.returncode == 1 and "JWT_SECRET" in done.stdout, done.stderr

        print(
            f"files: {len(files)} ({SMALL} small, {LARGE} of {LARGE_MB} MB), {total:.0f} MB; "
            f"values: {len(values.names)}"
        )
        print(f"rotation guard FILE... (end to end): {command:.2f} s")
        print(f"scan, one matcher per file:          {core:.2f} s ({total / core:.0f} MB/s)")
        print(f"naive, one search per value:         {naive:.2f} s")
        print(
            f"with {len(many.names)} values (20 rotations in backups): scan {core_many:.2f} s, naive {naive_many:.2f} s"
        )
        print(
            f"summary: naive/scan = {naive / core:.2f}x with {len(values.names)} values, "
            f"{naive_many / core_many:.2f}x with {len(many.names)}; the whole command takes {command:.2f} s"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
