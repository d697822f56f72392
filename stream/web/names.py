"""Origins and host names, parsed and compared without I/O (and without Starlette, so the
settings can use them to validate ``CHAINWIRE_CORS_ORIGINS`` / ``CHAINWIRE_ALLOWED_HOSTS``).

Host patterns: a name or IP (``example.com``, ``10.0.0.5``, ``::1``), ``*.example.com``
(any subdomain, not the name itself), or ``*`` (any host). Origins: ``scheme://host[:port]``
as browsers serialise them (lower case, no default port, no path), or ``*``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

__all__ = ["LOOPBACK_HOSTS", "default_allowed_hosts", "host_allowed", "host_of",
           "is_loopback", "origin_allowed", "parse_host_pattern", "parse_origin"]

#: The names a server bound to loopback is reached by.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "*.localhost")

_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?")
_HOST_HEADER = re.compile(r"(?P<host>\[[0-9a-f:.]+\]|[^:\[\]]+)(:(?P<port>[0-9]{1,5}))?")
_ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<host>\[[0-9a-f:.]+\]|[a-z0-9._-]+)"
                     r"(:(?P<port>[0-9]{1,5}))?")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_host_pattern(text: str) -> str:
    """A configured pattern, normalised (lower case, IPv6 without brackets); ``ValueError``
    (carrying ``text``) when it is not a host name, an IP address, ``*.name`` or ``*``."""
    pattern = text.strip().lower()
    if pattern == "*":
        return pattern
    name = pattern[2:] if pattern.startswith("*.") else pattern
    if name.startswith("[") and name.endswith("]") and pattern == name:
        name = pattern = name[1:-1]
    if _is_ip(name) or (_NAME.fullmatch(name) and len(name) <= 253):
        return pattern
    raise ValueError(text)


def host_of(header: str | None) -> str | None:
    """The host name in a ``Host`` header (lower case, port and IPv6 brackets removed), or
    ``None`` when the header is missing or malformed."""
    if not header:
        return None
    match = _HOST_HEADER.fullmatch(header.strip().lower())
    if match is None or (match["port"] is not None and int(match["port"]) > 65535):
        return None
    host = match["host"]
    if host.startswith("["):
        host = host[1:-1]
        return host if ":" in host and _is_ip(host) else None
    return host if _NAME.fullmatch(host) else None


def is_loopback(bind_host: str) -> bool:
    if bind_host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind_host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_allowed_hosts(configured: Iterable[str], bind_host: str) -> tuple[str, ...]:
    """What is enforced: the configured patterns; when none are, the loopback names if we
    listen on loopback (nothing else can reach us, so any other name is a rebinding), or
    any host if we listen elsewhere (we cannot know the names we are reached by)."""
    patterns = tuple(configured)
    if patterns:
        return patterns
    return LOOPBACK_HOSTS if is_loopback(bind_host) else ("*",)


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    host = host.rstrip(".")
    for pattern in patterns:
        if pattern == "*" or host == pattern.rstrip("."):
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:].rstrip(".")):
            return True
    return False


def parse_origin(text: str) -> str:
    """A configured origin as browsers serialise it, or ``*``; ``ValueError`` carrying
    ``text`` otherwise."""
    origin = text.strip().lower()
    if origin == "*":
        return origin
    match = _ORIGIN.fullmatch(origin)
    if match is None:
        raise ValueError(text)
    return _serialise(match)


def _serialise(match: re.Match[str]) -> str:
    scheme, host, port = match["scheme"], match["host"], match["port"]
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _same_origin(origin: str, host_header: str | None) -> bool:
    """Whether ``origin`` names the host and port this request was sent to (the ``Host``
    header: a proxy must pass it on as the browser sent it, port included)."""
    match = _ORIGIN.fullmatch(origin)
    if match is None or not host_header:
        return False
    host = host_header.strip().lower()
    default = _DEFAULT_PORTS[match["scheme"]]
    if host.endswith(f":{default}"):
        host = host[: -len(default) - 1]
    return _serialise(match) == f"{match['scheme']}://{host}"


def origin_allowed(origin: str | None, host_header: str | None,
                   allowed: Iterable[str]) -> bool:
    """No ``Origin`` (not a browser page), the request's own origin, or a listed one."""
    if origin is None:
        return True
    origin = origin.strip().lower()
    listed = tuple(allowed)
    return "*" in listed or origin in listed or _same_origin(origin, host_header)
