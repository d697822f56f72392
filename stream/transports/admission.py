"""Connection accounting for the streams: one per-IP cap and one global cap, SSE and WS
together.

Both transports ask ``Admission.admit(ip)`` before anything is spent on a client (before
the WebSocket handshake, before the SSE stream starts) and get a ``Ticket`` or a
``Refusal``. The ticket is released when the stream ends, however it ends; ``release()``
is idempotent, so a path that releases twice cannot free another client's slot. The
client IP is what uvicorn put in the ASGI scope: the socket's peer, or the
``X-Forwarded-For`` client when the peer is a trusted proxy (``stream.serving``).
"""

from __future__ import annotations

import enum
import heapq
from collections import Counter
from typing import Any

from starlette.responses import JSONResponse

from stream.web.errors import error_response

__all__ = ["Admission", "Refusal", "Ticket", "refusal_response"]


class Refusal(enum.Enum):
    """Why a connection was turned away."""

    PER_IP = "too_many_connections"  # 429: this client IP holds its share
    FULL = "server_full"  # 503: the server holds all it may


class Ticket:
    """One admitted connection's slot; ``release()`` gives it back exactly once."""

    __slots__ = ("_admission", "ip", "released")

    def __init__(self, admission: Admission, ip: str) -> None:
        self._admission = admission
        self.ip = ip
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._admission._release(self.ip)


class Admission:
    """Counts open stream connections per client IP and in total (never awaits)."""

    def __init__(self, *, max_per_ip: int, max_total: int) -> None:
        if max_per_ip < 1:
            raise ValueError(f"max_per_ip must be at least 1, got {max_per_ip}")
        if max_total < 1:
            raise ValueError(f"max_total must be at least 1, got {max_total}")
        self.max_per_ip = max_per_ip
        self.max_total = max_total
        self._by_ip: Counter[str] = Counter()
        self.total = 0
        self.refused: Counter[str] = Counter()

    def admit(self, ip: str) -> Ticket | Refusal:
        """A slot for a new connection from ``ip``, or why there is none."""
        if self._by_ip[ip] >= self.max_per_ip:
            refusal = Refusal.PER_IP
        elif self.total >= self.max_total:
            refusal = Refusal.FULL
        else:
            self._by_ip[ip] += 1
            self.total += 1
            return Ticket(self, ip)
        if not self._by_ip[ip]:
            del self._by_ip[ip]  # the lookup above must not leave an entry behind
        self.refused[refusal.value] += 1
        return refusal

    def _release(self, ip: str) -> None:
        self.total -= 1
        self._by_ip[ip] -= 1
        if self._by_ip[ip] <= 0:
            del self._by_ip[ip]

    @property
    def by_ip(self) -> dict[str, int]:
        """Open connections by client IP (a copy)."""
        return dict(self._by_ip)

    def stats(self, top: int = 10) -> dict[str, Any]:
        busiest = heapq.nlargest(top, self._by_ip.items(), key=lambda item: item[1])
        return {
            "total": self.total,
            "max_total": self.max_total,
            "max_per_ip": self.max_per_ip,
            "client_ips": len(self._by_ip),
            "top_ips": [{"ip": ip, "connections": n} for ip, n in busiest],
            "refused": {reason.value: self.refused[reason.value] for reason in Refusal},
        }

    def message(self, refusal: Refusal) -> str:
        if refusal is Refusal.PER_IP:
            return f"at most {self.max_per_ip} stream connections per client IP"
        return f"the server holds its maximum of {self.max_total} stream connections"


def refusal_response(admission: Admission, refusal: Refusal) -> JSONResponse:
    """The typed HTTP answer to a refused connection (429 or 503, with Retry-After)."""
    status = 429 if refusal is Refusal.PER_IP else 503
    return error_response(status, refusal.value, admission.message(refusal),
                          headers={"Retry-After": "5"})
