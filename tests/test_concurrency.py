"""Rotations started at the same moment wait for each other, and only one goes through until it is
verified; the stack is never left inconsistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from rotation import envfile
from rotation.backup import BackupStore
from rotation.errors import LockedError
from rotation.fsio import locked

pytestmark = pytest.mark.e2e  # two real processes racing for one stack are the point

FILES = (".env", "supabase/docker/.env")


def assert_consistent(files: dict[str, bytes]) -> None:
    parsed = [envfile.parse(data.decode()) for data in files.values()]
    for key in ("JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY", "DASHBOARD_PASSWORD"):
        assert len({p.get(key) for p in parsed}) == 1, key
    secret = parsed[0].get("JWT_SECRET")
    assert secret
    for key in ("ANON_KEY", "SERVICE_ROLE_KEY"):
        jwt.decode(parsed[0].get(key) or "", secret, algorithms=["HS256"])  # raises if it does not verify


def test_simultaneous_rotations_let_one_through_and_every_state_agrees(stack: Path) -> None:
    env = {**os.environ, "NO_COLOR": "1"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "rotation", "rotate", "--json", *(["--secrets", "JWT_SECRET"] if i % 2 else [])],
            cwd=stack,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    through = [json.loads(out)["backup"] for run, (out, _) in zip(runs, outputs, strict=True) if run.returncode == 0]
    assert len(through) == 1, [err for _, err in outputs]
    refused = [json.loads(out) for run, (out, _) in zip(runs, outputs, strict=True) if run.returncode != 0]
    assert all(e["exit_code"] == 4 and f"run {through[0]}" in e["error"] for e in refused), refused
    assert_consistent({name: (stack / name).read_bytes() for name in FILES})
    store = BackupStore.for_stack(stack, "backups/secrets")
    backups = store.all()
    assert [b.id for b in backups] == through  # the refused ones took no backup and changed nothing
    assert_consistent({name: backups[0].read(name) for name in FILES})


def test_a_held_lock_makes_a_second_rotation_wait_then_refuse(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    with locked(lock, timeout=1), pytest.raises(LockedError, match="another rotation"), locked(lock, timeout=0.2):
        pass
    with locked(lock, timeout=0.2):
        pass  # released when the holder is done
