"""OpenTelemetry for retrypolicy: a span per attempt of the requests that did not succeed at once,
and ``retrypolicy.*`` metrics. Needs only ``opentelemetry-api`` (``pip install 'retrypolicy[otel]'``);
the SDK, its exporters and its providers are the application's.

::

    telemetry = retrypolicy.otel.Telemetry()          # the global tracer and meter providers
    transport = retrypolicy.RetryTransport(policy="wechat", token=hook, telemetry=telemetry)

**Spans.** Each attempt of a request that failed at least once becomes a ``CLIENT`` span named
after the method, a child of the span current where the request was made, with the HTTP semantic
conventions' attributes: ``http.request.method``, ``url.full`` (redacted: ``access_token=***``),
``server.address``, ``server.port``, ``http.response.status_code``, ``http.request.resend_count``
on each resend (1 for the first), and on a failed attempt ``error.type`` as ``<platform>:<code>``
(``wechat:-1``; the HTTP status, or the exception's type such as ``httpx.ReadTimeout``, when there
is no code) and status ``ERROR``. retrypolicy's own: ``retrypolicy.platform``, ``.category``,
``.code``, ``.subcode``, ``.decision`` (``retry``, ``renew``, ``give_up``), ``.delay`` (the wait
before the resend), ``.request_id``, ``.attempt``. A request that succeeds at its first attempt
gets no span from retrypolicy (an HTTP instrumentation's span covers it), so the success path
costs nothing.

**Metrics** (instrument names start with ``retrypolicy.``): the counters ``retrypolicy.requests``,
``.attempts``, ``.retries``, ``.renewals``, ``.succeeded`` and ``.gave_up`` (attribute
``retrypolicy.category``), observed from the transports' counters (``snapshot()``) when a reader
collects, so they cost no request anything; the gauge ``retrypolicy.budget.level`` (attribute
``retrypolicy.platform``; the lowest level when several transports serve a platform); and the
histogram ``retrypolicy.wait`` (seconds) of the waits before resends. Prometheus, through the
OpenTelemetry exporter, names them ``retrypolicy_requests_total``, ..., ``retrypolicy_wait_seconds``.

**opentelemetry-instrumentation-httpx** puts the URL each attempt is sent to in ``url.full``, and
its redaction misses ``access_token`` (it removes userinfo and AWS/GCS signatures only):
pass :func:`httpx_request_hook` / :func:`async_httpx_request_hook` as its ``request_hook``.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import httpx

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace
    from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation
    from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
except ImportError:  # pragma: no cover - exercised in an environment without the extra
    raise ModuleNotFoundError(
        "retrypolicy.otel needs opentelemetry-api: pip install 'retrypolicy[otel]'", name="opentelemetry"
    ) from None

from . import __version__
from ._errors import ConfigurationError
from ._observe import Attempt, Observer
from ._overload import Stats
from ._redact import redact_url

__all__ = ["Telemetry", "async_httpx_request_hook", "httpx_request_hook"]

_COUNTERS = (
    ("requests", "{request}", "Logical requests through retrypolicy (each with all its attempts)"),
    ("attempts", "{attempt}", "HTTP requests sent, resends included"),
    ("retries", "{retry}", "Resends after a wait (retryable failures)"),
    ("renewals", "{renewal}", "Token hook calls made to renew a refused token"),
    ("succeeded", "{request}", "Logical requests that ended in a success"),
)
_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_URL_ATTRIBUTES = ("url.full", "http.url")


class Telemetry:
    """An observer of retrypolicy transports (``telemetry=`` of ``RetryTransport``,
    ``AsyncRetryTransport`` and ``retrypolicy.requests.RetryAdapter``). One instance can serve
    several transports; the counters add up every transport observed through the same meter
    provider, whichever ``Telemetry`` instance observes it.

    ``tracer_provider`` / ``meter_provider``: the providers to use (default: the global ones,
    looked up through the API's proxies, so an SDK configured later is picked up). ``spans=False``
    or ``metrics=False`` turns one of them off.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        spans: bool = True,
        metrics: bool = True,
    ) -> None:
        if not isinstance(spans, bool) or not isinstance(metrics, bool):
            raise ConfigurationError(f"spans and metrics must be True or False, got {spans!r} and {metrics!r}")
        for name, provider, kind in (
            ("tracer_provider", tracer_provider, TracerProvider),
            ("meter_provider", meter_provider, MeterProvider),
        ):
            if provider is not None and not isinstance(provider, kind):
                raise ConfigurationError(
                    f"{name} must be an opentelemetry {kind.__name__} or None, got {type(provider).__name__}"
                )
        self._tracer = trace.get_tracer("retrypolicy", __version__, tracer_provider) if spans else None
        self._metrics = _Metrics.of(meter_provider) if metrics else None

    def __repr__(self) -> str:
        transports = len(self._metrics.live()) if self._metrics is not None else 0
        return f"<retrypolicy.otel.Telemetry transports={transports} spans={self._tracer is not None}>"

    # -- what the transports call

    def bind(self, core: Any) -> Observer:
        """Observe one transport's core (called by the transport at construction)."""
        if self._metrics is not None:
            self._metrics.add(core)
        return self

    def attempted(self, attempt: Attempt) -> None:
        """One attempt of a request that did not succeed at once: its span and its wait."""
        c = attempt.classification
        if self._metrics is not None and attempt.action == "retry":
            self._metrics.waits.record(attempt.delay, {"retrypolicy.platform": attempt.platform})
        if self._tracer is None:
            return
        now = time.time_ns()
        start = now - max(0, int((attempt.ended - attempt.started) * 1e9))
        attributes: dict[str, Any] = {
            "http.request.method": attempt.method,
            "url.full": attempt.url,
            "server.address": attempt.host,
            "server.port": attempt.port or _DEFAULT_PORTS.get(attempt.scheme, 0),
            "retrypolicy.platform": attempt.platform,
            "retrypolicy.attempt": attempt.number,
        }
        if attempt.number > 1:
            attributes["http.request.resend_count"] = attempt.number - 1
        if attempt.status_code is not None:
            attributes["http.response.status_code"] = attempt.status_code
        status = None
        if c is not None:
            attributes["error.type"] = _error_type(attempt)
            attributes["retrypolicy.category"] = c.category.value
            if c.code is not None:
                attributes["retrypolicy.code"] = str(c.code)
            if c.subcode is not None:
                attributes["retrypolicy.subcode"] = str(c.subcode)
            if c.request_id:
                attributes["retrypolicy.request_id"] = c.request_id
            if attempt.action is not None:
                attributes["retrypolicy.decision"] = attempt.action
            if attempt.action == "retry":
                attributes["retrypolicy.delay"] = round(attempt.delay, 3)
            status = Status(StatusCode.ERROR, c.description)
        span = self._tracer.start_span(attempt.method, kind=SpanKind.CLIENT, attributes=attributes, start_time=start)
        if status is not None:
            span.set_status(status)
        span.end(end_time=now)


