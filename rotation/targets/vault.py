"""A Vault or OpenBao KV version 2 secret that holds a stack's secrets, one new version per change.

Other hosts and tools read the current version; every earlier one stays readable, so nothing is
ever overwritten in place: a rotation writes version N+1 with check-and-set N (a writer that came
in between makes it fail, changing nothing), and putting it back writes N+2. The token, the
AppRole secret_id and every value stay out of messages; hvac's own error texts carry only URLs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urljoin, urlsplit

from ..config import VaultSpec, interpolate
from ..errors import ConfigError, StoreError
from ..escape import printable as _printable
from ..generate import Secret

if TYPE_CHECKING:  # hvac (and requests) are imported where a store is reached: most commands never do
    import hvac
    import requests

    from ..config import Config

__all__ = ["TIMEOUT", "StoreChange", "Stored", "Vault", "planned"]

TIMEOUT = 10  # seconds for each request to the store
T = TypeVar("T")
# What a rotation needs on `<mount>/data/<path>` (read the version, write the next one), as
# sys/capabilities-self answers (https://openbao.org/api-docs/system/capabilities-self/).
_WRITE = {"create", "update"}
_TOKEN = re.compile(r"[\x21-\x7e]+")  # a Vault or OpenBao token: printable ASCII, no white space


def _token() -> str:
    """VAULT_TOKEN, else BAO_TOKEN, without the newline that `cat token >> .envrc` and friends leave."""
    return (os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN") or "").strip()


def shown_address(address: str) -> str:
    """`scheme://host:port` of an address, for messages: never a user, a password, a path or a query."""
    try:
        parts = urlsplit(address)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an address that is not a valid URL)"
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return _printable(f"{parts.scheme}://{host}{port}")


class _Redirected(Exception):
    """The store answered with a redirect to another host, which the token must not follow."""


def _same_host_session(verify: bool | str) -> requests.Session:
    """A requests session that follows a redirect only on the same scheme, host and port: requests
    drops `Authorization` on a cross-host redirect, but not Vault's own `X-Vault-Token` header."""
    import requests

    class SameHost(requests.Session):
        def get_redirect_target(self, resp: requests.Response) -> str | None:
            target = super().get_redirect_target(resp)
            if target is not None:
                old, new = urlsplit(resp.url), urlsplit(urljoin(resp.url, target))
                if (old.scheme, old.hostname, old.port) != (new.scheme, new.hostname, new.port):
                    raise _Redirected(f"to {shown_address(new.geturl())}")
            return target

    session = SameHost()
    session.verify = verify
    return session


def _mapping(value: object) -> Mapping[str, Any]:
    """A part of an answer that should be a JSON object; anything else counts as empty."""
    return value if isinstance(value, dict) else {}


def _never_sent(exc: Exception) -> bool:
    """Whether a connection failure happened before any byte of the request left: a refused or
    unresolvable address, or a connect timeout. Otherwise the store may have acted on it."""
    import requests.exceptions
    import urllib3.exceptions

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


@dataclass(frozen=True, slots=True)
class Stored:
    """One version of the store's secret: its number (0 when there is none yet) and its values."""

    version: int
    data: Mapping[str, str] = field(repr=False)  # values: never in a repr, a log or a message


