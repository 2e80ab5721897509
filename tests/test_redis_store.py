"""Many workers, one token: TokenStore, MemoryTokenStore and RedisTokenStore against a real redis-server.

A session fixture starts ``redis-server`` on 127.0.0.1 and a free port (no persistence); tests
that kill Redis start their own, and the TLS tests share a TLS-only one. Every test uses its own
namespace. Skipped only when the ``redis-server`` binary (or, for TLS, ``openssl``) is missing
(CI installs both: see .ci/run).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import redis
import redis.cluster
from structlog.testing import capture_logs

import retrypolicy
import retrypolicy.testing
from retrypolicy._store import SharedError, StoredToken, store_key
from retrypolicy.hooks import WeChatTokenHook
from retrypolicy.testing import ErrorCode, FakeWeChat, RateLimited
from tests.redis_workers import SEND, RedisServer, drain, free_port, lock_holder_worker, redis_server, stampede_worker
from tests.support import MODES

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="the redis-server binary is not installed (apt-get install redis-server); CI installs it",
)

APPID, SECRET = "wx00000000000redis", "the-app-secret-0123"
BODY = {"touser": "OPENID", "msgtype": "text"}


@pytest.fixture(scope="session")
def server() -> Iterator[RedisServer]:
    with redis_server() as srv:
        yield srv


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(server: RedisServer, namespace: str) -> Iterator[retrypolicy.RedisTokenStore]:
    s = retrypolicy.RedisTokenStore.from_url(server.url, namespace=namespace, sync_interval=0.05)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _testing() -> Iterator[None]:
    retrypolicy.set_testing(True)
    yield
    retrypolicy.set_testing(False)


def _client(store: Any, mode: str, fake: FakeWeChat, **kw: Any) -> Any:
    hook = kw.pop("token", fake.token_hook())
    if mode == "sync":
        t: Any = retrypolicy.RetryTransport(
            "wechat", token=hook, token_store=store, transport=httpx.MockTransport(fake), **kw
        )
        return httpx.Client(transport=t, base_url=FakeWeChat.BASE_URL)
    t = retrypolicy.AsyncRetryTransport(
        "wechat", token=hook, token_store=store, transport=httpx.MockTransport(fake), **kw
    )
    return httpx.AsyncClient(transport=t, base_url=FakeWeChat.BASE_URL)


def _concurrently(mode: str, clients: list[Any], per_client: int, store: object = None) -> list[Any]:
    """``per_client`` concurrent sends on each client (threads or tasks); the answers or errors.
    The clients are closed at the end, and the asyncio connections of ``store``."""
    out: list[Any] = []
    lock = threading.Lock()
    payload = BODY
    if mode == "sync":

        def one(client: httpx.Client) -> None:
            try:
                r: Any = client.post(SEND, json=payload).json()["errcode"]
            except retrypolicy.RequestFailed as exc:
                r = exc
            with lock:
                out.append(r)

        threads = [threading.Thread(target=one, args=(c,)) for c in clients for _ in range(per_client)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        for c in clients:
            c.close()
        return out

    async def main() -> None:
        async def one(client: httpx.AsyncClient) -> None:
            try:
                r: Any = (await client.post(SEND, json=payload)).json()["errcode"]
            except retrypolicy.RequestFailed as exc:
                r = exc
            out.append(r)

        async with anyio.create_task_group() as tg:
            for c in clients:
                for _ in range(per_client):
                    tg.start_soon(one, c)
        for c in clients:
            await c.aclose()

        if isinstance(store, retrypolicy.RedisTokenStore):  # its asyncio connections belong to this loop
            await store.aclose()

    anyio.run(main)
    return out


# -- the store contract: Memory and Redis, sync and async --------------------------------------

STORES = ["memory", "redis"]


def _make(kind: str, server: RedisServer, namespace: str) -> Any:
    if kind == "memory":
        return retrypolicy.MemoryTokenStore()
    return retrypolicy.RedisTokenStore.from_url(server.url, namespace=namespace)


def _call(mode: str, store: Any, name: str, *args: Any) -> Any:
    if mode == "sync":
        return getattr(store, name)(*args)

    async def run() -> Any:
        try:
            return await getattr(store, "a" + name)(*args)
        finally:
            if hasattr(store, "aclose"):
                await store.aclose()

    return anyio.run(run)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", STORES)
def test_store_contract(kind: str, mode: str, server: RedisServer, namespace: str) -> None:
    _check_contract(mode, _make(kind, server, namespace))


def _check_contract(mode: str, s: Any) -> None:
    key = "wechat:wx1"
    first = _call(mode, s, "claim", key, "a", 5.0, None)
    assert (first.status, first.calls, first.token) == ("acquired", 1, None)
    assert _call(mode, s, "claim", key, "b", 5.0, None).status == "busy"  # single flight
    assert _call(mode, s, "publish", key, "a", None, StoredToken("T1", 7200.0, 7200.0)) is None
    fresh = _call(mode, s, "claim", key, "b", 5.0, None)
    assert fresh.status == "fresh" and fresh.token is not None and fresh.token.value == "T1"
    assert 7190 < fresh.token.expires_in <= 7200 and fresh.token.lifetime == 7200.0
    assert "T1" not in repr(fresh)
    # a request that failed with T1 takes the lock; the store hands it what it has now (T1)
    renew = _call(mode, s, "claim", key, "b", 5.0, "T1")
    assert renew.status == "acquired" and renew.calls == 2 and renew.token.value == "T1"
    # b's hook fails: the failure is recorded for those who waited, and T1 is untouched
    _call(mode, s, "fail", key, "b", SharedError(renew.calls, "token hook raised HookError"))
    after = _call(mode, s, "claim", key, "c", 5.0, "T1")
    assert after.status == "acquired" and after.error is not None and after.error.calls == 2
    assert after.error.message == "token hook raised HookError"
    # compare-and-swap: c publishes over T1; a late publisher that saw T1 does not overwrite T2
    assert _call(mode, s, "publish", key, "c", "T1", StoredToken("T2", 7200.0, 7200.0)) is None
    newer = _call(mode, s, "publish", key, "late", "T1", StoredToken("T3", 7200.0, 7200.0))
    assert newer is not None and newer.value == "T2"
    ok = _call(mode, s, "claim", key, "d", 5.0, "T1")
    assert ok.status == "fresh" and ok.token.value == "T2" and ok.error is None  # a success clears it
    # release is compare-and-delete: only the owner's release frees the lock
    assert _call(mode, s, "claim", key, "e", 5.0, "T2").status == "acquired"
    _call(mode, s, "release", key, "intruder")
    assert _call(mode, s, "claim", key, "f", 5.0, "T2").status == "busy"
    _call(mode, s, "release", key, "e")
    assert _call(mode, s, "claim", key, "f", 5.0, "T2").status == "acquired"


@pytest.mark.parametrize("kind", STORES)
def test_store_lease_expires(kind: str, server: RedisServer, namespace: str) -> None:
    s = _make(kind, server, namespace)
    assert s.claim("wechat:x", "dead", 0.2, None).status == "acquired"
    assert s.claim("wechat:x", "b", 5.0, None).status == "busy"
    time.sleep(0.3)
    assert s.claim("wechat:x", "b", 5.0, None).status == "acquired"


@pytest.mark.parametrize("kind", STORES)
def test_store_margin_and_no_expiry(kind: str, server: RedisServer, namespace: str) -> None:
    s = _make(kind, server, namespace)
    s.claim("k", "a", 5.0, None)
    s.publish("k", "a", None, StoredToken("NEAR", 5.0, 100.0))  # 5 s left of 100: inside the 10 s margin
    near = s.claim("k", "b", 5.0, None)
    assert near.status == "acquired" and near.token.value == "NEAR"
    s.publish("k", "b", "NEAR", StoredToken("FOREVER"))
    forever = s.claim("k", "c", 5.0, None)
    assert forever.status == "fresh" and forever.token.expires_in is None and forever.token.lifetime is None


# -- transports sharing a store in one process (sync and async paths) ---------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", STORES)
def test_transports_share_one_renewal(kind: str, mode: str, server: RedisServer, namespace: str) -> None:
    """Four transports (own managers and locks, like four processes) x 15 concurrent requests on an
    expired token: one hook call in all; the others take the stored token."""
    fake = FakeWeChat(APPID, SECRET)
    s = _make(kind, server, namespace)
    old = fake.issue_token()
    s.claim("wechat", "seed", 5.0, None)
    s.publish("wechat", "seed", None, StoredToken(old, 7200.0, 7200.0))
    fake.expire_tokens()
    clients = [_client(s, mode, fake) for _ in range(4)]
    out = _concurrently(mode, clients, 15, s)
    assert out == [0] * 60
    assert fake.token_requests == 1
    assert len(fake.sent) == 60


@pytest.mark.parametrize("mode", MODES)
def test_sync_and_async_transports_share_a_memory_store(mode: str) -> None:
    fake = FakeWeChat(APPID, SECRET)
    s = retrypolicy.MemoryTokenStore()
    sync = _client(s, "sync", fake)
    assert sync.post(SEND, json=BODY).json()["errcode"] == 0
    other = _client(s, mode, fake)
    out = _concurrently(mode, [other], 5, s)
    sync.close()
    assert out == [0] * 5 and fake.token_requests == 1


@pytest.mark.parametrize("mode", MODES)
def test_failed_renewal_is_shared_not_repeated(mode: str, store: retrypolicy.RedisTokenStore) -> None:
    """A failing hook: the renewers that waited on it fail with its error; one call in all."""
    calls: list[int] = []

    def failing() -> str:
        calls.append(1)
        time.sleep(0.3)
        raise RuntimeError("token endpoint said no, secret=hunter2")

    fake = FakeWeChat(APPID, SECRET)
    clients = [_client(store, mode, fake, token=failing) for _ in range(3)]
    out = _concurrently(mode, clients, 4, store)
    assert len(out) == 12 and all(isinstance(r, retrypolicy.TokenRefreshFailed) for r in out)
    assert len(calls) == 1
    assert all("hunter2" not in str(r) for r in out)
    # a new request may try again
    out = _concurrently(mode, [_client(store, mode, fake, token=failing)], 1, store)
    assert len(calls) == 2


# -- many processes ---------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["empty", "expired"])
def test_eight_processes_one_token_request(
    start: str, server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 spawned processes x 50 concurrent requests through AsyncRetryTransport, against a served
    FakeWeChat, with no token at all or an expired one in Redis: one call of the token endpoint."""
    fake = FakeWeChat(APPID, SECRET, plain_text_every=0)
    processes, per_process = 8, 50
    if start == "expired":
        s = retrypolicy.RedisTokenStore.from_url(server.url, namespace=namespace)
        key = store_key("wechat", WeChatTokenHook(APPID, SECRET))
        s.claim(key, "seed", 5.0, None)
        s.publish(key, "seed", None, StoredToken(fake.issue_token(), 7200.0, 7200.0))
        fake.expire_tokens()
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    with fake.serve() as base_url:
        workers = [
            ctx.Process(
                target=stampede_worker,
                args=(server.url, namespace, base_url, APPID, SECRET, per_process, ready, go, results),
                daemon=True,
            )
            for _ in range(processes)
        ]
        for w in workers:
            w.start()
        try:
            drain(ready, processes, 60)
            go.set()  # all at once
            outcomes = drain(results, processes, 60)
        finally:
            for w in workers:
                w.join(10)
                if w.is_alive():
                    w.kill()
    assert [o["errors"] for o in outcomes] == [[]] * processes
    assert sum(o["ok"] for o in outcomes) == processes * per_process
    assert fake.token_requests == 1
    assert sum(o["hook_calls"] for o in outcomes) == 1
    assert len(fake.sent) == processes * per_process


