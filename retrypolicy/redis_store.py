"""RedisTokenStore: one token, one renewal, one retry budget and one set of cooldowns for many
processes and machines (gunicorn and celery workers, several hosts) using the same app.

Needs redis-py (``pip install 'retrypolicy[redis]'``); the async transport uses
``redis.asyncio``, so it runs on asyncio. Every operation is one round trip (a Lua script):

Keys (``<ns>`` is the namespace, ``<app>`` the store key such as ``wechat:wx0123``; the braces
keep one app's keys in one Redis Cluster slot; no key ever contains a secret)::

    <ns>:{<app>}:token      "<lifetime ms>:<token>", with the token's lifetime as the key's TTL
    <ns>:{<app>}:lock       the renewal lock: a random owner id, SET NX PX <lease>
    <ns>:{<app>}:calls      renewal attempts so far
    <ns>:{<app>}:error      the last failed renewal (a scrubbed message), for 60 s
    <ns>:{<app>}:cooldowns  cooldowns by start time (ZSET), <ns>:{<app>}:cooldowns:end by end time
    <ns>:{<app>}:budget     the shared retry budget's level (a float)
    <ns>:{<app>}:breakers   circuit breakers (HASH): breaker key ("*" or a host) ->
                            "<version>|open|<ends ms>|<open_for ms>|<json>" or "<version>|closed|0|0|"
    <ns>:{<app>}:probe:<breaker key>  probes handed out while that breaker is half-open

Cooldowns, budget levels and breakers use Redis's clock (``TIME``), so machines need not agree on the time.
Tokens are stored in clear in Redis: protect it like the secret itself (AUTH, TLS, ACLs).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import weakref
from typing import Any

from ._errors import ConfigurationError
from ._redact import redact_url
from ._store import Claim, SharedError, StoredToken, check_key, decode_classification

__all__ = ["RedisTokenStore"]

# KEYS: token, lock, calls, error   ARGV: owner, lease ms, stale ('' if none)
_CLAIM = """
local rec = redis.call('GET', KEYS[1])
local pttl = redis.call('PTTL', KEYS[1])
local calls = tonumber(redis.call('GET', KEYS[3]) or '0')
local err = redis.call('GET', KEYS[4]) or ''
if rec then
  local sep = string.find(rec, ':', 1, true)
  local lifetime = tonumber(string.sub(rec, 1, sep - 1))
  if string.sub(rec, sep + 1) ~= ARGV[3] and (pttl == -1 or pttl > math.min(300000, lifetime / 10)) then
    return {'fresh', calls, rec, pttl, err}
  end
else
  rec = ''
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  calls = redis.call('INCR', KEYS[3])
  return {'acquired', calls, rec, pttl, err}
end
return {'busy', calls, rec, pttl, err}
"""

# KEYS: token, lock, error   ARGV: owner, expected token ('' if none), record, px ('0': no expiry)
_PUBLISH = """
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  if string.sub(cur, sep + 1) ~= ARGV[2] then
    return {0, cur, redis.call('PTTL', KEYS[1])}
  end
end
if ARGV[4] == '0' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
redis.call('DEL', KEYS[3])
return {1, '', 0}
"""

# KEYS: error, lock   ARGV: owner, record, ttl ms
_FAIL = """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""

# KEYS: lock   ARGV: owner   (compare-and-delete)
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: by start, by end   ARGV: duration ms, payload
_COOLDOWN_START = (
    _NOW
    + """
local ends = now + tonumber(ARGV[1])
local member = string.format('%d', ends) .. '|' .. ARGV[2]
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
end
redis.call('ZADD', KEYS[1], now, member)
redis.call('ZADD', KEYS[2], ends, member)
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
redis.call('PEXPIREAT', KEYS[2], last[2])
return now
"""
)

# KEYS: by start   ARGV: since (ms of Redis time, or '-inf')   -> {now, "<ms left>|payload", ...}
_COOLDOWN_PULL = (
    _NOW
    + """
local out = {now}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')) do
  local sep = string.find(m, '|', 1, true)
  local left = tonumber(string.sub(m, 1, sep - 1)) - now
  if left > 0 then table.insert(out, string.format('%d', left) .. '|' .. string.sub(m, sep + 1)) end
end
return out
"""
)

