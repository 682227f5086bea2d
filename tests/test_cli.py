"""The `rotation` and `inv` programs as a new user meets them: safe flags, clear output, honest exit codes."""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rotation import audit
from rotation.errors import EXIT_CODES, RotationError
from rotation.fsio import locked
from rotation.tasks import SHORT_FLAGS, namespace

from .conftest import CLI, REPO, documented_keys, edited_config, finished, tree

BIN = Path(sys.executable).parent
ROTATION = [str(BIN / "rotation")] if (BIN / "rotation").exists() else [sys.executable, "-m", "rotation"]
INV = [str(BIN / "inv")] if (BIN / "inv").exists() else [sys.executable, "-m", "invoke"]
README = (REPO / "README.md").read_text(encoding="utf-8")


def program(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run an installed program as a user would, without colour unless the test asks for it."""
    full = {k: v for k, v in os.environ.items() if k not in ("ROTATION_ROOT", "FORCE_COLOR")}
    full.update({"NO_COLOR": "1", **(env or {})})
    return subprocess.run(list(argv), cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("flags", [["--dry"], ["-R"], ["-d"], ["-e"], ["--pty"], ["-w"]])
def test_invoke_core_flags_are_refused_by_rotation_and_write_nothing(stack: Path, flags: list[str]) -> None:
    before = tree(stack)
    ran = program(*ROTATION, *flags, "rotate", cwd=stack)
    assert ran.returncode == 2, ran.stdout
    assert "Rotated" not in ran.stdout and ran.stderr.count("\n") == 1, ran.stderr
    assert tree(stack) == before and not (stack / "backups").exists()


def test_invoke_dry_makes_every_inv_task_a_dry_run(stack: Path) -> None:
    before = tree(stack)
    env = {"INVOKE_ROTATION_ROOT": str(stack)}
    for flag in ("--dry", "-R"):
        ran = program(*INV, "-r", str(REPO), flag, "rotate", cwd=REPO, env=env)
        assert ran.returncode == 0, ran.stderr
        assert "dry run: nothing written" in ran.stdout
        ran = program(
            *INV, "-r", str(REPO), flag, "rotate", "--secrets", "JWT_SECRET", "restore", "--latest", cwd=REPO, env=env
        )
        assert tree(stack) == before, ran.stdout + ran.stderr
    assert not (stack / "backups").exists()


def test_missing_settings_file_is_an_error_naming_it(stack: Path) -> None:
    ran = program(*ROTATION, "-f", "prdo.yaml", "rotate", "--dry-run", cwd=stack)
    assert ran.returncode == 2 and "prdo.yaml" in ran.stderr and "Rotation plan" not in ran.stdout


def test_settings_file_selects_the_stack(stack: Path, tmp_path: Path) -> None:
    settings = tmp_path / "prod.yaml"
    settings.write_text(f"rotation:\n  root: {os.path.relpath(stack, tmp_path)}\n")  # from the file's folder
    ran = program(*ROTATION, "-f", "prod.yaml", "rotate", "--secrets", "JWT_SECRET", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    undo = re.search(r"undo: (.+)\)", ran.stdout)
    assert undo and f"-f {settings}" in undo[1]  # absolute: it also works after a `cd` to the stack
    # The undo command works exactly as printed, from where it was printed, and from the stack.
    path = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # where a user's `rotation` is
    again = subprocess.run(undo[1], shell=True, cwd=stack, capture_output=True, text=True, timeout=60, env=path)
    assert again.returncode == 0, again.stderr


def test_one_meaning_per_short_flag_and_none_for_destructive_flags() -> None:
    meaning: dict[str, str] = {}
    for name in namespace.task_names:
        for arg in namespace[name].get_arguments():
            longs = [n for n in arg.names if len(n) > 1]
            for short in (n for n in arg.names if len(n) == 1):
                assert meaning.setdefault(short, longs[0]) == longs[0], (name, short, longs, meaning[short])
            assert not (set(arg.names) & {"a", "d"}) or arg.names[0] not in (
                "accept-data-loss",
                "skip-backup",
                "no-rollback",
            )
            if arg.names[0] in ("accept-data-loss", "skip-backup", "no-rollback"):
                assert len(arg.names) == 1, arg.names
    assert set(meaning) <= set(SHORT_FLAGS.values())


def test_data_loss_flags_cannot_be_abbreviated(stack: Path) -> None:
    before = tree(stack)
    ran = program(*ROTATION, "rotate", "-a", "-d", "-s", "N8N_ENCRYPTION_KEY", cwd=stack)
    assert ran.returncode == 2 and tree(stack) == before


def test_accepted_data_loss_is_said_and_logged(stack: Path) -> None:
    ran = program(*ROTATION, "rotate", "--secrets", "N8N_ENCRYPTION_KEY", "--accept-data-loss", cwd=stack)
    assert ran.returncode == 0, ran.stderr
    assert "accepted: data loss from rotating N8N_ENCRYPTION_KEY" in ran.stdout
    entries, _ = audit.read(stack / "backups" / "secrets")
    assert entries[-1]["accept_data_loss"] is True and entries[-1]["task"] == "rotate"


def test_no_stack_here_is_an_error_for_every_task(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (["restore", "--list"], ["due"], ["log"], ["rotate", "--dry-run"], ["check"], ["precheck"]):
        ran = program(*ROTATION, *argv, cwd=empty)
        assert ran.returncode == 2, (argv, ran.stdout)
        assert "no stack found in" in ran.stderr and "ROTATION_ROOT" in ran.stderr, argv
        assert ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr
    assert list(empty.iterdir()) == []


def test_bundled_configuration_is_announced(stack: Path) -> None:
    (stack / "secrets-config.yaml").unlink()
    ran = program(*ROTATION, "rotate", "--dry-run", "due", "log", cwd=stack)
    assert ran.returncode == 0, ran.stderr
    assert "using the bundled configuration for the local AI stack" in ran.stderr and str(stack) in ran.stderr
    assert ran.stderr.count("bundled configuration") == 1  # once per command line, not once per task


def _clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    return clone


def _step(step: str, clone: Path) -> subprocess.CompletedProcess[str]:
    """One of the README's two set-up commands, as far as a test can run it: the main job, and the
    tests that use the example stack (the whole suite inside the suite would never end)."""
    env = {"PYTHONPATH": str(clone)}
    if step == "main":
        return program(*INV, "rotate", cwd=clone, env=env)
    return program(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not engine and not postgres",
        "tests/test_rotate.py", cwd=clone, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("order", [("main", "tests"), ("tests", "main")])
def test_readme_setup_commands_pass_in_either_order_and_restore_returns_the_example(
    tmp_path: Path, order: tuple[str, str]
) -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    for step in order:
        ran = _step(step, clone)
        assert ran.returncode == 0, (step, ran.stdout[-2000:], ran.stderr[-2000:])
    ran = program(*INV, "restore", "--latest", cwd=clone, env={"PYTHONPATH": str(clone)})
    assert ran.returncode == 0, ran.stderr
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == ""


def test_a_relative_root_counts_from_invoke_yaml_so_a_printed_command_works_from_the_stack(tmp_path: Path) -> None:
    """`inv` prints `cd STACK` before a follow-up (a failed rollback's steps): run there, inv still
    reads the repository's invoke.yaml, whose `root: examples/localai` must not be doubled."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    clone = _clone(tmp_path)
    stack = clone / "examples" / "localai"
    # As `.venv/bin/inv` outside an activated environment: inv is not on PATH, so it prints its path.
    env = {"PYTHONPATH": str(clone), "PATH": os.pathsep.join(p for p in os.defpath.split(os.pathsep) if p)}
    ran = program(*INV, "rotate", "--secrets", "JWT_SECRET", cwd=clone, env=env)
    undo = re.search(r"undo: (.+)\)", ran.stdout)
    assert ran.returncode == 0 and undo, ran.stdout + ran.stderr
    assert len(INV) > 1 or undo[1].startswith(f"{shlex.quote(INV[0])} restore"), undo[1]
    again = program("sh", "-c", f"cd {shlex.quote(str(stack))} && {undo[1]}", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == ""


def test_a_closed_pipe_ends_quietly(stack: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the program writes its first line, as `| head` can be
    env = {k: v for k, v in os.environ.items() if k != "ROTATION_ROOT"}
    done = subprocess.run([*ROTATION, "rotate", "--dry-run"], cwd=stack, stdout=write, stderr=subprocess.PIPE, env=env)
    os.close(write)
    assert b"Traceback" not in done.stderr and b"BrokenPipe" not in done.stderr, done.stderr


def _on_a_terminal(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[bytes, bytes]:
    """Run with stdout on a terminal and stderr into a file, as `rotation check 2>err.txt` does."""
    main, child = pty.openpty()
    full = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "ROTATION_ROOT")}
    done = subprocess.run(argv, cwd=cwd, stdout=child, stderr=subprocess.PIPE, env={**full, **env}, timeout=60)
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    return out, done.stderr


def test_colour_is_decided_per_stream(stack: Path) -> None:
    argv = [*ROTATION, "restore", "--latest"]  # an error on stderr, nothing on stdout
    _, err = _on_a_terminal(argv, stack, {})
    assert b"no rotation backup" in err and b"\033[" not in err
    _, err = _on_a_terminal(argv, stack, {"FORCE_COLOR": "1"})
    assert b"\033[" in err
    out, _ = _on_a_terminal([*ROTATION, "rotate", "--dry-run"], stack, {})
    assert b"\033[" in out
    out, _ = _on_a_terminal([*ROTATION, "rotate", "--dry-run"], stack, {"NO_COLOR": "1"})
    assert b"\033[" not in out


def test_backup_list_fits_100_columns(stack: Path) -> None:
    names = [f"LONG_SECRET_NAME_NUMBER_{i:02d}" for i in range(12)]
    env_text = "".join(f"{n}=value{i:030d}\n" for i, n in enumerate(names))
    (stack / ".env").write_text((stack / ".env").read_text() + env_text)
    with edited_config(stack) as raw:
        for n in names:
            raw["secrets"][n] = {"type": "random", "files": [".env"], "restart_services": ["n8n", "supabase-auth"]}
    assert program(*ROTATION, "rotate", "--secrets", ",".join(names), cwd=stack).returncode == 0
    ran = program(*ROTATION, "restore", "--list", cwd=stack)
    assert ran.returncode == 0
    assert max(len(line) for line in ran.stdout.splitlines()) <= 100, ran.stdout
    assert "more" in ran.stdout


def test_every_json_flag_prints_only_json_with_the_documenteddocumented_keys(stack: Path) -> None:
    def parsed(*argv: str) -> object:
        ran = program(*ROTATION, *argv, "--json", cwd=stack)
        return json.loads(ran.stdout)  # only JSON on stdout, whatever the exit code

    plan = parsed("rotate", "--dry-run")
    assert isinstance(plan, dict) and set(plan) == documented_keys("### `rotate --json`")
    assert set(plan["secrets"][0]) == documented_keys("### `rotate --json`: each of `secrets`")
    due = parsed("rotate", "--due")
    assert isinstance(due, dict) and due["rotated_secrets"] == [] and set(due) == set(plan)
    error = parsed("restore", "--latest")
    assert isinstance(error, dict) and set(error) == documented_keys("### errors with `--json`")
    assert error["exit_code"] == 2
    assert program(*ROTATION, "rotate", cwd=stack).returncode == 0
    restored = parsed("restore", "--latest", "--dry-run")
    assert isinstance(restored, dict) and set(restored) == documented_keys("### `restore --json`")
    listed = parsed("restore", "--list")
    assert isinstance(listed, list) and set(listed[0]) == documented_keys("### `restore --list --json`")
    logged = parsed("log")
    assert isinstance(logged, list) and set(logged[0]) == documented_keys("### `log --json`")
    assert parsed("due") == []


def test_exit_codes_are_documented_in_the_readme_and_in_help(stack: Path) -> None:
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", README[README.index("## Exit codes") :], re.M))
    assert {int(k) for k in table} == set(EXIT_CODES)
    codes = {getattr(cls, "exit_code", 1) for cls in _subclasses(RotationError)}
    assert codes <= set(EXIT_CODES)
    helped = program(*ROTATION, "--help", cwd=stack).stdout
    for code in EXIT_CODES:
        assert re.search(rf"^  {code}  ", helped, re.M), helped


def _subclasses(cls: type) -> list[type]:
    found: list[type] = [cls]
    sub: type
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


def test_an_unreachable_engine_is_one_line_and_its_own_exit_code(stack: Path) -> None:
    ran = program(*ROTATION, "check", cwd=stack, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert ran.returncode == 6, ran.stderr
    assert ran.stderr.count("\n") == 1 and "cannot reach the container engine" in ran.stderr
    assert "No such file or directory" in ran.stderr  # the reason in words, not a Python tuple
    assert "('" not in ran.stderr and "Connection aborted" not in ran.stderr and "Error(" not in ran.stderr


def test_waiting_for_the_lock_says_who_holds_it(stack: Path) -> None:
    directory = stack / "backups" / "secrets"
    directory.mkdir(parents=True, mode=0o700)
    with locked(directory / ".lock", 1, holder=f"pid {os.getpid()} (test) since now"):
        started = time.monotonic()
        ran = program(*ROTATION, "rotate", cwd=stack, env={"INVOKE_ROTATION_LOCK_TIMEOUT": "1"})
    assert ran.returncode == 4 and time.monotonic() - started < 30
    assert f"held by pid {os.getpid()} (test) since now" in ran.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_lock_timeout_must_be_a_finite_positive_number(stack: Path, value: str) -> None:
    ran = program(*ROTATION, "rotate", "--dry-run", cwd=stack, env={"INVOKE_ROTATION_LOCK_TIMEOUT": value})
    assert ran.returncode == 2 and "rotation.lock_timeout" in ran.stderr


def test_log_shows_history_with_dry_runs_and_data_loss_marked(stack: Path) -> None:
    assert program(*ROTATION, "rotate", "--secrets", "JWT_SECRET", cwd=stack).returncode == 0
    assert program(*ROTATION, "rotate", "--dry-run", cwd=stack).returncode == 0
    finished(stack)
    assert program(*ROTATION, "rotate", "-s", "N8N_ENCRYPTION_KEY", "--accept-data-loss", cwd=stack).returncode == 0
    ran = program(*ROTATION, "log", cwd=stack)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert "rotate data-loss" in lines[1] and "rotate dry-run" in lines[2] and "20" in lines[3]
    assert max(len(line) for line in lines) <= 100
    entries = json.loads(program(*ROTATION, "log", "--json", "--limit", "2", cwd=stack).stdout)
    assert [e["dry_run"] for e in entries] == [False, True]
    assert entries[0]["accept_data_loss"] is True and entries[0]["run"]
    assert entries[0]["secrets"] == ["N8N_ENCRYPTION_KEY"] and entries[0]["outcome"] == "ok"


def test_help_describes_the_tool_and_help_task_works(stack: Path) -> None:
    helped = program(*ROTATION, "--help", cwd=stack)
    assert helped.stdout.startswith("rotation: automated secret rotation")
    assert "precheck rotate restart verify" in helped.stdout
    assert "--prompt-for-sudo-password" not in helped.stdout and "--write-pyc" not in helped.stdout
    task_help = program(*ROTATION, "help", "rotate", cwd=stack)
    assert task_help.returncode == 0 and "--accept-data-loss" in task_help.stdout


def test_unknown_names_suggest_the_closest(stack: Path) -> None:
    ran = program(*ROTATION, "rotat", cwd=stack)
    assert ran.returncode == 2 and "did you mean 'rotate'" in ran.stderr
    ran = program(*ROTATION, "rotate", "--secrets", "JWT_SECRT", "--dry-run", cwd=stack)
    assert ran.returncode == 2 and "did you mean 'JWT_SECRET'" in ran.stderr


def test_readme_never_points_outside_the_repository() -> None:
    assert "../shared" not in README and "shared/" not in README
    pages = sorted((REPO / "docs").glob("*.md"))
    assert pages, "docs/ holds the reference the README links to"
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "../shared" not in text and "shared/" not in text, page
        for target in re.findall(r"\]\(([^)#\s]+)", text):  # every relative link lands on a file
            if "://" not in target:
                assert (page.parent / target).exists(), (page.name, target)
    for target in re.findall(r"\]\((docs/[^)#\s]+)", README):
        assert (REPO / target).exists(), target
    for path in (REPO / ".ci").iterdir():
        assert "../shared" not in path.read_text(), path
    assert shutil.which("git")


def test_json_errors_say_what_failed_which_key_or_file_and_what_to_run_next(stack: Path, inproc: CLI) -> None:
    """A script branches on `kind`, fixes `key` in `file`, or runs `steps`, without parsing the message."""
    ran = inproc("rotate", "--secrets", "JWT_SECRT", "--json")
    error = json.loads(ran.out)
    assert ran.code == 2 and error["kind"] == "selection" and error["key"] == "--secrets"
    assert "did you mean 'JWT_SECRET'" in error["error"] and "JWT_SECRET" in error["hint"].removeprefix("known: ")
    with edited_config(stack) as raw:
        raw["secrets"]["JWT_SECRET"]["length"] = 8
    error = json.loads(inproc("rotate", "--json").out)
    assert error["kind"] == "config" and error["key"] == "secrets.JWT_SECRET.length"
    assert error["file"] == str(stack / "secrets-config.yaml") and error["exit_code"] == 2
    with edited_config(stack) as raw:
        raw["secrets"]["JWT_SECRET"]["length"] = 64
    assert inproc("rotate", "--secrets", "JWT_SECRET").code == 0
    locked = json.loads(inproc("rotate", "--secrets", "DASHBOARD_PASSWORD", "--json").out)
    assert locked["kind"] == "locked" and locked["exit_code"] == 4
    finish, undo = locked["steps"]  # whole commands, spelled as the program was invoked
    assert finish.endswith(" restart verify") and undo.endswith(" restore --latest")
    assert finish.removesuffix(" restart verify") == undo.removesuffix(" restore --latest")
    assert inproc("restore", "--latest").code == 0
    refused = json.loads(inproc("rotate", "--secrets", "N8N_ENCRYPTION_KEY", "--json").out)
    assert refused["kind"] == "data-loss-refused" and refused["key"] == "N8N_ENCRYPTION_KEY"


@pytest.mark.parametrize("words", [("--help",), ("--list",), ("--complete", "--", "rotation", "ro")])
def test_help_list_and_completion_import_no_use_case(stack: Path, words: tuple[str, ...]) -> None:
    """They answer in a fraction of a second: the use cases, the configuration and the engines'
    SDKs load only when a task runs (benchmarks/startup.py measures the time)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "rotation", *words], cwd=stack, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    heavy = {"rotation.runs", "rotation.pipeline", "rotation.report", "rotation.config", "docker", "psycopg"}
    heavy |= {"cryptography", "apprise", "jwt", "hvac"}
    assert not loaded & heavy, sorted(loaded & heavy)


def test_each_task_parses_calls_and_presents_with_at_most_two_decisions() -> None:
    """The shell stays thin: an `if`, a conditional expression or a `try` in a task is a decision
    the core or the presenter should make, where it can be tested without the command line."""
    import ast

    tree = ast.parse((REPO / "rotation" / "tasks.py").read_text())
    tasks = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in namespace.task_names]
    assert len(tasks) == len(namespace.task_names)
    for node in tasks:
        decisions = sum(isinstance(inner, (ast.If, ast.IfExp, ast.Try)) for inner in ast.walk(node))
        assert decisions <= 2, (node.name, decisions)


def test_a_listing_is_not_logged_and_a_change_is(stack: Path, inproc: CLI) -> None:
    assert inproc("rotate", "--secrets", "JWT_SECRET").code == 0
    assert inproc("restore", "--list").code == 0
    logged = json.loads(inproc("log", "--json").out)
    assert [e["task"] for e in logged] == ["rotate"], logged


def test_task_help_names_what_each_flag_takes_and_shows_examples(stack: Path, inproc: CLI) -> None:
    ran = inproc("help", "restart")
    assert ran.code == 0, ran.text
    assert "STRING" not in ran.out and "Docstring:" not in ran.out
    assert "-t SECONDS, --timeout=SECONDS" in ran.out and "--services=NAME,..." in ran.out
    assert ran.out.split("Examples:", 1)[1].split()[:2] == ["rotation", "restart"]


def test_quiet_keeps_a_cron_log_to_results_warnings_and_errors(stack: Path, inproc: CLI) -> None:
    (stack / "secrets-config.yaml").unlink()  # the bundled configuration: a note on every run
    assert "using the bundled configuration" in inproc("due").err
    ran = inproc("-q", "due")
    assert ran.code == 0 and ran.err == "" and "no secret is due" in ran.out, ran.text
    assert "using the bundled configuration" in inproc("due").err  # the next command is not quiet


def test_inv_suggests_the_closest_task_as_rotation_does() -> None:
    ran = program(*INV, "rotat", cwd=REPO)
    assert ran.returncode == 2 and "inv: unknown task 'rotat' (did you mean 'rotate'?)" in ran.stderr, ran.stderr
    assert "Traceback" not in ran.stderr
