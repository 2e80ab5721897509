"""retrypolicy.otel: spans per attempt and retrypolicy.* metrics, read from the SDK's in-memory
exporter and metric reader; and the request hook for opentelemetry-instrumentation-httpx."""

from __future__ import annotations

import gc
import re
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import requests
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY, generate_latest

import retrypolicy
from retrypolicy.otel import Telemetry, httpx_request_hook
from retrypolicy.requests import RetryAdapter
from retrypolicy.testing import Busy, FakeWeChat, FakeWhatsAppCloud, TokenExpired, UserAction

SEND = "/cgi-bin/message/custom/send"
MESSAGE: dict[str, Any] = {"touser": "oUser1", "msgtype": "text", "text": {"content": "hello"}}
CLOUD_MESSAGE = {"messaging_product": "whatsapp", "to": "15550001042", "type": "text", "text": {"body": "hi"}}


class Otel:
    """An SDK tracer and meter provider with in-memory exporters, and a Telemetry on them."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = Telemetry(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """name -> [(attributes, value)]; a histogram's value is (count, sum)."""
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = (point.count, point.sum) if hasattr(point, "count") else point.value  # type: ignore[union-attr]
                        out.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
        return out

    def value(self, name: str, **attributes: Any) -> Any:
        for attrs, value in self.metrics().get(name, []):
            if attrs == attributes:
                return value
        return None


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    yield o
    o.meter_provider.shutdown()
    o.tracer_provider.shutdown()


def send(mode: str, base: str, transport_kwargs: dict[str, Any], kept: list[Any] | None = None) -> httpx.Response:
    """One POST through a new transport (appended to ``kept``, else dropped afterwards)."""
    if mode == "sync":
        sync = retrypolicy.RetryTransport(**transport_kwargs)
        if kept is not None:
            kept.append(sync)
        with httpx.Client(transport=sync, trust_env=False) as client:
            return client.post(base + SEND, json=MESSAGE)

    async def run() -> httpx.Response:
        transport = retrypolicy.AsyncRetryTransport(**transport_kwargs)
        if kept is not None:
            kept.append(transport)
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            return await client.post(base + SEND, json=MESSAGE)

    return anyio.run(run)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_retried_request_leaves_spans_and_metrics(otel: Otel, mode: str) -> None:
    wechat = FakeWeChat(plain_text_every=0)
    wechat.script(Busy())
    kwargs = {"policy": "wechat", "token": wechat.token_hook(), "telemetry": otel.telemetry}
    kept: list[Any] = []  # the transport stays alive: its budget is a gauge of live transports
    with retrypolicy.set_testing(True), wechat.serve() as base:
        assert send(mode, base, kwargs, kept).json()["errcode"] == 0
    first, resend = otel.finished()
    assert first.name == "POST" and first.kind is SpanKind.CLIENT
    a = dict(first.attributes or {})
    assert a["error.type"] == "wechat:-1" and a["retrypolicy.category"] == "retryable"
    assert a["retrypolicy.decision"] == "retry" and a["retrypolicy.code"] == "-1"
    assert a["http.request.method"] == "POST" and a["http.response.status_code"] == 200
    assert "http.request.resend_count" not in a
    assert str(a["url.full"]).endswith(SEND + "?access_token=***")  # redacted
    assert first.status.status_code is StatusCode.ERROR
    b = dict(resend.attributes or {})
    assert b["http.request.resend_count"] == 1 and "error.type" not in b
    assert resend.status.status_code is StatusCode.UNSET
    assert first.end_time is not None and resend.start_time is not None and first.end_time <= resend.start_time
    tokens = [wechat_token for wechat_token in [wechat._latest] if wechat_token]
    assert tokens and not any(t in str(s.attributes) for s in otel.finished() for t in tokens)
    assert otel.value("retrypolicy.requests") == 1
    assert otel.value("retrypolicy.attempts") == 2
    assert otel.value("retrypolicy.retries") == 1
    assert otel.value("retrypolicy.succeeded") == 1
    assert otel.value("retrypolicy.wait", **{"retrypolicy.platform": "wechat"})[0] == 1  # one wait recorded
    level = otel.value("retrypolicy.budget.level", **{"retrypolicy.platform": "wechat"})
    assert level is not None and level < 100