# KEYS: level   ARGV: capacity, cost (0: refill only), refill, ttl ms   -> {spent 0/1, level}
_BUDGET = """
local cap = tonumber(ARGV[1])
local level = math.min(cap, tonumber(redis.call('GET', KEYS[1]) or ARGV[1]) + tonumber(ARGV[3]))
local cost = tonumber(ARGV[2])
local spent = 0
if cost > 0 and level >= cost then
  level = level - cost
  spent = 1
end
redis.call('SET', KEYS[1], string.format('%.17g', level), 'PX', ARGV[4])
return {spent, string.format('%.17g', level)}
"""

# KEYS: breakers, probe   ARGV: breaker key, open_for ms, payload, ttl ms   -> {record, now}
# Opens the breaker for open_for, unless it is open for longer already (another process opened it).
_BREAKER_OPEN = (
    _NOW
    + """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local version = 0
if cur then
  local v, state, ends = string.match(cur, '^(%d+)|(%a+)|(%d+)|')
  version = tonumber(v)
  if state == 'open' and tonumber(ends) >= now + tonumber(ARGV[2]) then
    return {cur, now}
  end
end
local rec = string.format('%d|open|%d|%d|', version + 1, now + tonumber(ARGV[2]), tonumber(ARGV[2])) .. ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], rec)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('DEL', KEYS[2])
return {rec, now}
"""
)

# KEYS: breakers, probe   ARGV: breaker key, ttl ms   -> version
_BREAKER_CLOSE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local version = 0
if cur then version = tonumber(string.match(cur, '^(%d+)|')) end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d|closed|0|0|', version + 1))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
return version + 1
"""

# KEYS: breakers, probe   ARGV: breaker key, probes, lease ms   -> {verdict, record, now}
_BREAKER_PROBE = (
    _NOW
    + """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {'closed', '', now} end
local state, ends = string.match(cur, '^%d+|(%a+)|(%d+)|')
if state ~= 'open' then return {'closed', cur, now} end
if tonumber(ends) > now then return {'open', cur, now} end
local n = redis.call('INCR', KEYS[2])
if n == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
if n <= tonumber(ARGV[2]) then return {'probe', cur, now} end
return {'busy', cur, now}
"""
)

# KEYS: breakers   -> {now, key, record, key, record, ...}
_BREAKER_PULL = (
    _NOW
    + """
