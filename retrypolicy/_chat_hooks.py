"""Token hooks of the chat platforms outside China: Slack token rotation.

:class:`SlackRotatingToken` renews a Slack access token through ``oauth.v2.access`` with
``grant_type=refresh_token``. Slack's refresh tokens are single-use: each renewal answers a new
one and revokes the one it was given, so the hook must renew with the newest refresh token, keep
the new one before anything else can renew, and never let two renewals use the same one.

* In one process the hook does one rotation at a time (a lock), and the transport calls it once
  per expiry however many requests saw it (single-flight).
* Across processes the transport's :class:`~retrypolicy.TokenStore` makes the renewal
  single-flight (one process holds its renewal lock while its hook runs), and the hook keeps its
  refresh token in the same store, next to the access token, under the key
  ``<the access token's key>:refresh``: the lock holder reads the newest refresh token there and
  writes the new one back before the lock is released. Each refresh token is stored with a
  generation number, so a process that rotated while the store was down writes its newer token
  back on its next renewal instead of taking the older one from the store.

Imported from :mod:`retrypolicy.hooks`, which re-exports it.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio.to_thread
import httpx

from ._errors import ConfigurationError
from ._hookbase import HookError, _check_secret, _HTTPTokenHook, _positive
from ._redact import redact_url
from ._store import StoredToken, TokenStore, check_store, store_key
from ._token import Token

__all__ = ["SlackRotatingToken"]

_DEFAULT_LEASE = 35.0  # seconds a refresh-token lock outlives a crashed holder (the store's lease if it has one)


@dataclass(slots=True)
class _Lease:
    """What one rotation read from the store: the refresh token to use and how to write back."""

    refresh: str
    generation: int
    expected: str | None  # the stored record to replace (compare-and-swap), None if nothing stored
    owner: str
    holding: bool  # did the read take the refresh key's lock (nothing was stored)?
    store_ok: bool  # did the store answer?


def _record(generation: int, refresh: str) -> str:
    return f"{generation}:{refresh}"


def _parse(record: str) -> tuple[int, str] | None:
    generation, sep, refresh = record.partition(":")
    if not sep or not generation.isdigit() or not refresh:
        return None
    return int(generation), refresh


class SlackRotatingToken(_HTTPTokenHook):
    """Renews a Slack access token with token rotation on (``oauth.v2.access``,
    ``grant_type=refresh_token``), keeping the single-use refresh token.

    ``SlackRotatingToken(client_id, client_secret, refresh_token, store=store)``:

    * ``refresh_token``: the ``xoxe-1-...`` refresh token of the installation (from its OAuth
      install). It is used once; after that the hook renews with the newest one it got.
    * ``store``: the :class:`~retrypolicy.TokenStore` the transport shares (``token_store=``), so
      that every process renews with the newest refresh token: the hook keeps it in the store
      under ``<key>:refresh`` (``<key>`` as the transport keys the access token: ``slack:`` and the
      client id, then ``team`` if given, or the store's ``key=``). Without a store, the refresh
      token lives in this object only: one process, and it is lost when the process ends.
    * ``on_refresh_token``: called with each new refresh token (e.g. to write it to your secret
      store, so that a restart without a persistent store can go on); a failure there is ignored.
    * ``team``: the workspace id (``T0...``) when one app serves several workspaces: each has its
      own tokens, so each needs its own key.

    The client id and secret go to Slack as HTTP Basic credentials. Errors are classified with
    the ``slack`` table: ``invalid_refresh_token`` (used up or revoked: reinstall the app) and
    ``invalid_client_id`` are user-action, ``bad_client_secret`` and ``invalid_grant_type`` fatal.
    If the stored refresh token is refused and the configured one differs (the app was installed
    again and deployed with its new refresh token), the configured one is tried once.

    A renewal whose answer is lost (a read timeout after Slack issued the new tokens) leaves the
    new refresh token with Slack only; the next renewal then gets ``invalid_refresh_token``, and a
    reinstall is needed. The hook never resends the refresh token after such a loss.

    ``await hook.acall()`` runs the same renewal in a worker thread, so that a renewal Slack has
    answered is stored even if the task awaiting it is cancelled. Secrets (client secret, refresh
    and access tokens) never appear in a repr, an exception or a log record.
    """

    platform: ClassVar[str] = "slack"
    rotates: ClassVar[bool] = True  # a single-use refresh token: the transport checks the stores (see store)

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        *,
        store: TokenStore | None = None,
        key: str | None = None,
        team: str | None = None,
        on_refresh_token: Callable[[str], object] | None = None,
        base_url: str = "https://slack.com",
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(client_id, str) or not client_id.strip() or any(c.isspace() for c in client_id):
            raise ConfigurationError(f"client_id must be a non-empty str without spaces, got {client_id!r}")
        self._client_secret = _check_secret("client_secret", client_secret)
        refresh = _check_secret("refresh_token", refresh_token).strip()
        if any(c.isspace() for c in refresh):
            raise ConfigurationError("refresh_token must be one word (it has whitespace inside)")
        if team is not None and (not isinstance(team, str) or not team.strip() or any(c.isspace() for c in team)):
            raise ConfigurationError(f"team must be a non-empty str without spaces, got {team!r}")
        if key is not None and (not isinstance(key, str) or not key.strip() or any(c.isspace() for c in key)):
            raise ConfigurationError(f"key must be a non-empty str without spaces, got {key!r}")
        if on_refresh_token is not None and not callable(on_refresh_token):
            raise ConfigurationError(f"on_refresh_token must be callable, got {type(on_refresh_token).__name__}")
        self._store = check_store(store)
        super().__init__(base_url, timeout=timeout, transport=transport, async_transport=None)
        self.client_id = client_id
        self.team = team
        self._configured = refresh
        self._refresh = refresh
        self._generation = 0
        self._tried_configured = False
        self._on_refresh = on_refresh_token
        self._using = refresh  # the refresh token of the request being built
        self._new_refresh: str | None = None  # the one the last answer carried
        self._rotation = threading.Lock()
        explicit = key if key is not None else getattr(store, "key", None)
        self.refresh_key = store_key(self.platform, self, explicit if isinstance(explicit, str) else None) + ":refresh"
        lease = getattr(store, "lease", None)
        self._lease = float(lease) if isinstance(lease, (int, float)) and lease > 0 else _DEFAULT_LEASE

    # store_key() reads these non-secret attributes to tell apps (and workspaces) apart
    @property
    def appid(self) -> str:
        """The Slack client id: with ``team``, what names this installation in a token store."""
        return self.client_id

    @property
    def identifier(self) -> str | None:
        """The workspace id given as ``team`` (``None`` if not given)."""
        return self.team

    @property
    def store(self) -> TokenStore | None:
        """Where the refresh token is kept (``None``: in this object only)."""
        return self._store

    @property
    def generation(self) -> int:
        """How many rotations the refresh token this hook holds has gone through (0: the configured one)."""
        return self._generation

    def __repr__(self) -> str:
        team = f", team={self.team!r}" if self.team else ""
        store = f", store={type(self._store).__name__}" if self._store is not None else ""
        return (
            f"SlackRotatingToken(client_id={self.client_id!r}{team}, base_url={redact_url(self._base_url)!r}, "
            f"generation={self._generation}{store})"
        )

    # -- what _HTTPTokenHook asks

    def _secrets(self) -> tuple[str, ...]:
        found = (self._client_secret, self._configured, self._refresh, self._using, self._new_refresh)
        return tuple(s for s in found if s)

    def _what(self) -> str:
        return f"oauth.v2.access (refresh_token grant) for client_id {self.client_id}"

    def _auth(self) -> httpx.Auth | None:
        return httpx.BasicAuth(self.client_id, self._client_secret)

    def _build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        form = {"grant_type": "refresh_token", "refresh_token": self._using}
        return client.build_request("POST", f"{self._base_url}/api/oauth.v2.access", data=form)

    def _token_from(self, body: dict[str, Any]) -> Token | str:
        access, refresh = body.get("access_token"), body.get("refresh_token")
        if not isinstance(access, str) or not access.strip():
            return "no access_token in the response" if access is None else "access_token is not a non-empty string"
        if not isinstance(refresh, str) or not refresh.strip():
            return "no refresh_token in the response (is token rotation on for this app?)"
        self._new_refresh = refresh.strip()
        return Token(access, expires_in=_positive(body.get("expires_in")))

    # -- the rotation

    def __call__(self) -> Token:
        with self._rotation:
            lease = self._read()
            try:
                token = self._exchange(lease)
            except HookError as exc:
                retry = self._configured_again(lease, exc)
                if retry is None:
                    self._release(lease)
                    raise
                lease = retry
                token = self._exchange(lease)  # a HookError here: the lease holds no lock to release
            self._keep(lease)
            return token

    async def acall(self) -> Token:
        # a worker thread: a renewal Slack answered is kept even if the awaiting task is cancelled
        token: Token = await anyio.to_thread.run_sync(self.__call__, abandon_on_cancel=True)
        return token

    def _exchange(self, lease: _Lease) -> Token:
        self._using, self._new_refresh = lease.refresh, None
        token = super().__call__()
        if self._new_refresh is None:  # pragma: no cover - _token_from sets it or the call raised
            raise HookError("slack oauth.v2.access answered no refresh_token", platform=self.platform)
        return token

    def _configured_again(self, lease: _Lease, exc: HookError) -> _Lease | None:
        """A lease for the configured refresh token, when the stored one was refused and the
        configured one is another (a new install deployed): tried once per hook."""
        if exc.code != "invalid_refresh_token" or lease.refresh == self._configured or self._tried_configured:
            return None
        self._tried_configured = True
        self._release(lease)
        return _Lease(self._configured, lease.generation, lease.expected, lease.owner, False, lease.store_ok)

    def _read(self) -> _Lease:
        owner = uuid.uuid4().hex
        mine = _Lease(self._refresh, self._generation, None, owner, False, False)
        store = self._store
        if store is None:
            return mine
        try:
            claim = store.claim(self.refresh_key, owner, self._lease, None)
        except Exception:  # noqa: BLE001 - a store that fails never fails a renewal: use our own
            return mine
        stored = _parse(claim.token.value) if claim.token is not None else None
        record = claim.token.value if claim.token is not None else None
        holding = claim.status == "acquired"
        if stored is None or stored[0] < self._generation:
            # nothing stored (first renewal anywhere), or we rotated while the store was down
            return _Lease(self._refresh, self._generation, record, owner, holding, True)
        generation, refresh = stored
        self._refresh, self._generation = refresh, generation
        return _Lease(refresh, generation, record, owner, holding, True)

    def _keep(self, lease: _Lease) -> None:
        """The new refresh token: here first (it exists nowhere else), then in the store."""
        new = self._new_refresh
        assert new is not None
        self._refresh, self._generation = new, lease.generation + 1
        self._new_refresh = None
        if self._on_refresh is not None:
            with contextlib.suppress(Exception):  # the user's callback must not lose the rotation
                self._on_refresh(new)
        store = self._store
        if store is None:
            return
        value = _record(self._generation, new)
        expected = lease.expected
        for _ in range(3):  # compare-and-swap: replace what we read, or a stale record written meanwhile
            try:
                newer = store.publish(self.refresh_key, lease.owner, expected, StoredToken(value))
            except Exception:  # noqa: BLE001 - kept here; written back on the next renewal
                return
            if newer is None:
                return
            found = _parse(newer.value)
            if found is not None and found[0] >= self._generation:
                return  # pragma: no cover - a newer rotation is stored: another process owns the chain now
            expected = newer.value

    def _release(self, lease: _Lease) -> None:
        if lease.holding and self._store is not None:
            with contextlib.suppress(Exception):  # the lock is a lease: it expires anyway
                self._store.release(self.refresh_key, lease.owner)
