"""Slack token rotation: SlackRotatingToken renews once per expiry (single-flight across 32 threads,
200 tasks, two transports sharing a MemoryTokenStore and two sharing a real Redis), keeps each new
single-use refresh token, and never shows a secret."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy._store import Claim, StoredToken
from retrypolicy.hooks import HookError, SlackRotatingToken
from retrypolicy.testing import FakeSlack, redis_server

SEND = "/api/chat.postMessage"
CLIENT_ID, CLIENT_SECRET = "1111.2222", "the-slack-client-secret-0123"
BOUND = 60.0  # seconds before a run counts as deadlocked


@pytest.fixture(autouse=True)
def _testing() -> Iterator[None]:
    with retrypolicy.set_testing(True):
        yield


def make_fake() -> FakeSlack:
    return FakeSlack(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)


def make_hook(fake: FakeSlack, refresh: str | None = None, **kwargs: Any) -> SlackRotatingToken:
    refresh = fake.refresh_token if refresh is None else refresh
    return SlackRotatingToken(CLIENT_ID, CLIENT_SECRET, refresh, transport=httpx.MockTransport(fake), **kwargs)


def body(i: int | str) -> dict[str, str]:
    return {"channel": "C1", "text": f"m{i}"}


def sync_client(fake: FakeSlack, hook: SlackRotatingToken, **kwargs: Any) -> httpx.Client:
    transport = retrypolicy.RetryTransport("slack", token=hook, transport=httpx.MockTransport(fake), **kwargs)
    return httpx.Client(transport=transport, base_url=fake.BASE_URL)


def async_client(fake: FakeSlack, hook: SlackRotatingToken, **kwargs: Any) -> httpx.AsyncClient:
    transport = retrypolicy.AsyncRetryTransport("slack", token=hook, transport=httpx.MockTransport(fake), **kwargs)
    return httpx.AsyncClient(transport=transport, base_url=fake.BASE_URL)


def renewals(fake: FakeSlack) -> int:
    return fake.token_requests


# -- one transport ---------------------------------------------------------------------------------


def test_each_renewal_uses_the_refresh_token_the_last_one_got(mode: str) -> None:
    fake = make_fake()
    hook = make_hook(fake)
    first = fake.refresh_token
    if mode == "sync":
        with sync_client(fake, hook) as client:
            for i in range(3):
                assert client.post(SEND, json=body(i)).json()["ok"] is True
                fake.expire_tokens()
            assert client.post(SEND, json=body(3)).json()["ok"] is True
    else:

        async def run() -> None:
            async with async_client(fake, hook) as client:
                for i in range(3):
                    assert (await client.post(SEND, json=body(i))).json()["ok"] is True
                    fake.expire_tokens()
                assert (await client.post(SEND, json=body(3))).json()["ok"] is True

        anyio.run(run)
    # the first token, then one renewal per expiry, each with the refresh token the previous one got
    assert renewals(fake) == 4 and hook.generation == 4 and fake.refresh_reuses == 0
    assert fake.refresh_token != first and len(fake.sent) == 4


def test_32_threads_share_one_renewal_per_expiry() -> None:
    fake = make_fake()
    hook = make_hook(fake)
    with sync_client(fake, hook) as client, ThreadPoolExecutor(32) as pool:
        assert client.post(SEND, json=body("first")).json()["ok"] is True
        for wave in range(3):
            fake.expire_tokens()
            barrier = threading.Barrier(32)

            def send(i: int, wave: int = wave, barrier: threading.Barrier = barrier) -> bool:
                barrier.wait(BOUND)
                return bool(client.post(SEND, json=body(f"{wave}-{i}")).json()["ok"])

            assert all(pool.map(send, range(32), timeout=BOUND))
    assert renewals(fake) == 1 + 3 and hook.generation == 4 and fake.refresh_reuses == 0
    assert len(fake.sent) == 1 + 3 * 32


def test_200_tasks_share_one_renewal_per_expiry() -> None:
    fake = make_fake()
    hook = make_hook(fake)
    results: list[bool] = []

    async def main() -> None:
        async with async_client(fake, hook) as client:
            assert (await client.post(SEND, json=body("first"))).json()["ok"] is True
            for wave in range(3):
                fake.expire_tokens()

                async def send(i: int, wave: int = wave) -> None:
                    results.append(bool((await client.post(SEND, json=body(f"{wave}-{i}"))).json()["ok"]))

                with anyio.fail_after(BOUND):
                    async with anyio.create_task_group() as tg:
                        for i in range(200):
                            tg.start_soon(send, i)

    anyio.run(main)
    assert results == [True] * 600
    assert renewals(fake) == 1 + 3 and hook.generation == 4 and fake.refresh_reuses == 0


# -- two transports (two processes) sharing a store --------------------------------------------------


def shared_rotation(fake: FakeSlack, store_a: Any, store_b: Any) -> None:
    """Transport A (sync) and B (async), each with its own hook made from the same configured
    refresh token, as two processes would be: B's renewals must use the refresh token A's got."""
    hook_a, hook_b = make_hook(fake, store=store_a), make_hook(fake, store=store_b)
    with sync_client(fake, hook_a, token_store=store_a) as a:

        def b_post(n: int, tag: str) -> list[bool]:
            async def run() -> list[bool]:
                out: list[bool] = []
                async with async_client(fake, hook_b, token_store=store_b) as b:

                    async def one(i: int) -> None:
                        out.append(bool((await b.post(SEND, json=body(f"{tag}{i}"))).json()["ok"]))

                    with anyio.fail_after(BOUND):
                        async with anyio.create_task_group() as tg:
                            for i in range(n):
                                tg.start_soon(one, i)
                aclose = getattr(store_b, "aclose", None)
                if aclose is not None:
                    await aclose()  # a RedisTokenStore's asyncio client belongs to this event loop
                return out

            return anyio.run(run)

        assert a.post(SEND, json=body("a0")).json()["ok"] is True  # A gets the first token: rotation 1
        assert b_post(1, "b0") == [True]  # B takes the stored token: no renewal
        assert renewals(fake) == 1
        fake.expire_tokens()
        assert b_post(20, "b1") == [True] * 20  # B renews once, with the refresh token A got
        assert renewals(fake) == 2 and fake.refresh_reuses == 0
        assert a.post(SEND, json=body("a1")).json()["ok"] is True  # A takes B's token
        assert renewals(fake) == 2
        fake.expire_tokens()  # both at once: one renewal between them
        with ThreadPoolExecutor(16) as pool:
            from_a = pool.map(lambda i: a.post(SEND, json=body(f"a2-{i}")).json()["ok"], range(16), timeout=BOUND)
            assert b_post(16, "b2") == [True] * 16
            assert all(from_a)
    assert renewals(fake) == 3 and fake.refresh_reuses == 0
    assert hook_a.generation + hook_b.generation >= 3
    assert len(fake.sent) == 1 + 1 + 20 + 1 + 32


def test_two_transports_share_the_rotation_through_a_memory_store() -> None:
    store = retrypolicy.MemoryTokenStore()
    shared_rotation(make_fake(), store, store)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_two_transports_share_the_rotation_through_redis() -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    with redis_server() as server:
        store_a = retrypolicy.RedisTokenStore.from_url(server.url, namespace=namespace)
        store_b = retrypolicy.RedisTokenStore.from_url(server.url, namespace=namespace)
        try:
            shared_rotation(make_fake(), store_a, store_b)
            claim = store_a.claim("slack:1111.2222:refresh", "reader", 5.0, None)
            assert claim.status == "fresh" and claim.token is not None
            assert claim.token.value.startswith("3:xoxe-1-")  # the third refresh token, with its generation
        finally:
            store_a.close()
            store_b.close()


def test_without_a_shared_store_two_hooks_lose_the_chain() -> None:
    """Why the store matters: two processes renewing with their own copy of the configured
    refresh token; the second renewal brings a used one (invalid_refresh_token, user-action)."""
    fake = make_fake()
    hook_a, hook_b = make_hook(fake), make_hook(fake)
    hook_a()
    with pytest.raises(HookError) as info:
        hook_b()
    assert info.value.code == "invalid_refresh_token" and fake.refresh_reuses == 1


# -- the store as the keeper of the chain ------------------------------------------------------------


class FlakyStore(retrypolicy.MemoryTokenStore):
    """A MemoryTokenStore that raises while ``down``."""

    down = False

    def claim(self, key: str, owner: str, lease: float, stale: str | None) -> Claim:
        if self.down:
            raise ConnectionError("store down")
        return super().claim(key, owner, lease, stale)

    def publish(self, key: str, owner: str, expected: str | None, token: StoredToken) -> StoredToken | None:
        if self.down:
            raise ConnectionError("store down")
        return super().publish(key, owner, expected, token)


def stored_refresh(store: retrypolicy.MemoryTokenStore, hook: SlackRotatingToken) -> str | None:
    claim = store.claim(hook.refresh_key, "reader", 5.0, None)
    if claim.status == "acquired":
        store.release(hook.refresh_key, "reader")
    return claim.token.value if claim.token is not None else None


def test_a_rotation_made_while_the_store_was_down_is_written_back() -> None:
    fake, store = make_fake(), FlakyStore()
    hook = make_hook(fake, store=store)
    hook()
    assert stored_refresh(store, hook) == f"1:{fake.refresh_token}"
    store.down = True
    hook()  # renews with its own copy, and keeps the new one
    store.down = False
    assert hook.generation == 2 and stored_refresh(store, hook) != f"2:{fake.refresh_token}"  # the store is behind
    hook()  # its own token is newer than the store's: it renews with it and writes the next one back
    assert stored_refresh(store, hook) == f"3:{fake.refresh_token}"
    other = make_hook(fake, refresh="xoxe-1-configured-and-used-long-ago", store=store)
    other()  # another process: takes generation 3 from the store
    assert other.generation == 4 and fake.refresh_reuses == 0


def test_a_new_install_deployed_over_a_dead_chain_is_used() -> None:
    """The store holds a refresh token that no longer works; the configured one differs (the app
    was installed again): it is tried once, and its rotation replaces the stored chain."""
    fake, store = make_fake(), retrypolicy.MemoryTokenStore()
    old = make_hook(fake, store=store)
    old()
    store.publish(old.refresh_key, "x", stored_refresh(store, old), StoredToken("5:xoxe-1-dead"))
    new_install = make_hook(fake, store=store)  # configured with the refresh token that works now
    assert new_install().value
    assert new_install.generation == 6 and stored_refresh(store, new_install) == f"6:{fake.refresh_token}"
    with pytest.raises(HookError) as info:  # tried once only: a dead chain and a used configured token fail
        make_hook(fake, refresh="xoxe-1-used", store=retrypolicy.MemoryTokenStore())()
    assert info.value.code == "invalid_refresh_token"


def test_on_refresh_token_gets_each_new_refresh_token() -> None:
    fake = make_fake()
    seen: list[str] = []
    hook = make_hook(fake, on_refresh_token=seen.append)
    hook()
    hook()
    assert seen[-1] == fake.refresh_token and len(seen) == 2
    broken = make_hook(fake, refresh=fake.refresh_token, on_refresh_token=lambda value: 1 / 0)
    broken()  # a failing callback does not lose the rotation
    assert broken.generation == 1 and fake.refresh_reuses == 0


# -- secrets --------------------------------------------------------------------------------------------


def test_no_secret_in_events_exceptions_or_reprs(mode: str) -> None:
    fake = make_fake()
    configured = fake.refresh_token
    hook = make_hook(fake)
    texts: list[str] = [repr(hook)]
    with capture_logs() as logs:
        if mode == "sync":
            with sync_client(fake, hook) as client:
                client.post(SEND, json=body(0))
                fake.expire_tokens()
                client.post(SEND, json=body(1))
                texts.append(repr(client._transport))
        else:

            async def run() -> None:
                async with async_client(fake, hook) as client:
                    await client.post(SEND, json=body(0))
                    fake.expire_tokens()
                    await client.post(SEND, json=body(1))
                    texts.append(repr(client._transport))

            anyio.run(run)
        used_up = make_hook(fake, refresh=configured)  # a refresh token already used: the renewal fails
        with pytest.raises(retrypolicy.TokenRefreshFailed) as info, sync_client(fake, used_up) as other:
            other.post(SEND, json=body(2))
    texts += [str(info.value), repr(info.value), repr(used_up), str(logs)]
    assert "invalid_refresh_token" in str(info.value) and "reinstall" in str(info.value)
    secrets = [CLIENT_SECRET, configured, fake.refresh_token, *(t for t in fake_tokens(fake))]
    for secret in secrets:
        assert all(secret not in text for text in texts)
    assert hook.generation == 2


def fake_tokens(fake: FakeSlack) -> list[str]:
    return list(fake._tokens)


@pytest.mark.parametrize("kind", [retrypolicy.RetryTransport, retrypolicy.AsyncRetryTransport])
def test_a_shared_access_token_needs_the_refresh_token_shared_too(kind: Any) -> None:
    """token_store= shares the access token between processes; a rotating hook without that store
    would keep the single-use refresh token in each process, and the first renewal would use up
    the others': refused at construction, naming the fix. Without a store anywhere, or with the
    hook given one, the transport is built."""
    fake = FakeSlack()
    store = retrypolicy.MemoryTokenStore()
    with pytest.raises(retrypolicy.ConfigurationError) as info:
        kind("slack", token=make_hook(fake), token_store=store)
    assert str(info.value).startswith(
        "token['slack']: SlackRotatingToken keeps a single-use refresh token; the transport shares its "
        "access token through token_store=MemoryTokenStore, so give the hook that store too"
    )
    assert CLIENT_SECRET not in str(info.value) and fake.refresh_token not in str(info.value)
    kind("slack", token=make_hook(fake, store=store), token_store=store)
    kind("slack", token=make_hook(fake))
    kind("slack", token={"slack": make_hook(fake, store=store)}, token_store=store)