local out = {now}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do table.insert(out, v) end
return out
"""
)

_SCRIPTS = {
    "claim": _CLAIM,
    "publish": _PUBLISH,
    "fail": _FAIL,
    "release": _RELEASE,
    "cooldown_start": _COOLDOWN_START,
    "cooldown_pull": _COOLDOWN_PULL,
    "budget": _BUDGET,
    "breaker_open": _BREAKER_OPEN,
    "breaker_close": _BREAKER_CLOSE,
    "breaker_probe": _BREAKER_PROBE,
    "breaker_pull": _BREAKER_PULL,
}
_ERROR_TTL_MS = 60_000
_BUDGET_TTL_MS = 86_400_000
_BREAKER_TTL_MS = 86_400_000  # a breaker nobody touched for a day is forgotten (closed)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(token: StoredToken) -> str:
    lifetime = 0 if token.lifetime is None else max(1, math.ceil(token.lifetime * 1000))
    return f"{lifetime}:{token.value}"


def _parse_record(record: str, pttl: int) -> StoredToken | None:
    if not record:
        return None
    lifetime, _, value = record.partition(":")
    lifetime_ms = int(lifetime) if lifetime.isdigit() else 0
    return StoredToken(value, None if pttl < 0 else pttl / 1000, lifetime_ms / 1000 if lifetime_ms else None)


def _parse_breaker(record: str, now: int) -> tuple[int, str, float, float, object] | None:
    """``(version, state, seconds left, open_for, classification)`` of a stored breaker record."""
    version, state, ends, open_for, payload = [*record.split("|", 4), "", "", "", ""][:5]
    if not (version.isdigit() and ends.isdigit() and open_for.isdigit()) or state not in ("open", "closed"):
        return None
    cause = None
    if payload:
        try:
            cause = decode_classification(json.loads(payload).get("c"))
        except (ValueError, AttributeError):
            cause = None
    return int(version), state, max(0, int(ends) - now) / 1000, int(open_for) / 1000, cause


def _parse_error(text: str) -> SharedError | None:
    if not text:
        return None
    calls, _, body = text.partition("|")
    return SharedError.decode(int(calls), body) if calls.isdigit() else None


class RedisTokenStore:
    """A token store in Redis, shared by every process and machine that uses the same app.

    ``RedisTokenStore.from_url("redis://127.0.0.1:6379/0")`` (``rediss://`` for TLS; a password
    in the URL is never shown). Options:

    * ``namespace``: prefix of every key (default ``"retrypolicy"``);
    * ``key``: names the app when the hook does not (the built-in hooks' ``appid``, ``sdkappid``,
      ``identifier`` or ``username`` are used otherwise; a plain function hook is keyed by the
      platform alone, so give ``key`` when several apps of one platform share a Redis);
    * ``lease``: how long the renewal lock lives if its holder dies (default: the transport's
      ``token_timeout`` + 5 s);
    * ``share_cooldowns`` / ``share_budget`` / ``share_breakers`` (default ``True``): share
      cooldowns (a quota hit by one worker pauses all within ``sync_interval`` seconds), the
      retry budget, and the circuit breakers (one opened by a worker fails the others' requests
      fast within ``sync_interval`` seconds, and a half-open one gets its probes from one worker);
    * ``cluster`` (default ``False``): the URL names a node of a Redis Cluster (redis-py's
      ``RedisCluster``, sync and asyncio); every key of one app carries one hash tag
      (``{platform:app}``), so each script's keys share a slot;
    * ``socket_timeout`` (default 1 s) and any other ``redis.Redis`` (or ``RedisCluster``) option.

    ``client=`` / ``async_client=`` take ready clients instead of a URL (a ``RedisCluster``
    too). An asyncio client passed in belongs to the event loop it first runs on; with a URL, the
    store opens one per event loop.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        async_client: Any = None,
        namespace: str = "retrypolicy",
        key: str | None = None,
        lease: float | None = None,
        share_cooldowns: bool = True,
        share_budget: bool = True,
        share_breakers: bool = True,
        sync_interval: float = 1.0,
        cluster: bool = False,
        **options: Any,
    ) -> None:
        if url is None and client is None and async_client is None:
            raise ConfigurationError("RedisTokenStore needs a url (or client= / async_client=)")
        if not isinstance(cluster, bool):
            raise ConfigurationError(f"cluster must be True or False, got {cluster!r}")
        if cluster and url is None:
            raise ConfigurationError("cluster=True needs a url; a client passed in is used as it is")
        if url is not None and not isinstance(url, str):
            raise ConfigurationError(f"url must be a str, got {type(url).__name__}")
        if url is not None:
            # The store makes its clients from the url when first used. Without redis-py it would
            # fail there, and every worker would renew on its own behind a store_unavailable warning:
            # exactly what the store exists to prevent. So say it now.
            _import_redis()
        self.namespace = check_key(namespace, "namespace") or "retrypolicy"
        self.key = check_key(key, "key")
        if lease is not None and (not isinstance(lease, (int, float)) or not 0 < lease < math.inf):
            raise ConfigurationError(f"lease must be a number of seconds > 0, got {lease!r}")
        if not isinstance(sync_interval, (int, float)) or not 0 < sync_interval < math.inf:
            raise ConfigurationError(f"sync_interval must be a number of seconds > 0, got {sync_interval!r}")
        self.lease = lease
        self.share_cooldowns = bool(share_cooldowns)
        self.share_budget = bool(share_budget)
        self.share_breakers = bool(share_breakers)
        self.sync_interval = float(sync_interval)
        self._url = url
        self._cluster = cluster
        self._options = options
        self._client = client
        self._async_client = async_client
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, dict[str, Any]]] = (
            weakref.WeakKeyDictionary()
        )
        self._scripts: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisTokenStore:
        """A store for the Redis at ``url``; ``options`` as for the constructor."""
        return cls(url, **options)

    def describe(self) -> str:
        where = redact_url(self._url) if self._url is not None else "client"
        return f"RedisTokenStore(url={where!r}, namespace={self.namespace!r})"

    __repr__ = describe

    # -- clients -------------------------------------------------------------------------------

    def _sync(self) -> dict[str, Any]:
        scripts = self._scripts
        if scripts is not None:
            return scripts
        with self._lock:
            if self._scripts is None:
                client = self._client
                if client is None:
                    if self._url is None:
                        raise ConfigurationError("RedisTokenStore has no synchronous client: pass url= or client=")
                    redis = _import_redis()
                    from redis.backoff import NoBackoff  # noqa: PLC0415
                    from redis.retry import Retry  # noqa: PLC0415

                    options = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, **self._options}
                    options.setdefault("retry", Retry(NoBackoff(), 1))
                    if self._cluster:
                        from redis.cluster import RedisCluster  # noqa: PLC0415

                        client = self._client = RedisCluster.from_url(self._url, **options)
                    else:
                        client = self._client = redis.Redis.from_url(self._url, **options)
                self._scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
            return self._scripts

    def _async(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        entry = self._aclients.get(loop)
        if entry is None:
            client = self._async_client
            if client is None:
                if self._url is None:
                    raise ConfigurationError("RedisTokenStore has no asyncio client: pass url= or async_client=")
                _import_redis()
                import redis.asyncio  # noqa: PLC0415
                from redis.asyncio.retry import Retry  # noqa: PLC0415
                from redis.backoff import NoBackoff  # noqa: PLC0415

                options = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, **self._options}
                options.setdefault("retry", Retry(NoBackoff(), 1))
                if self._cluster:
                    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster  # noqa: PLC0415

                    client = AsyncRedisCluster.from_url(self._url, **options)
                else:
                    client = redis.asyncio.Redis.from_url(self._url, **options)
            entry = (client, {name: client.register_script(src) for name, src in _SCRIPTS.items()})
            self._aclients[loop] = entry
        return entry[1]

    def close(self) -> None:
        """Close the synchronous client's connections (a later call opens new ones)."""
        client, self._client, self._scripts = self._client, None, None
        if client is not None and self._url is not None:  # a client passed in is the caller's to close
            client.close()
        elif client is not None:
            self._client = client

    async def aclose(self) -> None:
        """Close the asyncio client of the running event loop (call it before the loop ends)."""
        entry = self._aclients.pop(asyncio.get_running_loop(), None)
        if entry is not None and self._url is not None:
            await entry[0].aclose()

    # -- keys ----------------------------------------------------------------------------------

    def _keys(self, key: str, *names: str) -> list[str]:
        base = f"{self.namespace}:{{{key}}}"
        return [f"{base}:{name}" for name in names]

    # -- the token store -----------------------------------------------------------------------

    def _claim_args(self, key: str, owner: str, lease: float, stale: str | None) -> tuple[list[str], list[str]]:
        keys = self._keys(key, "token", "lock", "calls", "error")
        return keys, [owner, str(max(1, math.ceil(lease * 1000))), stale or ""]

    @staticmethod
    def _claim_result(reply: Any) -> Claim:
        status, calls, record, pttl, error = reply
        name = _text(status)
        assert name in ("fresh", "acquired", "busy")
        return Claim(name, int(calls), _parse_record(_text(record), int(pttl)), _parse_error(_text(error)))  # type: ignore[arg-type]

    def _publish_args(
        self, key: str, owner: str, expected: str | None, token: StoredToken
    ) -> tuple[list[str], list[str]]:
        px = "0" if token.expires_in is None else str(max(1, math.ceil(token.expires_in * 1000)))
        return self._keys(key, "token", "lock", "error"), [owner, expected or "", _record(token), px]

    @staticmethod
    def _publish_result(reply: Any) -> StoredToken | None:
        stored, record, pttl = reply
        return None if int(stored) else _parse_record(_text(record), int(pttl))

    def _fail_args(self, key: str, owner: str, error: SharedError) -> tuple[list[str], list[str]]:
        return self._keys(key, "error", "lock"), [owner, f"{error.calls}|{error.encode()}", str(_ERROR_TTL_MS)]

    def claim(self, key: str, owner: str, lease: float, stale: str | None) -> Claim:
        keys, args = self._claim_args(key, owner, lease, stale)
        return self._claim_result(self._sync()["claim"](keys=keys, args=args))

    def publish(self, key: str, owner: str, expected: str | None, token: StoredToken) -> StoredToken | None:
        keys, args = self._publish_args(key, owner, expected, token)
        return self._publish_result(self._sync()["publish"](keys=keys, args=args))

    def fail(self, key: str, owner: str, error: SharedError) -> None:
        keys, args = self._fail_args(key, owner, error)
        self._sync()["fail"](keys=keys, args=args)

    def release(self, key: str, owner: str) -> None:
        self._sync()["release"](keys=self._keys(key, "lock"), args=[owner])

    async def aclaim(self, key: str, owner: str, lease: float, stale: str | None) -> Claim:
        keys, args = self._claim_args(key, owner, lease, stale)
        return self._claim_result(await self._async()["claim"](keys=keys, args=args))

    async def apublish(self, key: str, owner: str, expected: str | None, token: StoredToken) -> StoredToken | None:
        keys, args = self._publish_args(key, owner, expected, token)
        return self._publish_result(await self._async()["publish"](keys=keys, args=args))

    async def afail(self, key: str, owner: str, error: SharedError) -> None:
        keys, args = self._fail_args(key, owner, error)
        await self._async()["fail"](keys=keys, args=args)

    async def arelease(self, key: str, owner: str) -> None:
        await self._async()["release"](keys=self._keys(key, "lock"), args=[owner])

    # -- shared cooldowns (see _overload.SharedCooldowns) ---------------------------------------

    def cooldown_start(self, name: str, scope: str, key: str, seconds: float, classification: object) -> None:
        c = getattr(classification, "as_dict", None)
        payload = json.dumps({"scope": scope, "key": key, "c": c() if callable(c) else None}, separators=(",", ":"))
        keys = self._keys(name, "cooldowns", "cooldowns:end")
        self._sync()["cooldown_start"](keys=keys, args=[str(max(1, math.ceil(seconds * 1000))), payload])

    def cooldown_pull(self, name: str, since: float | None) -> tuple[float, list[tuple[str, str, float, object]]]:
        reply = self._sync()["cooldown_pull"](
            keys=self._keys(name, "cooldowns"), args=["-inf" if since is None else str(int(since))]
        )
        now, *items = reply
        entries: list[tuple[str, str, float, object]] = []
        for item in items:
            left, _, payload = _text(item).partition("|")
            try:
                raw = json.loads(payload)
                scope, key = str(raw["scope"]), str(raw["key"])
            except (ValueError, KeyError, TypeError):
                continue
            c = decode_classification(raw.get("c"))
            if c is not None and scope in ("app", "recipient"):
                entries.append((scope, key, int(left) / 1000, c))
        return float(now), entries

    # -- the shared retry budget (see _overload.SharedBudgets) ----------------------------------

    def budget_take(self, name: str, capacity: float, cost: float, refill: float) -> tuple[bool, float]:
        args = [repr(float(capacity)), repr(float(cost)), repr(float(refill)), str(_BUDGET_TTL_MS)]
        spent, level = self._sync()["budget"](keys=self._keys(name, "budget"), args=args)
        return bool(int(spent)), float(_text(level))

    # -- shared circuit breakers (see _breaker.SharedBreakers) ------------------------------------

    def breaker_open(
        self, name: str, key: str, seconds: float, classification: object
    ) -> tuple[int, str, float, float, object]:
        c = getattr(classification, "as_dict", None)
        payload = json.dumps({"c": c() if callable(c) else None}, separators=(",", ":"))
        keys = self._keys(name, "breakers", f"probe:{key}")
        args = [key, str(max(1, math.ceil(seconds * 1000))), payload, str(_BREAKER_TTL_MS)]
        record, now = self._sync()["breaker_open"](keys=keys, args=args)
        parsed = _parse_breaker(_text(record), int(now))
        assert parsed is not None
        return parsed

    def breaker_close(self, name: str, key: str) -> int:
        keys = self._keys(name, "breakers", f"probe:{key}")
        return int(self._sync()["breaker_close"](keys=keys, args=[key, str(_BREAKER_TTL_MS)]))

    def breaker_probe(
        self, name: str, key: str, probes: int, lease: float
    ) -> tuple[str, tuple[int, str, float, float, object] | None]:
        keys = self._keys(name, "breakers", f"probe:{key}")
        verdict, record, now = self._sync()["breaker_probe"](
            keys=keys, args=[key, str(int(probes)), str(max(1, math.ceil(lease * 1000)))]
        )
        return _text(verdict), _parse_breaker(_text(record), int(now)) if record else None

    def breaker_pull(self, name: str) -> dict[str, tuple[int, str, float, float, object]]:
        now, *items = self._sync()["breaker_pull"](keys=self._keys(name, "breakers"), args=[])
        out: dict[str, tuple[int, str, float, float, object]] = {}
        for key, record in zip(items[::2], items[1::2], strict=True):
            parsed = _parse_breaker(_text(record), int(now))
            if parsed is not None:
                out[_text(key)] = parsed
        return out


def _import_redis() -> Any:
    try:
        import redis  # noqa: PLC0415
    except ImportError:
        raise ConfigurationError("RedisTokenStore needs redis-py: pip install 'retrypolicy[redis]'") from None
    return redis