class _Metrics:
    """The instruments of one meter provider, and the transports they read, shared by every
    :class:`Telemetry` on that provider (two sets of callbacks for one instrument would report
    the same series twice, and the reader would keep one of them)."""

    _shared: ClassVar[dict[int, tuple[MeterProvider | None, _Metrics]]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def of(cls, provider: MeterProvider | None) -> _Metrics:
        with cls._shared_lock:
            entry = cls._shared.get(id(provider))
            if entry is None or entry[0] is not provider:
                entry = cls._shared[id(provider)] = (
                    provider,
                    cls(provider),
                )  # the provider is kept: its id stays its own
            return entry[1]

    def __init__(self, provider: MeterProvider | None) -> None:
        self._lock = threading.Lock()
        self._cores: weakref.WeakSet[Any] = weakref.WeakSet()
        self._retired: Counter[str] = Counter()  # counts of transports garbage-collected: counters never go down
        self._retired_gave_up: Counter[str] = Counter()
        meter = otel_metrics.get_meter("retrypolicy", __version__, provider)
        for name, unit, description in _COUNTERS:
            meter.create_observable_counter(
                f"retrypolicy.{name}", callbacks=[self._counter(name)], unit=unit, description=description
            )
        meter.create_observable_counter(
            "retrypolicy.gave_up",
            callbacks=[self._gave_up],
            unit="{request}",
            description="Logical requests that failed, by category (retryable, token-refresh, user-action, fatal)",
        )
        meter.create_observable_gauge(
            "retrypolicy.budget.level",
            callbacks=[self._budget],
            unit="{retry}",
            description="Retries the retry budget allows now, by platform",
        )
        self.waits: Histogram = meter.create_histogram(
            "retrypolicy.wait",
            unit="s",
            description="Waits before resends",
            explicit_bucket_boundaries_advisory=_WAIT_BUCKETS,
        )

    def add(self, core: Any) -> None:
        with self._lock:
            if core in self._cores:
                return
            self._cores.add(core)
        weakref.finalize(core, self._retire, core.stats)

    def live(self) -> list[Any]:
        with self._lock:
            return list(self._cores)

    def _counter(self, name: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            total = self._retired[name] + sum(getattr(core.snapshot(), name) for core in self.live())
            return [Observation(total)]

        return observe

    def _gave_up(self, options: CallbackOptions) -> Iterable[Observation]:
        totals = Counter(self._retired_gave_up)
        for core in self.live():
            totals.update(core.snapshot().gave_up)
        return [Observation(n, {"retrypolicy.category": category}) for category, n in sorted(totals.items())]

    def _budget(self, options: CallbackOptions) -> Iterable[Observation]:
        levels: dict[str, float] = {}
        for core in self.live():
            for platform, level in core.budgets.levels().items():
                levels[platform] = min(level, levels.get(platform, level))
        return [Observation(level, {"retrypolicy.platform": p}) for p, level in sorted(levels.items())]

    def _retire(self, stats: Stats) -> None:
        """A transport was garbage-collected: keep its counts, as ``snapshot()`` gave them."""
        with stats.lock:
            quick = stats.first_tries()
            counts = {
                "requests": stats.requests + quick,
                "attempts": stats.attempts + quick,
                "retries": stats.retries,
                "renewals": stats.renewals,
                "succeeded": stats.succeeded + quick,
            }
            gave_up = dict(stats.gave_up)
        with self._lock:
            self._retired.update(counts)
            self._retired_gave_up.update(gave_up)


def _error_type(attempt: Attempt) -> str:
    """``<platform>:<code>`` (with ``/<subcode>``), else the HTTP status, else the exception type."""
    c = attempt.classification
    assert c is not None
    if c.code is not None:
        return f"{c.platform}:{c.code}" + (f"/{c.subcode}" if c.subcode is not None else "")
    if attempt.error is not None:
        return attempt.error
    if attempt.status_code is not None:
        return str(attempt.status_code)
    return f"{c.platform}:{c.category.value}"


# -- opentelemetry-instrumentation-httpx


def httpx_request_hook(span: Any, request: Any) -> None:
    """``HTTPXClientInstrumentor().instrument(request_hook=httpx_request_hook)``: replace the
    span's ``url.full`` (the stable HTTP conventions) or ``http.url`` (the older ones, the
    instrumentation's default) with the URL redacted by retrypolicy's rules (``access_token``,
    ``usersig``, ``secret``, ... -> ``***``)."""
    url = getattr(request, "url", None)
    if url is None or not span.is_recording():
        return
    redacted = redact_url(url if isinstance(url, (str, httpx.URL)) else str(url))
    attributes = getattr(span, "attributes", None)
    names = [n for n in _URL_ATTRIBUTES if n in attributes] if isinstance(attributes, Mapping) else []
    for name in names or ["url.full"]:
        span.set_attribute(name, redacted)


async def async_httpx_request_hook(span: Any, request: Any) -> None:
    """:func:`httpx_request_hook` for ``async_request_hook=`` (``httpx.AsyncClient``)."""
    httpx_request_hook(span, request)
