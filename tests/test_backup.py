"""The backup store alone, on real files: ids, copies, metadata, status, damage and retention."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from rotation.backup import METADATA, PREFIX, BackupStore, RunStatus
from rotation.errors import StorageError

NOW = time.mktime((2026, 12, 6, 12, 0, 0, 0, 0, -1))


@pytest.fixture
def store(tmp_path: Path) -> BackupStore:
    (tmp_path / ".env").write_bytes(b"A=1\n# kept byte for byte\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".env").write_bytes(b"B=2\n")
    return BackupStore.for_stack(tmp_path, "backups/secrets")


def test_a_run_copies_its_files_privately_and_ignores_itself_in_git(store: BackupStore) -> None:
    run = store.create("rotation", [".env", "sub/.env", ".env"], now=NOW)
    assert run.files == (".env", "sub/.env") and run.status == RunStatus.PLANNED
    assert run.read(".env") == b"A=1\n# kept byte for byte\n" and run.read("sub/.env") == b"B=2\n"
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(run.path.stat().st_mode) == 0o700
    assert (store.directory / ".gitignore").read_text().splitlines()[-1] == "*"


def test_runs_started_in_the_same_second_get_ids_of_their_own_in_order(store: BackupStore) -> None:
    ids = [store.create("rotation", [".env"], now=NOW).id for _ in range(3)]
    assert len(set(ids)) == 3 and ids[1] == f"{ids[0]}-2"
    assert [run.id for run in store.all()] == ids
    assert store.latest_rotation() is not None and store.latest_rotation().id == ids[-1]  # type: ignore[union-attr]


def test_an_update_merges_with_what_is_on_disk_now(store: BackupStore) -> None:
    run = store.create("rotation", [".env"], now=NOW)
    stale = run
    store.record_restart(run, ["db", "api"], at=NOW + 5)
    updated = store.update(stale, status=RunStatus.VERIFIED)  # an older copy must not drop the restart
    assert updated.status == RunStatus.VERIFIED
    assert updated.metadata["restarts"] == [{"at": NOW + 5, "services": ["api", "db"]}]
    assert store.recreated_since(NOW) == {"api", "db"} and store.recreated_since(NOW + 6) == set()


def test_a_damaged_run_is_listed_as_damaged_and_the_others_stay_usable(store: BackupStore) -> None:
    good = store.create("rotation", [".env"], now=NOW)
    bad = store.create("rotation", [".env"], now=NOW + 60)
    (bad.path / METADATA).write_text("{not json")
    assert [run.id for run in store.all()] == [good.id]
    assert "not JSON" in store.damaged()[bad.id]
    assert store.get(good.id).id == good.id


def test_a_linked_backup_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "backups").symlink_to(tmp_path / "elsewhere")
    store = BackupStore.for_stack(tmp_path, "backups/secrets")
    with pytest.raises(StorageError, match="symbolic link"):
        store.prepare()
    assert not any((tmp_path / "elsewhere").iterdir())


def test_retention_prunes_old_runs_but_keeps_the_ones_asked_for(store: BackupStore) -> None:
    old = store.create("rotation", [".env"], now=NOW - 100 * 86400)
    older = store.create("rotation", [".env"], now=NOW - 200 * 86400)
    recent = store.create("rotation", [".env"], now=NOW - 86400)
    pruned = store.prune(90, keep=[older.id], now=NOW)
    assert pruned == [old.id]
    assert {run.id for run in store.all()} == {older.id, recent.id}
    assert not (store.directory / f"{PREFIX}{old.id}").exists()
    assert json.loads((recent.path / METADATA).read_text())["kind"] == "rotation"