def test_killed_lock_holder_lease_expires(server: RedisServer, namespace: str) -> None:
    """A process takes the renewal lock and is killed in its hook: after its lease another renews."""
    fake = FakeWeChat(APPID, SECRET)
    ctx = multiprocessing.get_context("spawn")
    holding = ctx.Queue()
    with fake.serve() as base_url:
        holder = ctx.Process(
            target=lock_holder_worker, args=(server.url, namespace, base_url, 1.0, holding), daemon=True
        )
        holder.start()
        try:
            drain(holding, 1, 60)
        finally:
            holder.kill()
            holder.join(10)
        lock = f"{namespace}:{{wechat}}:lock"
        assert redis.Redis.from_url(server.url).exists(lock)  # left behind by the dead holder
        s = retrypolicy.RedisTokenStore.from_url(server.url, namespace=namespace)
        transport = retrypolicy.RetryTransport("wechat", token=fake.token_hook(), token_store=s)
        started = time.monotonic()
        with httpx.Client(transport=transport, base_url=base_url) as client:
            assert client.post(SEND, json=BODY).json()["errcode"] == 0
        assert time.monotonic() - started < 5
    assert fake.token_requests == 1


@pytest.mark.parametrize("mode", MODES)
def test_stuck_lock_waits_for_its_lease(mode: str, server: RedisServer, store: retrypolicy.RedisTokenStore) -> None:
    """A lock key set by hand with a lease and never released: the next renewal waits it out."""
    redis.Redis.from_url(server.url).set(f"{store.namespace}:{{wechat}}:lock", "crashed-owner", px=600)
    fake = FakeWeChat(APPID, SECRET)
    started = time.monotonic()
    out = _concurrently(mode, [_client(store, mode, fake)], 3, store)
    waited = time.monotonic() - started
    assert out == [0, 0, 0] and fake.token_requests == 1
    assert 0.4 < waited < 5


