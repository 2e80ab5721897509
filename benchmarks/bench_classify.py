"""Cost per call of ``Policy.classify`` on typical responses.

Run: ``python benchmarks/bench_classify.py [--repeat N] [--min-time SECONDS]``

Each case is timed with :mod:`timeit`: the loop count is chosen so that one repeat lasts at
least ``--min-time``, and the best of ``--repeat`` repeats is reported (the least disturbed run).
Responses are built once, already read, so only the classification is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from retrypolicy import Classification, Policy, load_policy


@dataclass(frozen=True)
class Case:
    name: str
    policy: Policy
    response: httpx.Response
    expect_error: bool


def _json_response(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "application/json"}, content=json.dumps(body).encode())


_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n"
    b"</body>\r\n</html>\r\n" + b"<!-- a padding to disable MSIE and Chrome friendly error page -->\r\n" * 6
)


def cases() -> list[Case]:
    wechat = load_policy("wechat")
    tencent = load_policy("tencent_im")
    cloud = load_policy("whatsapp_cloud")
    return [
        Case(
            "wechat error (JSON)",
            wechat,
            _json_response(200, {"errcode": 42001, "errmsg": "access_token expired rid: 65f0a1b2-1c2d3e4f"}),
            expect_error=True,
        ),
        Case(
            "wechat success, no errcode",
            wechat,
            _json_response(200, {"access_token": "ACCESS_TOKEN_VALUE" * 4, "expires_in": 7200}),
            expect_error=False,
        ),
        Case(
            "wechat success, errcode 0",
            wechat,
            _json_response(200, {"errcode": 0, "errmsg": "ok", "msgid": 200228332}),
            expect_error=False,
        ),
        Case(
            "tencent_im success (sendmsg)",
            tencent,
            _json_response(
                200, {"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0, "MsgTime": 1700000000, "MsgKey": "1_2_3"}
            ),
            expect_error=False,
        ),
        Case(
            "tencent_im error",
            tencent,
            _json_response(200, {"ActionStatus": "FAIL", "ErrorCode": 70001, "ErrorInfo": "usersig expired"}),
            expect_error=True,
        ),
        Case(
            "whatsapp_cloud error + subcode",
            cloud,
            _json_response(
                401,
                {
                    "error": {
                        "message": "Error validating access token: Session has expired.",
                        "type": "OAuthException",
                        "code": 190,
                        "error_subcode": 463,
                        "is_transient": False,
                        "fbtrace_id": "AbCdEfGhIjKlMnOp",
                    }
                },
            ),
            expect_error=True,
        ),
        Case(
            "502 HTML page",
            wechat,
            httpx.Response(502, headers={"content-type": "text/html"}, content=_HTML_502),
            expect_error=True,
        ),
    ]


def measure(case: Case, *, repeat: int, min_time: float) -> float:
    """Best seconds per call of ``case.policy.classify(case.response)``."""
    classify = case.policy.classify
    response = case.response
    timer = timeit.Timer(lambda: classify(response))
    number = 1
    while True:  # like timeit's autorange, but to a configurable duration
        if timer.timeit(number) >= min_time:
            break
        number *= 2
    return min(timer.repeat(repeat=repeat, number=number)) / number


def check(case: Case) -> Classification | None:
    """Classify once and make sure the case measures what its name says."""
    result = case.policy.classify(case.response)
    if (result is not None) != case.expect_error:
        raise SystemExit(f"benchmark case {case.name!r} classified unexpectedly: {result!r}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=7, help="repeats per case; the best is kept (default 7)")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per repeat at least (default 0.2)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.min_time <= 0:
        parser.error("--repeat must be >= 1 and --min-time > 0")

    rows: list[tuple[str, str, float]] = []
    for case in cases():
        result = check(case)
        verdict = "success" if result is None else f"{result.category.value} ({result.source})"
        rows.append((case.name, verdict, measure(case, repeat=args.repeat, min_time=args.min_time) * 1e6))

    width = max(len(name) for name, _, _ in rows)
    vwidth = max(len(verdict) for _, verdict, _ in rows)
    print(f"Python {sys.version.split()[0]}, httpx {httpx.__version__}; best of {args.repeat} repeats\n")
    print(f"{'case':<{width}}  {'verdict':<{vwidth}}  {'µs per call':>11}")
    print(f"{'-' * width}  {'-' * vwidth}  {'-' * 11}")
    for name, verdict, micros in rows:
        print(f"{name:<{width}}  {verdict:<{vwidth}}  {micros:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
