"""What a transport is configured with, checked: its inner transport and that transport's network
settings, and the host keys of a ``policy={host: ...}`` mapping (:func:`host_key`).

``httpx.Client(transport=RetryTransport(...), proxy=..., verify=...)`` does not do what it
seems to: httpx mounts its own proxy transport for ``proxy=`` (the request then bypasses ours:
no token, no retry), and ``verify=``/``cert=``/``http2=``/``limits=`` configure only the transport
the client would have built, which ``transport=`` replaces. So the transports take these
settings themselves and build their default inner ``httpx.HTTPTransport`` /
``httpx.AsyncHTTPTransport`` with them. With ``transport=`` (your own inner transport) they
are refused: they would be ignored.
"""

from __future__ import annotations

import importlib.util
import os
import ssl
from typing import Any, TypeAlias

import httpx

from ._errors import ConfigurationError

__all__ = ["CertArg", "ProxyArg", "VerifyArg", "host_key", "inner_transport"]

VerifyArg: TypeAlias = ssl.SSLContext | str | bool
CertArg: TypeAlias = str | tuple[str, str] | tuple[str, str, str]
ProxyArg: TypeAlias = str | httpx.URL | httpx.Proxy

_PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


def inner_transport(
    kind: type[httpx.HTTPTransport] | type[httpx.AsyncHTTPTransport],
    transport: object,
    *,
    verify: object = None,
    cert: object = None,
    proxy: object = None,
    http2: object = None,
    limits: object = None,
    trust_env: object = None,
) -> Any:
    """``transport`` checked, or a new ``kind`` built with the settings given (``None``: httpx's default)."""
    settings = {"verify": verify, "cert": cert, "proxy": proxy, "http2": http2, "limits": limits}
    given = [name for name, value in {**settings, "trust_env": trust_env}.items() if value is not None]
    base: type = httpx.BaseTransport if kind is httpx.HTTPTransport else httpx.AsyncBaseTransport
    if transport is not None:
        if not isinstance(transport, base):
            raise ConfigurationError(
                f"transport must be an httpx.{base.__name__} (the inner transport that sends the requests), "
                f"got {type(transport).__name__}"
            )
        if given:
            names = ", ".join(f"{name}=" for name in given)
            raise ConfigurationError(
                f"{names} configure the default inner transport, which transport= replaces: they would be "
                f"ignored; set them on the transport you pass (httpx.{kind.__name__}({given[0]}=...))"
            )
        return transport
    options: dict[str, Any] = {}
    if trust_env is not None:
        if not isinstance(trust_env, bool):
            raise ConfigurationError(f"trust_env must be True or False, got {type(trust_env).__name__}")
        options["trust_env"] = trust_env
    if http2 is not None:
        if not isinstance(http2, bool):
            raise ConfigurationError(f"http2 must be True or False, got {type(http2).__name__}")
        if http2 and importlib.util.find_spec("h2") is None:
            raise ConfigurationError("http2=True needs the h2 package: pip install 'httpx[http2]'")
        options["http2"] = http2
    if limits is not None:
        if not isinstance(limits, httpx.Limits):
            raise ConfigurationError(f"limits must be an httpx.Limits, got {type(limits).__name__}")
        options["limits"] = limits
    if proxy is not None:
        options["proxy"] = _proxy(proxy)
    if verify is not None or cert is not None:
        options["verify"] = _ssl_context(verify, cert, trust_env is not False)
    try:
        return kind(**options)
    except ImportError as exc:  # a socks5:// proxy without socksio: httpx's message names the extra
        raise ConfigurationError(str(exc)) from None


def _proxy(proxy: object) -> httpx.Proxy:
    if not isinstance(proxy, (str, httpx.URL, httpx.Proxy)):
        raise ConfigurationError(
            f"proxy must be a URL (str or httpx.URL) or an httpx.Proxy, got {type(proxy).__name__}"
        )
    if isinstance(proxy, httpx.Proxy):
        return proxy
    # never the URL itself in a message: it may hold a password
    try:
        url = httpx.URL(proxy)
    except httpx.InvalidURL:
        raise ConfigurationError("proxy is not a valid URL (e.g. 'http://proxy.internal:3128')") from None
    if url.scheme not in _PROXY_SCHEMES or not url.host:
        raise ConfigurationError(
            f"proxy must be an http://, https://, socks5:// or socks5h:// URL with a host, got scheme {url.scheme!r}"
        )
    return httpx.Proxy(url)