# -- Redis down --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_redis_killed_mid_run(mode: str) -> None:
    """Requests keep succeeding (process-local renewal) and one warning says so, without the password."""
    password = "redis-pass-" + uuid.uuid4().hex[:8]
    fake = FakeWeChat(APPID, SECRET)
    with redis_server(password=password) as srv:
        s = retrypolicy.RedisTokenStore.from_url(srv.url, namespace="killed", sync_interval=0.01)
        assert password not in repr(s)
        client = _client(s, mode, fake)
        with capture_logs() as logs:
            assert _concurrently(mode, [client], 5, s) == [0] * 5
            srv.kill()
            fake.expire_tokens()  # the next requests need a renewal, and Redis is gone
            time.sleep(0.02)
            out = _concurrently(mode, [_client(s, mode, fake) for _ in range(2)], 5, s)
            fake.script(RateLimited())  # a cooldown start and a budget spend with Redis down
            more = _concurrently(mode, [_client(s, mode, fake, retry=retrypolicy.RetrySettings(deadline=600))], 1, s)
    assert out == [0] * 10 and more == [0]
    # one renewal while Redis was up; then each of the three new transports renews on its own
    assert fake.token_requests == 4
    warnings = [e for e in logs if e["event"] == "retrypolicy.store_unavailable"]
    assert warnings, [e["event"] for e in logs]
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["error"] in ("ConnectionError", "TimeoutError")
    causes = (None, "ConnectionError", "ConnectionRefusedError", "ConnectionResetError", "TimeoutError")
    assert warnings[0].get("cause") in causes  # the socket's error under redis-py's, by name
    assert warnings[0]["fallback"] == "process-local"
    assert "redis://***@127.0.0.1" in warnings[0]["store"]
    assert password not in repr(logs)