def test_renewals_and_give_ups_by_category(otel: Otel) -> None:
    wechat = FakeWeChat(plain_text_every=0)
    wechat.script(TokenExpired(), UserAction())
    kwargs = {"policy": "wechat", "token": wechat.token_hook(), "telemetry": otel.telemetry}
    with retrypolicy.set_testing(True), wechat.serve() as base, pytest.raises(retrypolicy.UserActionRequired):
        send("sync", base, kwargs)
    renewed, gave_up = otel.finished()
    assert dict(renewed.attributes or {})["retrypolicy.decision"] == "renew"
    assert dict(renewed.attributes or {})["error.type"] == "wechat:42001"
    g = dict(gave_up.attributes or {})
    assert g["retrypolicy.decision"] == "give_up" and g["retrypolicy.category"] == "user-action"
    assert g["http.request.resend_count"] == 1 and g["error.type"] == "wechat:45015"
    assert otel.value("retrypolicy.renewals") == 1
    assert otel.value("retrypolicy.gave_up", **{"retrypolicy.category": "user-action"}) == 1


def test_a_request_that_succeeds_at_once_makes_no_span(otel: Otel) -> None:
    wechat = FakeWeChat(plain_text_every=0)
    kwargs = {"policy": "wechat", "token": wechat.token_hook(), "telemetry": otel.telemetry}
    with wechat.serve() as base:
        for _ in range(3):
            send("sync", base, kwargs)
    assert otel.finished() == []
    assert otel.value("retrypolicy.requests") == 3 and otel.value("retrypolicy.attempts") == 3
    assert "retrypolicy.wait" not in otel.metrics()  # nothing recorded


def test_error_type_carries_the_subcode(otel: Otel) -> None:
    cloud = FakeWhatsAppCloud()
    cloud.script(TokenExpired())  # 190/463
    with retrypolicy.set_testing(True):
        transport = retrypolicy.RetryTransport(
            "whatsapp_cloud", token=cloud.issue_token, transport=httpx.MockTransport(cloud), telemetry=otel.telemetry
        )
        with httpx.Client(transport=transport) as client:
            client.post(f"https://graph.facebook.com/v21.0/{cloud.phone_number_id}/messages", json=CLOUD_MESSAGE)
    renewed, resent = otel.finished()
    assert dict(renewed.attributes or {})["error.type"] == "whatsapp_cloud:190/463"
    assert dict(renewed.attributes or {})["retrypolicy.subcode"] == "463"
    assert dict(resent.attributes or {})["http.request.resend_count"] == 1


def test_a_transport_error_is_named_by_its_type(otel: Otel) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"errcode": 0})

    with retrypolicy.set_testing(True):
        transport = retrypolicy.RetryTransport(
            "wechat", transport=httpx.MockTransport(handler), telemetry=otel.telemetry
        )
        httpx.Client(transport=transport).post("https://api.weixin.qq.com" + SEND, json=MESSAGE)
    first, _ = otel.finished()
    assert dict(first.attributes or {})["error.type"] == "httpx.ConnectError"
    assert "http.response.status_code" not in dict(first.attributes or {})


def test_the_requests_adapter_reports_too(otel: Otel) -> None:
    wechat = FakeWeChat(plain_text_every=0)
    wechat.script(Busy())
    adapter = RetryAdapter(policy="wechat", token=wechat.token_hook(), telemetry=otel.telemetry)
    with retrypolicy.set_testing(True), wechat.serve() as base, requests.Session() as session:
        session.trust_env = False
        session.mount("http://", adapter)
        session.post(base + SEND, json=MESSAGE).raise_for_status()
    _, resend = otel.finished()
    assert dict(resend.attributes or {})["http.request.resend_count"] == 1
    assert otel.value("retrypolicy.retries") == 1