class Vault:
    """One configured store, reached with its address and credentials resolved; logs in on first use."""

    def __init__(self, spec: VaultSpec, env: Mapping[str, str | None], root: Path) -> None:
        self.spec = spec
        self._env = env
        self._root = root
        self._client: hvac.Client | None = None
        self._mount_checked = False  # a mount's engine does not change within one command

    @property
    def label(self) -> str:
        """The store's KV path, for messages."""
        return self.spec.label

    def _resolve(self, template: str, key: str) -> str:
        try:
            return interpolate(template, self._env)
        except ConfigError as exc:
            raise StoreError(f"{self.label}: {key}: {exc}") from None

    def _credential(self, template: str | None, file: str | None, key: str) -> str:
        """An AppRole credential from its `${VAR}`, or from its file (relative to the stack root)."""
        if template is not None:
            return self._resolve(template, f"auth.{key}")
        path = Path(self._resolve(file or "", f"auth.{key}_file"))
        path = path if path.is_absolute() else self._root / path
        try:
            return path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise StoreError(f"{self.label}: auth.{key}_file: cannot read {path} ({reason})") from None

    def client(self) -> hvac.Client:
        """An hvac client logged in as the configuration says: a token from VAULT_TOKEN or BAO_TOKEN,
        or an AppRole login. hvac is given the URL and token itself: it reads only VAULT_* variables."""
        if self._client is not None:
            return self._client
        import hvac

        address = self._address()
        verify: bool | str = self._resolve(self.spec.ca_cert, "ca_cert") if self.spec.ca_cert else True
        if isinstance(verify, str) and not Path(verify).is_file():
            raise StoreError(f"{self.label}: ca_cert {verify} does not exist")
        auth = self.spec.auth
        token = None
        if auth.method == "token":
            token = _token()
            if not token:
                raise StoreError(f"{self.label}: no token: set VAULT_TOKEN or BAO_TOKEN (or use auth: approle)")
            if not _TOKEN.fullmatch(token):
                raise StoreError(
                    f"{self.label}: the token in VAULT_TOKEN/BAO_TOKEN holds white space or control characters; "
                    "set it to the token alone"
                )
        session = _same_host_session(verify)
        client = hvac.Client(url=address, token=token, verify=verify, timeout=TIMEOUT, session=session)
        if auth.method == "approle":
            role_id = self._credential(auth.role_id, auth.role_id_file, "role_id")
            secret_id = self._credential(auth.secret_id, auth.secret_id_file, "secret_id")
            self._call("AppRole login", lambda: client.auth.approle.login(role_id, secret_id, mount_point=auth.mount))
        else:
            self._call("token check", client.auth.token.lookup_self)
        self._client = client
        return client

    def _address(self) -> str:
        """The resolved address, checked: http(s), a host, a valid port, and no credentials in it."""
        address = self._resolve(self.spec.address, "address")
        try:
            parts = urlsplit(address)
            port = parts.port
        except ValueError:
            raise StoreError(f"{self.label}: address '{_printable(address)}' is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StoreError(f"{self.label}: address '{self._shown()}' is not an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise StoreError(
                f"{self.label}: address {self._shown()} carries a user or password; "
                "give the token with VAULT_TOKEN or BAO_TOKEN instead"
            )
        del port
        return address

    def _shown(self) -> str:
        """The store's address for a message: scheme, host and port, never a user, password, path or query."""
        return shown_address(self._resolve(self.spec.address, "address"))

    def _call(self, doing: str, request: Callable[[], T]) -> T:
        """Run one request; every failure becomes a `StoreError` naming the store and what was being done."""
        import hvac.exceptions
        import requests.exceptions

        try:
            answer = request()
        except _Redirected as exc:
            raise StoreError(
                f"{self.label}: {doing}: the store at {self._shown()} redirected to another host ({exc}); refusing to "
                "follow, since the token would go with it. Point address at the active node or its load balancer",
                unchanged=True,
            ) from None
        except requests.exceptions.SSLError:
            raise StoreError(
                f"{self.label}: TLS verification of {self._shown()} failed; "
                "set ca_cert to the CA that signed its certificate"
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            if _never_sent(exc):
                raise StoreError(
                    f"{self.label}: {doing}: the store at {self._shown()} is unreachable", unchanged=True
                ) from None
            raise StoreError(
                f"{self.label}: {doing}: the store at {self._shown()} stopped answering; whether it took the "
                "request is not known"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise StoreError(f"{self.label}: {doing}: the request failed ({type(exc).__name__})") from None
        except (KeyError, TypeError, ValueError, AttributeError):  # hvac reading an answer of another shape
            raise StoreError(
                f"{self.label}: {doing}: {self._shown()} answered with JSON of a shape the Vault API never sends"
            ) from None
        except hvac.exceptions.Forbidden:
            why = "the token was refused" if doing == "token check" else "permission denied"
            raise StoreError(f"{self.label}: {doing}: {why}", unchanged=True) from None
        except hvac.exceptions.InvalidRequest as exc:
            text = str(exc).split(", on ")[0]
            if "check-and-set" in text:
                raise StoreError(
                    f"{self.label}: another writer changed the secret since the plan was made "
                    "(check-and-set failed); nothing was written there",
                    unchanged=True,
                ) from None
            if doing == "AppRole login":
                text = "the role_id or secret_id was refused"
            raise StoreError(f"{self.label}: {doing}: {text}", unchanged=True) from None
        except (hvac.exceptions.VaultDown, hvac.exceptions.VaultNotInitialized):
            raise StoreError(f"{self.label}: {doing}: the store is sealed or not initialised") from None
        except hvac.exceptions.VaultError as exc:
            text = _printable(str(exc).split(", on ")[0])[:200]
            raise StoreError(f"{self.label}: {doing}: {text or type(exc).__name__}") from None
        if answer is not None and not isinstance(answer, dict):  # hvac's raw response: the body is not JSON
            raise StoreError(
                f"{self.label}: {doing}: {self._shown()} answered with something that is not the Vault API's JSON "
                "(a login page, or a proxy in front of the store?)"
            )
        return answer

    def _kv2(self) -> None:
        """Refuse a mount that is not KV version 2: on version 1, `data/PATH` would be a new plain secret.
        Asked once per store: every read (plan, read-back, recovery, probe) goes through here."""
        if self._mount_checked:
            return
        client = self.client()
        mount = self._call(
            f"reading mount {self.spec.mount}",
            lambda: client.adapter.get(f"/v1/sys/internal/ui/mounts/{self.spec.mount}"),
        )
        data = _mapping(_mapping(mount).get("data"))
        version = _mapping(data.get("options")).get("version")
        if data.get("type") not in ("kv", "generic") or str(version) != "2":
            kv = data.get("type") in ("kv", "generic")
            kind = (
                f"KV version {_printable(version or 1)[:20]}" if kv else f"a {_printable(data.get('type'))[:40]} engine"
            )
            raise StoreError(f"{self.label}: mount '{self.spec.mount}' is {kind}; rotation needs a KV version 2 mount")
        self._mount_checked = True

    def read(self, version: int | None = None) -> Stored:
        """The current version (or `version`); version 0 and no values when the secret does not exist yet."""
        import hvac.exceptions

        self._kv2()
        kv = self.client().secrets.kv.v2

        def request() -> Any:
            try:
                return kv.read_secret_version(
                    path=self.spec.path, mount_point=self.spec.mount, version=version, raise_on_deleted_version=False
                )
            except hvac.exceptions.InvalidPath:
                return None  # no such secret (or version) yet

        response = self._call("reading the secret", request)
        if response is None:
            if version is not None:
                raise StoreError(f"{self.label}: there is no version {version}")
            return Stored(0, {})
        body = _mapping(response.get("data"))
        number = self._version(_mapping(body.get("metadata")).get("version"), "reading the secret")
        values = _mapping(body.get("data"))
        return Stored(number, {str(k): str(v) for k, v in values.items() if isinstance(v, (str, int, float))})

    def _version(self, raw: object, doing: str) -> int:
        """A version number from an answer, which is input like any other: a whole number, or an error."""
        if raw is None:
            return 0
        if isinstance(raw, bool) or not isinstance(raw, (int, str)) or not str(raw).isdigit():
            raise StoreError(f"{self.label}: {doing}: the store answered with a version that is not a number")
        return int(raw)

    def write(self, data: Mapping[str, str], cas: int) -> int:
        """Write `data` as the next version, only if the current one is still `cas`; the new version's number."""
        client = self.client()
        response = self._call(
            "writing a new version",
            lambda: client.secrets.kv.v2.create_or_update_secret(
                path=self.spec.path, secret=dict(data), cas=cas, mount_point=self.spec.mount
            ),
        )
        return self._version(_mapping(_mapping(response).get("data")).get("version"), "writing a new version")

    def check(self, files: Mapping[str, str | None]) -> str:
        """For a dry run: reachable, logged in, a KV v2 mount, allowed to read and write the path, its
        version, and whether it already holds the files' values. Raises when a rotation could not write."""
        client = self.client()
        stored = self.read()
        path = f"{self.spec.mount}/data/{self.spec.path}"
        answer = self._call(
            "checking the token's capabilities",
            lambda: client.adapter.post("/v1/sys/capabilities-self", json={"paths": [path]}),
        )
        listed = _mapping(_mapping(answer).get("data") or answer).get(path)
        granted = {str(c) for c in listed} if isinstance(listed, list) else set()
        needed = {"read", "update" if stored.version else "create"}
        if not ({"root", "sudo"} & granted or needed <= granted):
            missing, has = " or ".join(sorted(needed - granted)), ", ".join(sorted(granted)) or "nothing"
            raise StoreError(f"{self.label}: the token may not {missing} {path} (it has: {has})", unchanged=True)
        differ = sorted(k for k in self.spec.secrets if files.get(k) is not None and stored.data.get(k) != files.get(k))
        agree = "holds the files' values" if not differ else f"differs from the files in {', '.join(differ)}"
        at = f"version {stored.version}" if stored.version else "no version yet"
        return f"{self.label}: can read and write ({at}); it {agree}"


@dataclass(frozen=True, slots=True)
class StoreChange:
    """One new version of a store's secret: `data` written with check-and-set `version`.

    `keys` are the secrets whose value changes, each with the stack file that holds it (the
    journal's way back to the values); `old` and `new` are those values.
    """

    store: Vault
    version: int
    data: Mapping[str, str] = field(repr=False)
    keys: Mapping[str, str]
    old: Mapping[str, Secret] = field(repr=False)
    new: Mapping[str, Secret] = field(repr=False)

    @property
    def label(self) -> str:
        """The store's KV path."""
        return self.store.label

    def to_json(self) -> dict[str, Any]:
        """What the journal keeps: which store, the version it changes from, the keys and their files."""
        return {"kind": "vault", "store": self.store.spec.to_json(), "version": self.version, "keys": dict(self.keys)}

    def apply(self) -> int:
        """Write the new version and read it back; its number. A conflict or refusal changes nothing.

        A version that was written but does not read back (a 403 or 400 on the read, other values) is
        put back at once with a check-and-set write of the old values at that version: the store is
        never left on values that the stack does not use.
        """
        written = self.store.write(self.data, self.version)
        try:
            stored = self.store.read()
        except StoreError as exc:
            problem = f"version {written} was written, but reading it back failed ({exc})"
        else:
            same = stored.version == written and all(stored.data.get(k) == v.reveal() for k, v in self.new.items())
            if same:
                return written
            problem = f"version {written} does not read back with the values written"
        old = {**self.data, **{k: v.reveal() for k, v in self.old.items()}}
        try:
            back = self.store.write(old, written)
        except StoreError as exc:
            raise StoreError(f"{problem}; writing the old values back failed too ({exc})") from None
        raise StoreError(f"{problem}; the old values were written back as version {back}", unchanged=True)

    def settle(self) -> bool:
        """After a write whose outcome is not known (the answer was lost): read the store, and if the new
        values landed, write the old ones back as a newer version. Whether it had to; a store that cannot
        be read, or that holds values of neither, is a `StoreError`."""
        state = self.state()
        if state is None:
            raise StoreError(f"{self.label}: its current version holds neither the old nor the new values")
        if state == "new":
            self.revert()
        return state == "new"

    def state(self) -> str | None:
        """`old` when the store's current version still holds the old values (or was never changed),
        `new` when it holds the new ones, None when it holds something else."""
        return holds(self.store.read(), self.version, self.old, self.new)

    def revert(self) -> int:
        """Write the old values back as a newer version (history is kept); its number."""
        return put_back(self.store, self.old)


def holds(stored: Stored, version: int, old: Mapping[str, Secret], new: Mapping[str, Secret]) -> str | None:
    """Which values `stored` has for the changed keys: `old` (or untouched since `version`), `new`, or None."""
    if stored.version == version:
        return "old"
    for name, values in (("new", new), ("old", old)):
        if all(stored.data.get(k) == v.reveal() for k, v in values.items()):
            return name
    return None


def put_back(store: Vault, old: Mapping[str, Secret]) -> int:
    """The current version with `old` values for their keys, written as the next version."""
    stored = store.read()
    data = {**stored.data, **{k: v.reveal() for k, v in old.items()}}
    return store.write(data, stored.version)


def planned(
    stores: Sequence[Vault],
    config: Config,
    before: Mapping[str, str | None],
    after: Mapping[str, str | None],
    rendered: Mapping[str, bytes],
) -> list[StoreChange]:
    """A new version for each store whose secret would not agree with the files afterwards: its
    current values with every listed secret as the files will hold it, check-and-set on the version
    read now. The changed keys are named with a file (of `rendered`) that holds them, for recovery."""
    changes = []
    for vault in stores:
        stored = vault.read()
        data = {**stored.data, **{k: v for k in vault.spec.secrets if (v := after.get(k)) is not None}}
        if data == stored.data:
            continue
        keys = {}
        for name in vault.spec.secrets:
            old, new = before.get(name), after.get(name)
            if old is not None and new is not None and old != new:
                keys[name] = next(f for f in config.secrets[name].files if f in rendered)
        old_values = {k: Secret(before[k] or "") for k in keys}
        new_values = {k: Secret(after[k] or "") for k in keys}
        changes.append(StoreChange(vault, stored.version, data, keys, old_values, new_values))
    return changes