def test_unreachable_redis_from_the_start() -> None:
    s = retrypolicy.RedisTokenStore.from_url(f"redis://:pw-xyz@127.0.0.1:{free_port()}/0")
    fake = FakeWeChat(APPID, SECRET)
    with capture_logs() as logs:
        out = _concurrently("sync", [_client(s, "sync", fake)], 3, s)
    assert out == [0, 0, 0] and fake.token_requests == 1
    warnings = [e for e in logs if e["event"] == "retrypolicy.store_unavailable"]
    assert len(warnings) == 1 and warnings[0]["cause"] == "ConnectionRefusedError"  # nothing listens there
    assert "pw-xyz" not in repr(logs)


# -- Redis over TLS ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_server() -> Iterator[RedisServer]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl binary is not installed; CI installs it")
    with retrypolicy.testing.redis_server(password="tls-pass-0123", tls=True) as srv:
        yield srv


@pytest.mark.parametrize("mode", MODES)
def test_tls_store_shares_one_renewal(mode: str, tls_server: RedisServer, namespace: str) -> None:
    """rediss:// with the server's CA: three transports, 8 concurrent requests each on an expired
    token, one renewal in all; and the token is in Redis, read back over TLS."""
    assert tls_server.url.startswith("rediss://") and tls_server.tls_ca is not None
    s = retrypolicy.RedisTokenStore.from_url(tls_server.url, namespace=namespace, ssl_ca_certs=tls_server.tls_ca)
    fake = FakeWeChat(APPID, SECRET)
    with capture_logs() as logs:
        out = _concurrently(mode, [_client(s, mode, fake) for _ in range(3)], 8, s)
    assert out == [0] * 24 and fake.token_requests == 1
    assert not [e for e in logs if e["event"] == "retrypolicy.store_unavailable"]
    claim = s.claim("wechat", "tls-check", 5.0, None)  # read back over TLS
    assert claim.status == "fresh" and claim.token is not None and claim.token.value
    assert claim.token.value not in repr(logs)
    s.close()


