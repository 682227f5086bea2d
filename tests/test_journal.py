"""The journal alone, on real files: a commit is all or nothing, and a run killed half-way is put
back by the next command from its journal, whatever state the journal and the staged copies are in.

The live target is a password held in memory that speaks the `LiveTarget` protocol (apply, revert,
which); the real PostgreSQL one goes through the same paths in test_postgres and test_crash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rotation import journal
from rotation.backup import BackupStore, Run, RunStatus
from rotation.errors import DatabaseError, Interrupted, RecoveryError, StorageError
from rotation.generate import Secret

OLD, NEW = Secret("old-password-1"), Secret("new-password-2")


@dataclass
class Password:
    """A database role's password, in memory: it refuses a login with any other value."""

    name: str
    value: Secret = OLD
    refuse: bool = False  # apply fails and leaves it as it was
    lost: bool = False  # apply changes it, then the connection is lost
    kind: str = "memory"
    calls: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"memory {self.name}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name}

    def check(self, current: Secret, secret: str) -> str:
        return "would change"

    def apply(self, current: Secret, new: Secret, secret: str) -> None:
        self.calls.append("apply")
        if self.refuse:
            raise DatabaseError(f"{self.label}: refused", unchanged=True)
        assert current == self.value
        self.value = new
        if self.lost:
            raise DatabaseError(f"{self.label}: connection lost")

    def revert(self, login: Secret, back_to: Secret, secret: str) -> None:
        self.calls.append("revert")
        assert login == self.value, "revert logs in with the value it holds"
        self.value = back_to

    def which(self, candidates: Mapping[str, Secret]) -> str | None:
        return next((name for name, value in candidates.items() if value == self.value), None)


class Killed(BaseException):
    """Stands in for kill -9: nothing in the commit catches it, so it leaves what a kill leaves."""


