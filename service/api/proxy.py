"""Which peer speaks for the client: forwarded headers are believed from ``FORWARDED_ALLOW_IPS`` only.

Behind a proxy every connection comes from the proxy, so the client's address is in
``X-Forwarded-For``; believing that header from anyone would let any client pick its own
address. ``init_app`` wraps the app in Werkzeug's ``ProxyFix`` for requests whose peer is a
listed proxy and leaves every other request as it arrived, so logs, audit and rate limits see
the real client. ``is_local`` answers the question open mode asks: did this request come
straight from this machine, with no proxy in between?
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Any

from flask import Flask, current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

from service.config import Config

#: A request carrying any of these came through a proxy (or pretends to), so it is never local.
FORWARDED_HEADERS = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP")
#: Where ProxyFix keeps the values it replaced.
ORIGINAL_ENVIRON = "werkzeug.proxy_fix.orig"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The peers listed in ``FORWARDED_ALLOW_IPS``; ``*`` trusts every peer."""

    def __init__(self, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        #: As declared, for messages that say what was declared.
        self.declared = allowed
        self.everyone = "*" in allowed
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(a, strict=False) for a in allowed if a != "*")

    def __bool__(self) -> bool:
        return self.everyone or bool(self.networks)

    def trusts(self, peer: str | None) -> bool:
        """Tell whether ``peer`` (an address as REMOTE_ADDR gives it) is a listed proxy."""
        if self.everyone:
            return True
        address = _address(peer)
        return address is not None and any(address in network for network in self.networks)


#: No proxy believed: what an app without ``init_app`` (or an empty FORWARDED_ALLOW_IPS) trusts.
NO_PROXIES = TrustedProxies(())


class _ProxyFixForTrustedPeers:
    """Apply ``ProxyFix`` (one proxy hop: client address, scheme and host) only for a trusted peer."""

    def __init__(self, app: Any, trusted: TrustedProxies) -> None:
        self.app = app
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=1)
        self.trusted = trusted

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.trusted.trusts(environ.get("REMOTE_ADDR")):
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)


def init_app(app: Flask, config: Config) -> None:
    """Believe forwarded headers from ``FORWARDED_ALLOW_IPS`` only (not at all when it is unset)."""
    trusted = TrustedProxies(config.forwarded_allow_ips)
    app.extensions["trusted_proxies"] = trusted
    if trusted:
        app.wsgi_app = _ProxyFixForTrustedPeers(app.wsgi_app, trusted)  # type: ignore[method-assign]


def peer_address(environ: dict[str, Any]) -> str | None:
    """Return the address of the connection's other end, before any forwarded header was applied."""
    return environ.get(ORIGINAL_ENVIRON, {}).get("REMOTE_ADDR") or environ.get("REMOTE_ADDR")


def is_direct(environ: dict[str, Any], trusted: TrustedProxies) -> bool:
    """Tell whether a request came straight from its client: no forwarded header, not from a listed proxy."""
    return not any(environ.get(name) for name in FORWARDED_HEADERS) and not trusted.trusts(peer_address(environ))


def is_local(environ: dict[str, Any], trusted: TrustedProxies) -> bool:
    """Tell whether a request came straight from a loopback peer: no forwarded header, no listed proxy.

    A same-host proxy connects from 127.0.0.1 too, so the headers it adds, or its address in
    ``FORWARDED_ALLOW_IPS``, are what keep its requests from counting as local. A peer that is
    not an IP address (a Unix socket) is not local either: a proxy is the usual reason for one.
    """
    address = _address(peer_address(environ))
    return address is not None and address.is_loopback and is_direct(environ, trusted)


def why_not_local(environ: dict[str, Any], trusted: TrustedProxies) -> str:
    """Say in a clause why a request is not local (``is_local`` is false): which header, which declared proxy."""
    sent = [name[5:].replace("_", "-").title().replace("-Ip", "-IP") for name in FORWARDED_HEADERS if environ.get(name)]
    if sent:
        return f"came through a proxy (it carries {', '.join(sent)})"
    peer = peer_address(environ)
    if trusted.trusts(peer):
        return (f"came from {peer}, which FORWARDED_ALLOW_IPS={','.join(trusted.declared)} declares a proxy, and counts "
                "as proxied even without forwarded headers (a proxy on this host connects from the same address as a "
                "direct client, and its clients must not be served as local)")
    if _address(peer) is None:
        return "came over a Unix socket, the way a proxy connects"
    return f"came from another machine ({peer})"


def is_local_request() -> bool:
    """Tell whether the current request is local (see ``is_local``)."""
    return is_local(request.environ, trusted_proxies())


def is_direct_request() -> bool:
    """Tell whether the current request came straight from its client (see ``is_direct``)."""
    return is_direct(request.environ, trusted_proxies())


def trusted_proxies() -> TrustedProxies:
    """Return the proxies this app believes (``FORWARDED_ALLOW_IPS``)."""
    trusted = current_app.extensions.get("trusted_proxies")
    return NO_PROXIES if trusted is None else trusted


@functools.lru_cache(maxsize=1024)  # a worker sees few peers (its proxy, or clients that return): parse each once
def _address(peer: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address((peer or "").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