@pytest.mark.parametrize("mode", MODES)
def test_tls_store_with_an_untrusted_certificate_falls_back(mode: str, tls_server: RedisServer, namespace: str) -> None:
    """Without the CA the handshake fails: requests still succeed (process-local renewal), one
    warning names the error, and neither the password nor the token is in the logs."""
    s = retrypolicy.RedisTokenStore.from_url(tls_server.url, namespace=namespace)
    fake = FakeWeChat(APPID, SECRET)
    with capture_logs() as logs:
        out = _concurrently(mode, [_client(s, mode, fake)], 4, s)
    assert out == [0] * 4 and fake.token_requests == 1
    warnings = [e for e in logs if e["event"] == "retrypolicy.store_unavailable"]
    assert len(warnings) == 1 and warnings[0]["error"] == "ConnectionError"
    assert warnings[0]["cause"] == "SSLCertVerificationError: CERTIFICATE_VERIFY_FAILED"  # what to fix
    assert warnings[0]["fallback"] == "process-local"
    assert "rediss://***@127.0.0.1" in warnings[0]["store"]
    assert "tls-pass-0123" not in repr(logs)


def test_tls_store_with_a_missing_ca_file_says_so(tls_server: RedisServer, namespace: str) -> None:
    s = retrypolicy.RedisTokenStore.from_url(tls_server.url, namespace=namespace, ssl_ca_certs="/no/such/ca.pem")
    fake = FakeWeChat(APPID, SECRET)
    with capture_logs() as logs:
        assert _concurrently("sync", [_client(s, "sync", fake)], 2, s) == [0, 0]
    warnings = [e for e in logs if e["event"] == "retrypolicy.store_unavailable"]
    assert len(warnings) == 1 and warnings[0]["cause"] == "FileNotFoundError"
    assert "/no/such" not in repr(logs)  # a type name, not the text


# -- Redis Cluster -----------------------------------------------------------------------------
# Every key of one app carries the same hash tag ({platform:app}), so each script's keys share a
# slot: a RedisCluster client (redis-py's, sync and asyncio) works as it is.


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[RedisServer]]:
    """Three cluster-enabled redis-servers, the 16,384 slots split between them, no replicas."""
    with contextlib.ExitStack() as stack:
        # each bus port is named: by default it is the port + 10,000, past 65,535 for a high free port
        buses = [free_port() for _ in range(3)]
        nodes = [
            stack.enter_context(redis_server(options=["--cluster-enabled", "yes", "--cluster-port", str(bus)]))
            for bus in buses
        ]
        clients = [redis.Redis(host="127.0.0.1", port=n.port) for n in nodes]
        for client, (low, high) in zip(clients, [(0, 5460), (5461, 10922), (10923, 16383)], strict=True):
            client.execute_command("CLUSTER ADDSLOTSRANGE", low, high)  # type: ignore[no-untyped-call]
        for node, bus in zip(nodes[1:], buses[1:], strict=True):
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port, bus)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 15
        while not all(c.cluster("INFO")["cluster_state"] == "ok" for c in clients):
            assert time.monotonic() < deadline, "the test cluster did not form"
            time.sleep(0.05)
        for client in clients:
            client.close()
        yield nodes


def _cluster_store(cluster: list[RedisServer], namespace: str) -> retrypolicy.RedisTokenStore:
    url = f"redis://127.0.0.1:{cluster[0].port}/0"  # one node: the client finds the others
    return retrypolicy.RedisTokenStore.from_url(url, cluster=True, namespace=namespace, sync_interval=0.05)


