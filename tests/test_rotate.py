"""`rotation rotate` and `rotation restore` on a copy of the example stack, as a user runs them."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import jwt
import pytest
import yaml

from rotation import envfile

from .conftest import CLI, finished, tree


def values(path: Path) -> dict[str, str]:
    parsed = envfile.read(path)
    return {key: parsed.get(key) or "" for key in parsed.names()}


def every_value(stack: Path) -> set[str]:
    found = set()
    for name in (".env", "supabase/docker/.env"):
        found |= {v for v in values(stack / name).values() if len(v) >= 16}
    return found


def test_dry_run_masks_values_and_writes_nothing(stack: Path, inproc: CLI) -> None:
    before = tree(stack)
    ran = inproc("rotate", "--dry-run")
    assert ran.code == 0, ran.err
    assert "JWT_SECRET" in ran.out and "64 chars, alnum" in ran.out
    assert re.search(r"(?m)^ +auth +stop-late +reads JWT_SECRET$", ran.out)
    assert tree(stack) == before
    assert not (stack / "backups").exists()
    for value in every_value(stack):
        assert value not in ran.text


def test_rotating_jwt_secret_re_signs_keys_and_changes_nothing_else(stack: Path, inproc: CLI) -> None:
    files = (".env", "supabase/docker/.env")
    old = {name: (stack / name).read_bytes() for name in files}
    old_values = every_value(stack)
    ran = inproc("rotate", "--secrets", "JWT_SECRET")
    assert ran.code == 0, ran.err
    for value in old_values | every_value(stack):
        assert value not in ran.text
    for name in files:
        new = values(stack / name)
        secret = new["JWT_SECRET"]
        assert secret != values_of(old[name])["JWT_SECRET"]
        for key, role in (("ANON_KEY", "anon"), ("SERVICE_ROLE_KEY", "service_role")):
            claims = jwt.decode(new[key], secret, algorithms=["HS256"])
            assert claims["role"] == role and claims["iss"] == "supabase"
            assert claims["exp"] - claims["iat"] >= 5 * 365 * 86400
        # Every other byte is unchanged: swapping the three values back gives the old file.
        restored = (stack / name).read_bytes()
        for key in ("JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY"):
            restored = restored.replace(new[key].encode(), values_of(old[name])[key].encode())
        assert restored == old[name]
        assert stat.S_IMODE((stack / name).stat().st_mode) == 0o600
    assert values(stack / ".env")["JWT_SECRET"] == values(stack / "supabase/docker/.env")["JWT_SECRET"]


def values_of(data: bytes) -> dict[str, str]:
    parsed = envfile.parse(data.decode())
    return {key: parsed.get(key) or "" for key in parsed.names()}


def test_restore_latest_is_byte_exact_and_undoable(stack: Path, inproc: CLI) -> None:
    files = (".env", "supabase/docker/.env")
    original = {name: (stack / name).read_bytes() for name in files}
    assert inproc("rotate").code == 0
    rotated = {name: (stack / name).read_bytes() for name in files}
    assert rotated != original
    ran = inproc("restore", "--latest")
    assert ran.code == 0, ran.err
    for name in files:
        assert (stack / name).read_bytes() == original[name]
        assert stat.S_IMODE((stack / name).stat().st_mode) == 0o600
    listing = json.loads(inproc("restore", "--list", "--json").out)
    undo = next(row for row in listing if row["kind"] == "pre-restore")
    assert inproc("restore", "--backup", undo["id"]).code == 0
    for name in files:
        assert (stack / name).read_bytes() == rotated[name]


def test_restore_list_shows_secrets_services_and_status(stack: Path, inproc: CLI) -> None:
    assert inproc("rotate", "--secrets", "DASHBOARD_PASSWORD").code == 0
    ran = inproc("restore", "--list")
    assert ran.code == 0
    header, row = ran.out.splitlines()[:2]
    assert header.split() == ["ID", "AGE", "KIND", "STATUS", "SECRETS", "SERVICES"]
    assert "rotation" in row and "applied" in row and "DASHBOARD_PASSWORD" in row and "kong" in row


def test_backup_metadata_layout_and_permissions(stack: Path, inproc: CLI) -> None:
    assert inproc("rotate", "--secrets", "JWT_SECRET").code == 0
    root = stack / "backups" / "secrets"
    [backup] = [p for p in root.iterdir() if p.name.startswith("secrets-backup-")]
    meta = json.loads((backup / "metadata.json").read_text())
    assert backup.name == f"secrets-backup-{meta['timestamp']}"
    assert meta["rotated_secrets"] == ["ANON_KEY", "JWT_SECRET", "SERVICE_ROLE_KEY"]
    assert meta["affected_services"] == sorted(meta["affected_services"]) and "auth" in meta["affected_services"]
    assert meta["files"] == [".env", "supabase/docker/.env"]
    assert meta["kind"] == "rotation" and meta["status"] == "applied" and meta["version"]
    assert (root / ".gitignore").read_text().strip().endswith("*")
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


def test_backups_in_the_same_second_never_overwrite(stack: Path) -> None:
    from rotation.backup import BackupStore

    store = BackupStore.for_stack(stack, "backups/secrets")
    ids = [store.create("rotation", [".env"], now=1_800_000_000).id for _ in range(3)]
    assert ids[1] == f"{ids[0]}-2" and ids[2] == f"{ids[0]}-3"
    assert [b.id for b in store.all()] == ids
    assert store.get(f"secrets-backup-{ids[1]}").id == ids[1]


def test_prune_removes_old_backups_but_never_the_newest(stack: Path) -> None:
    from rotation.backup import BackupStore

    store = BackupStore.for_stack(stack, "backups/secrets")
    old = store.create("rotation", [".env"], now=1_000_000_000).id
    older = store.create("rotation", [".env"], now=900_000_000).id
    assert store.prune(90) == [older]
    assert [b.id for b in store.all()] == [old]


def test_skip_backup_keeps_no_backup(stack: Path, inproc: CLI) -> None:
    ran = inproc("rotate", "--secrets", "SECRET_KEY_BASE", "--skip-backup")
    assert ran.code == 0, ran.err
    assert "none kept" in ran.out
    assert json.loads(inproc("restore", "--list", "--json").out) == []


def test_rotate_json_lists_names_and_lengths_only(stack: Path, inproc: CLI) -> None:
    ran = inproc("rotate", "--secrets", "JWT_SECRET", "--json")
    assert ran.code == 0
    data = json.loads(ran.out)
    assert data["rotated_secrets"] == ["ANON_KEY", "JWT_SECRET", "SERVICE_ROLE_KEY"]
    assert data["backup"] and data["files"] == [".env", "supabase/docker/.env"]
    for value in every_value(stack):
        assert value not in ran.out


def test_user_errors_are_one_line_and_change_nothing(stack: Path, inproc: CLI) -> None:
    before = tree(stack)
    for args, words in [
        (("rotate", "--secrets", "NOPE"), "unknown secret 'NOPE'"),
        (("rotate", "--secrets", "OPENAI_API_KEY"), "static"),
        (("rotate", "--secrets", "N8N_ENCRYPTION_KEY"), "--accept-data-loss"),
        (("restore", "--backup", "20000101-000000"), "no backup '20000101-000000'"),
        (("restore", "--latest"), "no rotation backup"),
        (("restart", "--timeout", "soon"), "--timeout takes a number, not 'soon'"),
        (("restart", "--parallel", "0"), "--parallel must be greater than 0"),
        (("restore", "--latest", "--backup", "x"), "--latest or --backup, not both"),
    ]:
        ran = inproc(*args)
        assert ran.code != 0 and words in ran.err, (args, ran.err)
        assert len(ran.err.strip().splitlines()) == 1 and "Traceback" not in ran.text
    assert tree(stack) == before


@pytest.mark.parametrize("name", ["N8N_ENCRYPTION_KEY", "VAULT_ENC_KEY"])
def test_encrypting_key_is_refused_unless_the_loss_is_accepted(stack: Path, inproc: CLI, name: str) -> None:
    old = values(stack / ".env")[name]
    refused = inproc("rotate", "--secrets", name)
    assert refused.code == 3 and "--accept-data-loss" in refused.err and "encrypts stored data" in refused.err
    assert values(stack / ".env")[name] == old
    ran = inproc("rotate", "--secrets", name, "--accept-data-loss")
    assert ran.code == 0, ran.err
    new = values(stack / ".env")[name]
    configured = yaml.safe_load((stack / "secrets-config.yaml").read_text())["secrets"][name]["length"]
    assert new != old and len(new) == len(old) == configured


def test_stack_root_from_environment_and_invoke_config(stack: Path, inproc: CLI, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert inproc("rotate", "--dry-run", cwd=elsewhere, env={"ROTATION_ROOT": str(stack)}).code == 0
    assert inproc("rotate", "--dry-run", cwd=elsewhere, env={"INVOKE_ROTATION_ROOT": str(stack)}).code == 0
    bad = inproc("rotate", "--dry-run", env={"INVOKE_ROTATION_LOCK_TIMEOUT": "soon"})
    assert bad.code == 2 and "rotation.lock_timeout takes a number, not 'soon'" in bad.err
    prod = tmp_path / "prod.yaml"
    prod.write_text(f"rotation:\n  root: {stack}\n")
    ran = inproc("-f", str(prod), "rotate", "--secrets", "DASHBOARD_PASSWORD", cwd=elsewhere)
    assert ran.code == 0, ran.err
    assert (stack / "backups" / "secrets").is_dir()


def test_a_key_set_twice_is_updated_everywhere_with_a_warning(stack: Path, inproc: CLI) -> None:
    env = stack / ".env"
    old = values(env)["DASHBOARD_PASSWORD"]
    env.write_bytes(env.read_bytes() + f'DASHBOARD_PASSWORD="{old}"\n'.encode())
    ran = inproc("rotate", "--secrets", "DASHBOARD_PASSWORD")
    assert ran.code == 0, ran.err
    assert "warning: DASHBOARD_PASSWORD is set 2 times in .env; every occurrence is updated" in ran.err
    parsed = envfile.read(env)
    assert [e.value for e in parsed.by_key["DASHBOARD_PASSWORD"]] == [parsed.get("DASHBOARD_PASSWORD")] * 2
    assert old not in env.read_text()


def test_rotate_adopts_a_precheck_run_from_just_before_but_not_a_stale_one(stack: Path, inproc: CLI) -> None:
    import time

    from rotation.backup import BackupStore

    store = BackupStore.for_stack(stack, "backups/secrets")
    stale = store.create("rotation", [], now=time.time() - 7200, status="planned").id
    first = json.loads(inproc("rotate", "--secrets", "DASHBOARD_PASSWORD", "--json").out)["backup"]
    assert first != stale and store.get(stale).status == "planned"
    finished(stack)
    fresh = store.create("rotation", [], status="planned").id
    second = json.loads(inproc("rotate", "--secrets", "DASHBOARD_PASSWORD", "--json").out)["backup"]
    assert second == fresh and store.get(fresh).status == "applied" and ".env" in store.get(fresh).files


def test_nothing_to_rotate_names_each_auto_rotate_secret_the_stack_cannot_serve(stack: Path, inproc: CLI) -> None:
    (stack / "secrets-config.yaml").write_text(
        "secrets:\n  GRAFANA_PASSWORD:\n    type: random\n    files: [.env]\n"
        "  OPENAI_API_KEY:\n    type: static\n    files: [.env]\n"
    )
    ran = inproc("rotate")
    assert ran.code == 2, ran.text
    assert "GRAFANA_PASSWORD: .env does not contain it" in ran.err and "no secret has auto_rotate" not in ran.err