@pytest.fixture
def store(tmp_path: Path) -> BackupStore:
    (tmp_path / ".env").write_bytes(b"# root\nDB_PASSWORD=old-password-1\nOTHER=1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".env").write_bytes(b"DB_PASSWORD=old-password-1  # inline\n")
    return BackupStore.for_stack(tmp_path, "backups/secrets")


def rendered(root: Path) -> dict[str, bytes]:
    return {
        name: (root / name).read_bytes().replace(b"old-password-1", b"new-password-2") for name in (".env", "sub/.env")
    }


def files(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in (".env", "sub/.env")}


def change(target: Password) -> journal.LiveChange:
    return journal.LiveChange("DB_PASSWORD", ".env", target, OLD, NEW)


def started(store: BackupStore) -> Run:
    return store.create("rotation", [".env", "sub/.env"])


def test_a_commit_changes_the_database_then_every_file_and_leaves_no_journal(store: BackupStore) -> None:
    db = Password("db")
    new = rendered(store.root)
    run = started(store)
    assert journal.commit(store, run, new, [change(db)]) == {}
    assert db.value == NEW and files(store.root) == new
    assert journal.pending(store) is None and not (run.path / journal.STAGED).exists()
    assert run.read(".env").count(b"old-password-1") == 1  # the backup keeps what was there


def test_a_database_that_refuses_changes_nothing_at_all(store: BackupStore) -> None:
    before = files(store.root)
    db = Password("db", refuse=True)
    with pytest.raises(DatabaseError, match="memory db: refused"):
        journal.commit(store, started(store), rendered(store.root), [change(db)])
    assert db.value == OLD and db.calls == ["apply"] and files(store.root) == before
    assert journal.pending(store) is None


def test_a_second_database_failing_puts_the_first_back_and_says_so(store: BackupStore) -> None:
    before = files(store.root)
    first, second = Password("first"), Password("second", refuse=True)
    with pytest.raises(DatabaseError) as failed:
        journal.commit(store, started(store), rendered(store.root), [change(first), change(second)])
    assert first.value == OLD and first.calls == ["apply", "revert"]
    assert "Put back the password in memory first" in str(failed.value)
    assert files(store.root) == before and journal.pending(store) is None


def test_a_connection_lost_after_the_change_is_found_out_and_put_back(store: BackupStore) -> None:
    """The apply raised, but the password did change: `which` tells, and the undo reverts it."""
    db = Password("db", lost=True)
    with pytest.raises(DatabaseError, match="connection lost"):
        journal.commit(store, started(store), rendered(store.root), [change(db)])
    assert db.value == OLD and db.calls == ["apply", "revert"]


def test_a_file_that_cannot_be_written_puts_back_the_database_and_the_files_written(store: BackupStore) -> None:
    before = files(store.root)
    db = Password("db")
    new = rendered(store.root)
    new["missing/.env"] = b"DB_PASSWORD=new-password-2\n"  # its folder does not exist: the last write fails
    run = store.create("rotation", [".env", "sub/.env"])
    with pytest.raises(Exception) as failed:
        journal.commit(store, run, new, [change(db)])
    assert db.value == OLD and files(store.root) == before
    assert "the stack is as it was before this command" in str(failed.value)
    assert not (store.root / "missing").exists() and journal.pending(store) is None


def test_ctrl_c_during_the_commit_undoes_it_and_reports_an_interrupt(store: BackupStore) -> None:
    before = files(store.root)
    db, second = Password("db"), Password("second")

    def interrupted(current: Secret, new: Secret, secret: str) -> None:
        raise KeyboardInterrupt

    second.apply = interrupted  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        journal.commit(store, started(store), rendered(store.root), [change(db), change(second)])
    assert db.value == OLD and files(store.root) == before and journal.pending(store) is None


def dies_after_apply(db: Password) -> None:
    """Make `db` die the way kill -9 would, right after its password changed."""
    original = db.apply

    def apply_then_die(current: Secret, new: Secret, secret: str) -> None:
        original(current, new, secret)
        raise Killed

    db.apply = apply_then_die  # type: ignore[method-assign]


def recover(store: BackupStore, db: Password | None = None) -> str | None:
    return journal.recover(store, lambda entry: db or pytest.fail("no target"), lambda entry: pytest.fail("no store"))


@pytest.mark.parametrize("killed_at", ["database", "files"])
def test_a_run_killed_half_way_is_put_back_by_the_next_command(
    store: BackupStore, killed_at: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = files(store.root)
    db = Password("db")
    run = started(store)
    if killed_at == "database":  # killed once the database moved: no file was written yet
        dies_after_apply(db)
    else:  # killed after the first file: one file holds the new value, the other the old
        written: list[str] = []

        def write_then_die(root: Path, name: str, data: bytes) -> None:
            if written:
                raise Killed
            written.append(name)
            (root / name).write_bytes(data)

        monkeypatch.setattr(journal, "write_stack_file", write_then_die)
    with pytest.raises(Killed):
        journal.commit(store, run, rendered(store.root), [change(db)])
    monkeypatch.undo()
    assert (files(store.root)[".env"] == before[".env"]) == (killed_at == "database")
    assert db.value == NEW and journal.pending(store) is not None  # what a kill leaves: the journal
    said = recover(store, db)
    assert said is not None and "password in memory db" in said and "restored 2 files" in said
    assert db.value == OLD and files(store.root) == before
    assert journal.pending(store) is None and store.get(run.id).status == RunStatus.ROLLED_BACK
    assert recover(store, db) is None  # the next command finds nothing left to do


def test_a_run_killed_while_staging_touched_no_database(store: BackupStore) -> None:
    """The journal is written first; a kill before the staged copies exist leaves the database alone."""
    db = Password("db")
    run = started(store)
    entry = change(db).to_json()
    (store.directory / journal.JOURNAL).write_text(json.dumps({"run": run.id, "files": [".env"], "database": [entry]}))
    recover(store, db)
    assert db.calls == [] and journal.pending(store) is None


def test_a_database_on_neither_value_keeps_the_journal_for_a_person(store: BackupStore) -> None:
    db = Password("db")
    run = started(store)
    dies_after_apply(db)
    with pytest.raises(Killed):
        journal.commit(store, run, rendered(store.root), [change(db)])
    db.value = Secret("set-by-hand-meanwhile")
    with pytest.raises(RecoveryError, match="neither the old nor the new DB_PASSWORD") as failed:
        recover(store, db)
    assert "set-by-hand" not in str(failed.value) and journal.pending(store) is not None


@pytest.mark.parametrize(
    "written",
    [
        "{not json",
        json.dumps({"run": "x", "files": ".env", "database": []}),
        json.dumps({"run": "x", "files": [], "database": [{"secret": "S"}]}),
        json.dumps({"run": "x", "files": [], "database": [], "stores": [{"store": {}, "version": "1", "keys": {}}]}),
    ],
)
def test_a_damaged_journal_is_refused_with_its_path_and_nothing_is_touched(store: BackupStore, written: str) -> None:
    before = files(store.root)
    store.directory.mkdir(parents=True, exist_ok=True)
    (store.directory / journal.JOURNAL).write_text(written)
    with pytest.raises(RecoveryError, match=r"journal\.json: damaged journal"):
        recover(store)
    assert files(store.root) == before


@pytest.mark.parametrize("name", ["../outside/.env", "/etc/passwd", "link/.env"])
def test_a_journal_naming_a_file_outside_the_stack_is_refused(store: BackupStore, tmp_path: Path, name: str) -> None:
    """The journal is read from disk like any input: its paths must stay inside the stack."""
    outside = tmp_path.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / ".env").write_text("KEEP=1\n")
    (store.root / "link").symlink_to(outside)
    run = started(store)
    store.directory.mkdir(parents=True, exist_ok=True)
    (store.directory / journal.JOURNAL).write_text(json.dumps({"run": run.id, "files": [name], "database": []}))
    with pytest.raises(StorageError, match=rf"journal\.json: '{re.escape(name)}' (leaves|is reached through a link)"):
        recover(store)
    assert (outside / ".env").read_text() == "KEEP=1\n"


def test_staged_copies_left_after_the_journal_went_are_removed(store: BackupStore) -> None:
    """Killed between removing the journal and the staged copies: committed, the copies go."""
    run = started(store)
    (run.path / journal.STAGED).mkdir()
    (run.path / journal.STAGED / ".env").write_bytes(b"DB_PASSWORD=new-password-2\n")
    assert journal.stale(store) == [run.path / journal.STAGED]
    assert recover(store) is None
    assert not (run.path / journal.STAGED).exists()