@pytest.mark.parametrize("mode", MODES)
def test_cluster_store_contract(mode: str, cluster: list[RedisServer], namespace: str) -> None:
    s = _cluster_store(cluster, namespace)
    _check_contract(mode, s)
    s.close()


def test_cluster_client_passed_in(cluster: list[RedisServer], namespace: str) -> None:
    """A RedisCluster the caller made works as it is, and stays the caller's to close."""
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster[1].port)
    s = retrypolicy.RedisTokenStore(client=client, namespace=namespace)
    _check_contract("sync", s)
    s.close()
    assert client.ping() is True
    client.close()
    with pytest.raises(retrypolicy.ConfigurationError, match="cluster=True needs a url"):
        retrypolicy.RedisTokenStore(client=client, cluster=True)
    with pytest.raises(retrypolicy.ConfigurationError, match="cluster must be True or False"):
        retrypolicy.RedisTokenStore.from_url("redis://127.0.0.1:1/0", cluster="yes")


@pytest.mark.parametrize("mode", MODES)
def test_cluster_transports_share_one_renewal_and_cooldowns(
    mode: str, cluster: list[RedisServer], namespace: str
) -> None:
    """Three transports x 8 requests on an expired token renew once; then a daily-quota error
    seen by one transport pauses another; no store call fails (no CROSSSLOT, no MOVED error)."""
    retrypolicy.set_testing(False)  # cooldowns at their real length; no backoff sleeps in this test
    s = _cluster_store(cluster, namespace)
    fake = FakeWeChat(APPID, SECRET)
    with capture_logs() as logs:
        assert _concurrently(mode, [_client(s, mode, fake) for _ in range(3)], 8, s) == [0] * 24
        assert fake.token_requests == 1
        fake.script(ErrorCode(45009))
        assert isinstance(_concurrently(mode, [_client(s, mode, fake)], 1, s)[0], retrypolicy.RequestFailed)
        sent = fake.requests
        time.sleep(0.06)  # one sync_interval: the other transport pulls the cooldown
        blocked = _concurrently(mode, [_client(s, mode, fake)], 1, s)[0]
    assert isinstance(blocked, retrypolicy.CooldownActive) and blocked.classification.code == 45009
    assert fake.requests == sent
    assert not [e for e in logs if e["event"] == "retrypolicy.store_unavailable"]
    node = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster[0].port)
    keys = [k for k in node.scan_iter(match=f"{namespace}:*", target_nodes=redis.cluster.RedisCluster.ALL_NODES)]
    slots = {node.keyslot(k) for k in keys}  # type: ignore[no-untyped-call]
    assert len(keys) >= 3 and len(slots) == 1  # one app's keys, one slot
    node.close()
    s.close()


# -- shared cooldowns and budget ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_cooldown_started_by_one_worker_pauses_all(mode: str, store: retrypolicy.RedisTokenStore) -> None:
    retrypolicy.set_testing(False)  # testing mode scales cooldowns to nothing; no backoff sleeps here anyway
    fake = FakeWeChat(APPID, SECRET)
    fake.script(ErrorCode(45009))  # the daily quota: an app cooldown until midnight in Beijing
    first = _concurrently(mode, [_client(store, mode, fake)], 1, store)
    assert isinstance(first[0], retrypolicy.RequestFailed)
    sent_before = fake.requests
    other = _client(store, mode, fake)  # another "process": its own cooldowns, the same Redis
    time.sleep(0.06)
    blocked = _concurrently(mode, [other], 1, store)
    assert isinstance(blocked[0], retrypolicy.CooldownActive)
    assert blocked[0].classification.code == 45009
    assert fake.requests == sent_before  # refused locally, nothing sent


def test_cooldowns_can_stay_local(server: RedisServer, namespace: str) -> None:
    retrypolicy.set_testing(False)
    s = retrypolicy.RedisTokenStore.from_url(server.url, namespace=namespace, share_cooldowns=False)
    fake = FakeWeChat(APPID, SECRET)
    fake.script(ErrorCode(45009))
    _concurrently("sync", [_client(s, "sync", fake)], 1, s)
    assert _concurrently("sync", [_client(s, "sync", fake)], 1, s) == [0]