def test_counters_add_up_transports_and_never_go_down(otel: Otel) -> None:
    def transport() -> retrypolicy.RetryTransport:
        ok = httpx.MockTransport(lambda r: httpx.Response(200, json={"errcode": 0}))
        return retrypolicy.RetryTransport("wechat", transport=ok, telemetry=otel.telemetry)

    kept = transport()
    with httpx.Client(transport=kept) as client:
        client.post("https://api.weixin.qq.com" + SEND, json=MESSAGE)
    dropped = transport()
    with httpx.Client(transport=dropped) as client:
        client.post("https://api.weixin.qq.com" + SEND, json=MESSAGE)
        client.post("https://api.weixin.qq.com" + SEND, json=MESSAGE)
    assert otel.value("retrypolicy.requests") == 3
    del dropped, client
    gc.collect()
    assert otel.value("retrypolicy.requests") == 3  # a transport gone keeps its counts
    assert "transports=1" in repr(otel.telemetry)


def test_an_observer_that_raises_never_fails_the_request() -> None:
    class Broken:
        def bind(self, core: Any) -> Broken:
            return self

        def attempted(self, attempt: Any) -> None:
            raise RuntimeError("exporter down")

    answers = iter([httpx.Response(200, json={"errcode": -1}), httpx.Response(200, json={"errcode": 0})])
    with retrypolicy.set_testing(True):
        transport = retrypolicy.RetryTransport(
            "wechat", transport=httpx.MockTransport(lambda r: next(answers)), telemetry=Broken()
        )
        response = httpx.Client(transport=transport).post("https://api.weixin.qq.com" + SEND, json=MESSAGE)
    assert response.json() == {"errcode": 0}


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(retrypolicy.ConfigurationError, match="telemetry must be"):
        retrypolicy.RetryTransport("wechat", telemetry=object())  # type: ignore[arg-type]
    with pytest.raises(retrypolicy.ConfigurationError, match="tracer_provider"):
        Telemetry(tracer_provider="sdk")  # type: ignore[arg-type]
    with pytest.raises(retrypolicy.ConfigurationError, match="spans and metrics"):
        Telemetry(spans="yes")  # type: ignore[arg-type]


def test_spans_or_metrics_can_be_turned_off(otel: Otel) -> None:
    quiet = Telemetry(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider, spans=False)
    answers = iter([httpx.Response(200, json={"errcode": -1}), httpx.Response(200, json={"errcode": 0})])
    with retrypolicy.set_testing(True):
        transport = retrypolicy.RetryTransport(
            "wechat", transport=httpx.MockTransport(lambda r: next(answers)), telemetry=quiet
        )
        httpx.Client(transport=transport).post("https://api.weixin.qq.com" + SEND, json=MESSAGE)
    assert otel.finished() == [] and otel.value("retrypolicy.retries") == 1


def test_the_request_hook_redacts_instrumentation_httpx_urls(otel: Otel) -> None:
    """opentelemetry-instrumentation-httpx puts each attempt's URL in url.full, token included;
    with retrypolicy's request hook it is redacted."""
    wechat = FakeWeChat(plain_text_every=0)
    instrumentor = HTTPXClientInstrumentor()
    for hook in (None, httpx_request_hook):
        otel.spans.clear()
        instrumentor.instrument(tracer_provider=otel.tracer_provider, request_hook=hook)
        try:
            with wechat.serve() as base:
                send("sync", base, {"policy": "wechat", "token": wechat.token_hook()})
        finally:
            instrumentor.uninstrument()
        [span] = [s for s in otel.finished() if s.kind is SpanKind.CLIENT]
        attributes = dict(span.attributes or {})
        url = str(attributes.get("url.full") or attributes["http.url"])  # the stable conventions, or the older default
        token = wechat._latest
        assert token is not None
        if hook is None:
            assert token in url  # what the instrumentation does on its own
        else:
            assert token not in url and "access_token=***" in url