def _ssl_context(verify: object, cert: object, trust_env: bool) -> ssl.SSLContext | bool:
    """``verify`` as httpx takes it, with ``cert`` loaded into it (httpx deprecates its ``cert=``)."""
    if verify is None:
        verify = True
    if isinstance(verify, str):  # a CA bundle file or directory (httpx deprecates verify=<str>)
        if not os.path.exists(verify):
            raise ConfigurationError(f"verify: no CA file or directory at {verify!r}")
        try:
            if os.path.isdir(verify):
                verify = ssl.create_default_context(capath=verify)
            else:
                verify = ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as exc:
            what = type(exc).__name__
            raise ConfigurationError(f"verify: cannot load the CA certificates at {verify!r} ({what})") from None
    elif not isinstance(verify, (bool, ssl.SSLContext)):
        raise ConfigurationError(
            f"verify must be True, False, an ssl.SSLContext or the path of a CA bundle, got {type(verify).__name__}"
        )
    if cert is None:
        return verify
    if isinstance(cert, str):
        files: tuple[str, ...] = (cert,)
    elif isinstance(cert, tuple) and len(cert) in (2, 3) and all(isinstance(part, str) for part in cert):
        files = cert
    else:
        raise ConfigurationError(
            "cert must be a certificate file (str) or (certfile, keyfile) or (certfile, keyfile, password), "
            f"got {type(cert).__name__}"
        )
    context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify, trust_env=trust_env)
    try:
        context.load_cert_chain(*files)
    except (OSError, ssl.SSLError) as exc:  # never the password
        raise ConfigurationError(
            f"cert: cannot load the client certificate {files[0]!r}"
            + (f" with the key {files[1]!r}" if len(files) > 1 else "")
            + f" ({type(exc).__name__})"
        ) from None
    return context


def host_key(key: object) -> tuple[str, int | None]:
    """(host, port) of a key of a ``policy=`` mapping: ``"api.weixin.qq.com"`` matches that host
    on any port, ``"wa.example.internal:9090"`` (or ``"[::1]:8080"``) that host on that port only,
    ``"*"`` any host. Hosts are compared as httpx gives a request's host: lower case, IDNA decoded.
    A key that could never match a request raises :class:`ConfigurationError` naming it."""
    if not isinstance(key, str):
        raise ConfigurationError(f"policy mapping keys are hosts (str), got {type(key).__name__} {key!r}")
    if key == "*":
        return key, None
    if not key:
        why = "it is empty"
    elif "://" in key:
        why = "it is a URL; give the host alone, e.g. 'api.weixin.qq.com' or 'wa.example.internal:9090'"
    elif any(c.isspace() for c in key):
        why = "it contains whitespace"
    elif any(c in key for c in "/?#@%\\"):
        why = "a host has no '/', '?', '#', '@', '%' or '\\' (give the host alone, without a path)"
    elif "*" in key:
        why = "'*' matches any host only on its own ('*.example.com' is not supported)"
    else:
        try:
            url = httpx.URL(f"x://{key}")  # httpx's own host normalisation: keys compare as request hosts do
        except httpx.InvalidURL as exc:
            why = f"{exc} (an IPv6 address goes in brackets: '[::1]:8080')" if key.count(":") > 1 else str(exc)
        else:
            if not url.host:
                why = "it has no host"
            elif key.endswith(":"):
                why = "the port after ':' is missing"
            elif url.port is not None and not 1 <= url.port <= 65535:
                why = f"port {url.port} is not from 1 to 65535"
            else:
                return url.host, url.port
    raise ConfigurationError(f"policy mapping key {key!r} can never match a request: {why}")