def test_retry_budget_is_shared(store: retrypolicy.RedisTokenStore) -> None:
    """Two "processes" with a 3-retry budget each during an outage: 3 retries in all, not 6."""
    fake = FakeWeChat(APPID, SECRET)
    fake.fault_rate(1.0)  # every API answer is "system busy"
    budget = retrypolicy.RetryBudget(capacity=3, retry_cost=1, refill=0.1)
    retry = retrypolicy.RetrySettings(max_attempts=5, initial_delay=0, max_delay=0, deadline=60)
    clients = [_client(store, "sync", fake, budget=budget, retry=retry) for _ in range(2)]
    out = [_concurrently("sync", [c], 1, store)[0] for c in clients]
    assert [type(r).__name__ for r in out] == ["RetryBudgetExhausted", "RetryBudgetExhausted"]
    assert len(fake.injected) == 3 + 2  # 3 retries in all, plus each first attempt


def test_refills_reach_the_shared_budget(store: retrypolicy.RedisTokenStore, server: RedisServer) -> None:
    fake = FakeWeChat(APPID, SECRET)
    budget = retrypolicy.RetryBudget(capacity=10, retry_cost=1, refill=0.5)
    client = _client(store, "sync", fake, budget=budget)
    transport = client._transport
    level_key = f"{store.namespace}:{{wechat}}:budget"
    r = redis.Redis.from_url(server.url)
    r.set(level_key, "2")
    for _ in range(4):
        assert client.post(SEND, json=BODY).json()["errcode"] == 0
        time.sleep(0.06)  # longer than sync_interval: each request pushes the refills before it
    # refills are pushed before a later request is sent (never while a response is in hand):
    # the store has the first three, this process also counts the fourth
    assert float(r.get(level_key) or 0) == pytest.approx(3.5)
    assert transport.snapshot().budget["wechat"] == pytest.approx(4.0)
    client.close()


# -- keys, configuration, secrets --------------------------------------------------------------


def test_store_keys_never_hold_secrets(store: retrypolicy.RedisTokenStore, server: RedisServer) -> None:
    assert store_key("wechat", WeChatTokenHook(APPID, SECRET)) == f"wechat:{APPID}"
    assert store_key("wechat", lambda: "t") == "wechat"
    assert store_key("wechat", WeChatTokenHook(APPID, SECRET), "prod") == "wechat:prod"
    fake = FakeWeChat(APPID, SECRET)
    hook = WeChatTokenHook(APPID, SECRET, transport=httpx.MockTransport(fake))
    transport = retrypolicy.RetryTransport("wechat", token=hook, token_store=store, transport=httpx.MockTransport(fake))
    with httpx.Client(transport=transport, base_url=FakeWeChat.BASE_URL) as client:
        assert client.post(SEND, json=BODY).json()["errcode"] == 0
    keys = redis.Redis.from_url(server.url, decode_responses=True).keys(f"{store.namespace}:*")
    assert f"{store.namespace}:{{wechat:{APPID}}}:token" in keys
    assert all(SECRET not in k for k in keys)
    token = transport._core.managers["wechat"].current()
    assert token is not None and token not in repr(store) and token not in repr(transport)


def test_configuration_errors(server: RedisServer) -> None:
    with pytest.raises(retrypolicy.ConfigurationError, match="token_store"):
        retrypolicy.RetryTransport("wechat", token=lambda: "t", token_store=object())  # type: ignore[arg-type]
    with pytest.raises(retrypolicy.ConfigurationError, match="namespace"):
        retrypolicy.RedisTokenStore.from_url(server.url, namespace="has space")
    with pytest.raises(retrypolicy.ConfigurationError, match="lease"):
        retrypolicy.RedisTokenStore.from_url(server.url, lease=0)
    with pytest.raises(retrypolicy.ConfigurationError, match="url"):
        retrypolicy.RedisTokenStore()
    assert isinstance(retrypolicy.RedisTokenStore.from_url(server.url), retrypolicy.TokenStore)
    assert isinstance(retrypolicy.MemoryTokenStore(), retrypolicy.TokenStore)