def test_prometheus_names_through_the_otel_exporter() -> None:
    """The README's Prometheus set-up: the exporter names the counters retrypolicy_<name>_total."""
    reader = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        telemetry = Telemetry(meter_provider=provider, spans=False)
        answers = iter(
            [
                httpx.Response(200, json={"errcode": -1}),
                httpx.Response(200, json={"errcode": 0}),
                httpx.Response(200, json={"errcode": 45015}),
            ]
        )
        with retrypolicy.set_testing(True):
            transport = retrypolicy.RetryTransport(
                "wechat", transport=httpx.MockTransport(lambda r: next(answers)), telemetry=telemetry
            )
            client = httpx.Client(transport=transport)
            client.post("https://api.weixin.qq.com" + SEND, json=MESSAGE)
            with pytest.raises(retrypolicy.UserActionRequired):
                client.post("https://api.weixin.qq.com" + SEND, json=MESSAGE)
        text = generate_latest(REGISTRY).decode()
    finally:
        provider.shutdown()  # the reader's shutdown unregisters it from prometheus_client's REGISTRY
    assert re.search(r"^retrypolicy_requests_total\{[^}]*\} 2\.0$", text, re.MULTILINE)
    assert re.search(r"^retrypolicy_attempts_total\{[^}]*\} 3\.0$", text, re.MULTILINE)
    assert re.search(r"^retrypolicy_retries_total\{[^}]*\} 1\.0$", text, re.MULTILINE)
    assert re.search(r"^retrypolicy_renewals_total\{[^}]*\} 0\.0$", text, re.MULTILINE)
    assert re.search(r"^retrypolicy_succeeded_total\{[^}]*\} 1\.0$", text, re.MULTILINE)
    assert re.search(r'^retrypolicy_gave_up_total\{[^}]*retrypolicy_category="user-action"[^}]*\} 1\.0$', text, re.M)
    assert re.search(
        r'^retrypolicy_budget_level\{[^}]*retrypolicy_platform="wechat"[^}]*\} 99\.\d+$', text, re.MULTILINE
    )
    assert re.search(
        r'^retrypolicy_wait_seconds_count\{[^}]*retrypolicy_platform="wechat"[^}]*\} 1\.0$', text, re.MULTILINE
    )


def test_the_success_path_makes_the_same_calls_with_telemetry() -> None:
    """With opentelemetry-api and no SDK (the global no-op providers), a request that succeeds at
    once runs exactly the calls it runs without telemetry=: counted, not timed."""
    body = b'{"errcode":0,"errmsg":"ok"}'
    headers = {"content-type": "application/json", "content-length": str(len(body))}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))

    def calls(telemetry: Telemetry | None) -> Counter[str]:
        token = retrypolicy.Token("tok-secretvalue", expires_in=7200)
        transport = retrypolicy.RetryTransport(
            "wechat", transport=httpx.MockTransport(answer), token=lambda: token, telemetry=telemetry
        )
        seen: Counter[str] = Counter()
        with httpx.Client(transport=transport) as client:
            for _ in range(5):  # the first token, caches
                client.post("https://api.weixin.qq.com" + SEND, json=MESSAGE)

            def profile(frame: Any, event: str, arg: Any) -> None:
                if event == "call":
                    seen[f"{frame.f_code.co_filename}:{frame.f_code.co_name}"] += 1
                elif event == "c_call":
                    seen[getattr(arg, "__qualname__", "?")] += 1

            gc.collect()
            gc.disable()  # a collection's callbacks (hypothesis installs one) would count as calls
            sys.setprofile(profile)
            try:
                for _ in range(10):
                    client.post("https://api.weixin.qq.com" + SEND, json=MESSAGE)
            finally:
                sys.setprofile(None)
                gc.enable()
        return seen

    without, with_telemetry = calls(None), calls(Telemetry())
    assert sum(without.values()) > 1000  # the profile saw the requests
    assert with_telemetry == without
