"""How far the stack travels: the functions of `rotation/` that a rotation hands the `Stack` to.

A real `rotate --secrets JWT_SECRET` of the bundled example stack runs in-process under a profiler.
Every function of the package that is called with the stack among its arguments (or as `self`) is
a stay; its module is visited. Followed as data, the stack also stays where a function is given
something one of its methods handed out (its backup store, readers, footprints). A call with the
stack from one module into a module of a higher layer is a climb: layers come from the package's
own dependencies (see `layers`), so a climb is a lower layer calling back up into one that builds
on it.

Run: python benchmarks/stack_walk.py [--against CHECKOUT]  (another checkout of the project, such
as an older commit in a git worktree, measured the same way beside this one).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def layers(package: Path) -> dict[str, int]:
    """Each module of the package (`runs`, `targets.vault`) to its layer in its dependency graph:
    every import of the package's own modules (at module level, for types, deferred into a
    function, or through `lazy("...")`), and a package on the modules it holds (a registry such as
    `targets` imports its kinds by name). A cycle is cut where the walk, in name order, closes it."""
    uses: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        folder = parts[:-1]
        name = ".".join(folder if parts[-1] == "__init__" else parts)
        found = {f"{name}.{p.stem}".lstrip(".") for p in path.parent.glob("*.py")} if parts[-1] == "__init__" else set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = list(folder[: len(folder) - (node.level - 1)])
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                found.add(target)
                found.update(f"{target}.{alias.name}".lstrip(".") for alias in node.names)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("rotation."):
                found.add(node.value.removeprefix("rotation."))
        uses[name] = found - {name, ""}
    modules = set(uses)
    level: dict[str, int] = {}

    def depth(name: str, path: frozenset[str]) -> int:
        if name not in level:
            below = [depth(d, path | {name}) for d in sorted(uses[name] & modules) if d not in path | {name}]
            level[name] = 1 + max(below) if below else 0
        return level[name]

    for name in sorted(modules):
        depth(name, frozenset())
    return level


def qualname(frame: FrameType) -> str:
    """`Stack.engine`, `rotate`: the function's name with its class (Python 3.11 and later)."""
    code = frame.f_code
    return str(getattr(code, "co_qualname", code.co_name))


@contextmanager
def traced(package: Path, is_stack: Any) -> Iterator[dict[str, set[tuple[str, ...]]]]:
    """Record, while active, the stays (module, function) of the `Stack` itself, those of the stack
    followed as data (the `Stack` and every object one of its methods or properties hands out: its
    backup store, engine, readers, footprints), and the climbs (from module, to module, function)."""
    root = str(package)
    level = layers(package)
    found: dict[str, set[tuple[str, ...]]] = {"itself": set(), "as data": set(), "climbs": set()}
    parts: dict[int, object] = {}  # what the stack handed out, kept alive so that ids stay unique

    def module_of(frame: FrameType) -> str | None:
        filename = frame.f_code.co_filename
        if not filename.startswith(root):
            return None
        names = Path(filename).relative_to(package).with_suffix("").parts
        return ".".join(names[:-1] if names[-1] == "__init__" else names)

    def arguments(frame: FrameType) -> list[object]:
        code = frame.f_code
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        return [frame.f_locals.get(name) for name in names]

    def of_stack(value: object) -> bool:
        return is_stack(value) or id(value) in parts

    def profile(frame: FrameType, event: str, arg: object) -> None:
        module = module_of(frame)
        if module is None:
            return
        given = arguments(frame)
        handed_out = module == "stack" and qualname(frame).startswith("Stack.") and given and is_stack(given[0])
        if event == "return" and handed_out and not isinstance(arg, (str, int, float, Path)):
            if arg is not None:
                parts[id(arg)] = arg
            return
        if event != "call" or not any(of_stack(value) for value in given):
            return
        found["as data"].add((module, qualname(frame)))
        if any(is_stack(value) for value in given):
            found["itself"].add((module, qualname(frame)))
        caller = frame.f_back
        while caller is not None and module_of(caller) is None:  # through a comprehension or a library
            caller = caller.f_back
        origin = module_of(caller) if caller is not None else None
        if origin is not None and origin != module and level.get(module, 0) > level.get(origin, 0):
            found["climbs"].add((origin, module, qualname(frame)))

    sys.setprofile(profile)
    try:
        yield found
    finally:
        sys.setprofile(None)


def measure() -> dict[str, Any]:
    """One rotation of a copy of the bundled example stack, traced; the figures as data."""
    import rotation
    from rotation.cli import program

    package = Path(rotation.__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "stack"
        shutil.copytree(Path(rotation.__file__).resolve().parent.parent / "examples" / "localai", stack)
        here = os.getcwd()
        os.chdir(stack)
        out = StringIO()
        try:

            def is_stack(value: object) -> bool:
                kind = type(value)
                return kind.__name__ == "Stack" and kind.__module__ == "rotation.stack"

            with traced(package, is_stack) as found, redirect_stdout(out), redirect_stderr(out):
                program.run(["rotation", "rotate", "--secrets", "JWT_SECRET"], exit=False)
        finally:
            os.chdir(here)
    return {
        **{kind: len(found[kind]) for kind in ("itself", "as data")},
        **{f"{kind} modules": sorted({m for m, _ in found[kind]}) for kind in ("itself", "as data")},
        "climbs": sorted(f"{a} -> {b}.{f}" for a, b, f in found["climbs"]),
        "lines": sum(len(p.read_text().splitlines()) for p in package.rglob("*.py")),
    }


def main() -> int:
    if sys.argv[1:2] == ["--json"]:
        print(json.dumps(measure()))
        return 0
    checkouts = {"this checkout": REPO}
    if sys.argv[1:2] == ["--against"] and len(sys.argv) == 3:
        checkouts = {"against": Path(sys.argv[2]).resolve(), **checkouts}
    rows = {}
    for label, checkout in checkouts.items():
        env = {**os.environ, "PYTHONPATH": str(checkout), "NO_COLOR": "1"}
        done = subprocess.run(
            [sys.executable, __file__, "--json"], cwd=checkout, env=env, capture_output=True, text=True, check=True
        )
        rows[label] = json.loads(done.stdout.splitlines()[-1])
    print(f"{'':16} {'the Stack: stays':>17} {'modules':>8} {'as data: stays':>15} {'modules':>8} {'climbs':>7}")
    for label, row in rows.items():
        print(
            f"{label:16} {row['itself']:>17} {len(row['itself modules']):>8} {row['as data']:>15}"
            f" {len(row['as data modules']):>8} {len(row['climbs']):>7}"
        )
    for label, row in rows.items():
        print(f"\n{label} ({row['lines']} lines in the package)")
        print(f"  the Stack itself visits: {', '.join(row['itself modules'])}")
        print(f"  as data it visits: {', '.join(row['as data modules'])}")
        print("  climbs: " + (", ".join(row["climbs"]) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