def test_cancelled_renewal_releases_the_redis_lock(store: retrypolicy.RedisTokenStore, server: RedisServer) -> None:
    """A task cancelled inside the hook releases the shared lock at once (not after its lease)."""
    hanging = anyio.Event()

    async def hook() -> str:
        hanging.set()
        await anyio.sleep(30)
        return "never"  # pragma: no cover

    fake = FakeWeChat(APPID, SECRET)
    lock = f"{store.namespace}:{{wechat}}:lock"
    probe = redis.Redis.from_url(server.url)

    async def main() -> None:
        client = _client(store, "async", fake, token=hook)
        async with client:
            with anyio.move_on_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.post, SEND)
                    await hanging.wait()
                    assert probe.exists(lock)
                    tg.cancel_scope.cancel()
        await store.aclose()

    anyio.run(main)
    assert not probe.exists(lock)


def test_guard_logs_once_per_outage() -> None:
    from retrypolicy._store import StoreGuard  # noqa: PLC0415

    now = [0.0]
    guard = StoreGuard(retrypolicy.MemoryTokenStore(), retry_after=5.0, clock=lambda: now[0])
    with capture_logs() as logs:
        guard.failed(ConnectionError("redis://:pw@host"), "claim")
        assert not guard.available()
        guard.failed(ConnectionError("again"), "claim")
        now[0] = 6.0
        assert guard.available()
        guard.succeeded()
        guard.succeeded()
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("retrypolicy.store_unavailable", "warning"),
        ("retrypolicy.store_recovered", "info"),
    ]
    assert logs[0]["error"] == "ConnectionError" and "pw" not in repr(logs)
    assert "cause" not in logs[0]  # nothing under it


def test_guard_names_the_cause_never_its_text() -> None:
    from retrypolicy._store import StoreGuard  # noqa: PLC0415

    guard = StoreGuard(retrypolicy.MemoryTokenStore())
    try:
        try:
            raise PermissionError("/secret/path?password=pw-under")
        except PermissionError as inner:
            raise ConnectionError("redis://:pw@host") from inner
    except ConnectionError as exc:
        with capture_logs() as logs:
            guard.failed(exc, "publish")
    assert logs[0]["cause"] == "PermissionError" and "pw" not in repr(logs)


# -- retrypolicy.testing.redis_server ----------------------------------------------------------


def test_redis_server_helper_starts_answers_and_stops() -> None:
    with retrypolicy.testing.redis_server(password="pw-secret") as server:
        assert redis.Redis.from_url(server.url).ping() is True
        assert "pw-secret" not in repr(server)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port, password="wrong").ping()
    assert server.process.poll() is not None  # killed on the way out


def test_redis_server_helper_speaks_tls_only(tls_server: RedisServer) -> None:
    assert tls_server.tls_ca is not None
    assert redis.Redis.from_url(tls_server.url, ssl_ca_certs=tls_server.tls_ca).ping() is True
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as plain:  # no TLS: no answer
        plain.sendall(b"PING\r\n")
        try:
            answer = plain.recv(64)
        except ConnectionResetError:  # the server drops a handshake that is not TLS
            answer = b""
        assert b"PONG" not in answer
    assert "tls-pass-0123" not in repr(tls_server) and "tls=True" in repr(tls_server)


def test_redis_server_helper_names_a_missing_openssl(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "openssl" else real(name))
    with (
        pytest.raises(RuntimeError, match=r"needs the openssl binary \(apt-get install openssl\)"),
        retrypolicy.testing.redis_server(tls=True),
    ):
        pass


def test_redis_server_helper_says_why_the_server_exited() -> None:
    """Options redis-server refuses: its own words, with the password masked where it echoes it."""
    password = "pw-in-options-42"
    options = ["--cluster-enabled", "yes", "--cluster-port", password]  # not a port: refused, line echoed
    helper = retrypolicy.testing.redis_server(password=password, options=options)
    with pytest.raises(RuntimeError, match=r"(?s)redis-server exited with code \d+ at start: .*cluster-port") as caught:
        helper.__enter__()
    assert password not in str(caught.value) and "***" in str(caught.value)


def test_redis_server_helper_names_a_missing_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    helper = retrypolicy.testing.redis_server()
    with pytest.raises(RuntimeError, match=r"redis-server binary \(apt-get install redis-server\)"):
        helper.__enter__()
