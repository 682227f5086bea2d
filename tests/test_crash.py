"""A rotation killed at any point between two writes is put right by the next command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rotation import envfile

from . import crashpoints
from .conftest import CLI

pytestmark = pytest.mark.e2e  # kill -9 of a real process at each crash point is the point

FILES = (".env", "supabase/docker/.env")

# Steps of a JWT_SECRET rotation's commit (crashpoints): the journal, two staged copies, the
# two stack files, the journal's removal, the staged copies' removal.
WRITES = 7
JOURNAL_GONE = 6  # killed after this many steps or more: the run had committed


def consistent(stack: Path) -> bool:
    secrets = {envfile.read(stack / name).get("JWT_SECRET") for name in FILES}
    return len(secrets) == 1


@pytest.mark.parametrize("killed_before", range(WRITES + 1))
def test_next_command_repairs_a_killed_rotation(stack: Path, cli: CLI, killed_before: int) -> None:
    original = {name: (stack / name).read_bytes() for name in FILES}
    child = crashpoints.run(stack, killed_before, "rotate", "JWT_SECRET")
    if killed_before == WRITES:
        assert child.returncode == 0, child.stderr
        assert consistent(stack)
        assert (stack / FILES[0]).read_bytes() != original[FILES[0]]
        return
    assert child.returncode == -9
    ran = cli("restore", "--list", "--json")
    assert ran.code == 0, ran.err
    assert not (stack / "backups/secrets/journal.json").exists()
    assert not list((stack / "backups/secrets").glob("*/staged")), "staged new values left behind"
    if killed_before >= JOURNAL_GONE:  # committed: all new, and nothing left to recover
        assert consistent(stack) and (stack / FILES[0]).read_bytes() != original[FILES[0]]
        return
    for name in FILES:
        assert (stack / name).read_bytes() == original[name], f"{name} not repaired after kill #{killed_before}"
    if killed_before >= 1:
        assert "recovered an interrupted run" in ran.err
        assert json.loads(ran.out)[0]["status"] == "rolled-back"


def test_kill_between_the_two_files_leaves_them_disagreeing_until_the_next_command(stack: Path, cli: CLI) -> None:
    child = crashpoints.run(stack, 4, "rotate", "JWT_SECRET")
    assert child.returncode == -9
    assert not consistent(stack)  # the crash window is real...
    assert cli("rotate", "--dry-run").code == 0  # ...and any next command closes it first
    assert consistent(stack)
    assert os.stat(stack / ".env").st_mode & 0o777 == 0o600


def test_a_killed_restore_of_a_deleted_file_is_undone_to_the_state_before_it(stack: Path, cli: CLI) -> None:
    assert cli("rotate", "--secrets", "JWT_SECRET").code == 0
    backup = json.loads(cli("restore", "--list", "--json").out)[0]["id"]
    (stack / ".env").unlink()  # the user lost the root .env; the restore will recreate it
    other = (stack / FILES[1]).read_bytes()
    # journal, two staged copies, then the first stack file: killed before the second
    child = crashpoints.run(stack, 4, "restore", backup)
    assert child.returncode == -9, child.stderr
    assert (stack / ".env").exists()  # half-way: created, the other file not yet restored
    ran = cli("restore", "--list")
    assert "recovered an interrupted run" in ran.err
    assert not (stack / ".env").exists()  # back to the state before the restore, as a whole
    assert (stack / FILES[1]).read_bytes() == other
