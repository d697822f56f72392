"""A TCP proxy in front of PostgreSQL that a test can take down, bring back, or have fail
a chosen save.

Down: every open connection is cut and new ones are closed at once (what clients see when
the server goes away), without disturbing other users of the shared PostgreSQL.

Faults at a save: the proxy reads the wire protocol (it never changes a byte it relays), so
it knows when a transaction that touched ``chainwire_batches`` -- a ``save_batches`` --
sends its ``COMMIT``. ``fail_saves({n: Fault...})`` makes the n-th such COMMIT from then on
fail in one of three ways, so every fault lands inside a save by construction, never by a
timer happening to line up:

- ``DROP_COMMIT``: the COMMIT never reaches the server and the connection is cut: the
  transaction, its rows already sent, rolls back.
- ``CUT_AFTER_COMMIT``: the COMMIT runs; the connection is cut when the server's answer
  arrives, before the client sees it (a save that raised although it committed).
- ``TERMINATE``: the COMMIT is held while ``pg_terminate_backend`` ends that session (and
  waits until it is gone); the client gets the server's FATAL error, nothing commits.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import asyncpg
from anyio.abc import SocketStream, TaskGroup

__all__ = ["Fault", "PgProxy", "pg_proxy"]

# Startup-phase request codes (untyped messages); the first two get a one-byte answer.
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


class Fault(enum.Enum):
    DROP_COMMIT = "drop_commit"
    CUT_AFTER_COMMIT = "cut_after_commit"
    TERMINATE = "terminate"


class _Framer:
    """Splits a byte stream into whole protocol messages (typed: 1 type byte, then an int32
    length that counts itself; untyped startup messages lack the type byte)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def take_byte(self) -> bytes | None:
        if not self._buf:
            return None
        byte = bytes(self._buf[:1])
        del self._buf[:1]
        return byte

    def take(self, typed: bool) -> bytes | None:
        start = 1 if typed else 0
        if len(self._buf) < start + 4:
            return None
        total = start + int.from_bytes(self._buf[start : start + 4], "big")
        if len(self._buf) < total:
            return None
        message = bytes(self._buf[:total])
        del self._buf[:total]
        return message

    def rest(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        return data


def _cstrings(body: bytes, count: int) -> list[bytes]:
    return body.split(b"\0", count)[:count]


@dataclass
class _Session:
    """One proxied connection: what the two directions tell each other."""

    pid: int | None = None
    one_byte_answers: int = 0  # SSL/GSSENC requests relayed, answer not seen yet
    opaque: bool = False  # TLS was agreed: stop reading, just relay
    cut_on_answer: bool = False  # a COMMIT was relayed for CUT_AFTER_COMMIT
    statements: dict[bytes, bytes] = field(default_factory=dict)
    in_transaction: bool = False
    touched_batches: bool = False


class PgProxy:
    def __init__(self, tg: TaskGroup, target_port: int, admin_url: str) -> None:
        self._tg = tg
        self._target_port = target_port
        self._admin_url = admin_url
        self.port = 0
        self.up = True
        self._scopes: set[anyio.CancelScope] = set()
        #: Cut this many save connections right after their COMMIT ran, before its answer.
        self.cut_after_commit = 0
        self.commits_cut = 0
        #: COMMITs the server confirmed whose answer the client never got.
        self.commits_withheld = 0
        #: Save COMMITs seen since the last ``fail_saves``, and the faults injected, in order.
        self.save_commits = 0
        self.injected: list[Fault] = []
        self._plan: dict[int, Fault] = {}

    def down(self) -> None:
        self.up = False
        for scope in list(self._scopes):
            scope.cancel()

    def bring_up(self) -> None:
        self.up = True

    def fail_saves(self, plan: dict[int, Fault]) -> None:
        """Fail the n-th save COMMIT from now (1-based) with ``plan[n]``."""
        if any(n < 1 for n in plan):
            raise ValueError("save numbers start at 1")
        self.save_commits = 0
        self._plan = dict(plan)

    def _fault_for_save(self) -> Fault | None:
        self.save_commits += 1
        fault = self._plan.pop(self.save_commits, None)
        if fault is None and self.cut_after_commit:
            self.cut_after_commit -= 1
            self.commits_cut += 1
            fault = Fault.CUT_AFTER_COMMIT
        if fault is not None:
            self.injected.append(fault)
        return fault

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            if not self.up:
                return
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self._target_port)
            except OSError:
                return
            async with upstream:
                with anyio.CancelScope() as scope:
                    self._scopes.add(scope)
                    try:
                        async with anyio.create_task_group() as tg:
                            session = _Session()
                            tg.start_soon(self._from_client, session, client, upstream, tg)
                            tg.start_soon(self._from_server, session, upstream, client, tg)
                    finally:
                        self._scopes.discard(scope)

    async def _from_client(
        self, session: _Session, src: SocketStream, dst: SocketStream, tg: TaskGroup
    ) -> None:
        framer, typed = _Framer(), False
        try:
            async for chunk in src:
                if session.opaque:
                    await dst.send(chunk)
                    continue
                framer.feed(chunk)
                out = bytearray()
                while (message := framer.take(typed)) is not None:
                    if not typed:
                        typed = self._startup(session, message)
                        out += message
                        continue
                    fault = self._inspect(session, message)
                    if fault is None:
                        out += message
                        continue
                    if out:
                        await dst.send(bytes(out))
                    await self._inject(fault, session, message, dst)
                    return
                if session.opaque:
                    out += framer.rest()
                if out:
                    await dst.send(bytes(out))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            # Either direction ending ends the connection.
            tg.cancel_scope.cancel()

    @staticmethod
    def _startup(session: _Session, message: bytes) -> bool:
        """Note an untyped message; True once the startup message proper has gone by."""
        code = int.from_bytes(message[4:8], "big")
        if code in (_SSL_REQUEST, _GSSENC_REQUEST):
            session.one_byte_answers += 1
            return False
        return code != _CANCEL_REQUEST

    def _inspect(self, session: _Session, message: bytes) -> Fault | None:
        """Follow transactions; at the COMMIT of one that touched the batch log, a fault."""
        kind, body = message[:1], message[5:]
        if kind == b"P":  # Parse: statement name, query
            name, query = _cstrings(body, 2)
            session.statements[name] = query
            session.touched_batches |= session.in_transaction and b"chainwire_batches" in query
        elif kind == b"B":  # Bind: portal name, statement name
            _, name = _cstrings(body, 2)
            query = session.statements.get(name, b"")
            session.touched_batches |= session.in_transaction and b"chainwire_batches" in query
        elif kind == b"Q":  # a simple query
            query = body.rstrip(b"\0").strip()
            verb = query.rstrip(b";").strip().upper()
            if verb.startswith(b"BEGIN"):
                session.in_transaction, session.touched_batches = True, False
            elif verb in (b"COMMIT", b"ROLLBACK"):
                save = session.in_transaction and session.touched_batches
                session.in_transaction = session.touched_batches = False
                if save and verb == b"COMMIT":
                    return self._fault_for_save()
            elif session.in_transaction and b"chainwire_batches" in query:
                session.touched_batches = True
        return None

    async def _inject(
        self, fault: Fault, session: _Session, commit: bytes, dst: SocketStream
    ) -> None:
        if fault is Fault.CUT_AFTER_COMMIT:
            # The server runs it; _from_server cuts when the answer comes back.
            session.cut_on_answer = True
            await dst.send(commit)
            await anyio.sleep_forever()
        if fault is Fault.TERMINATE:
            assert session.pid is not None, "no BackendKeyData seen on this connection"
            conn = await asyncpg.connect(self._admin_url)
            try:
                # With a timeout, pg_terminate_backend waits until the session is gone.
                gone = await conn.fetchval("SELECT pg_terminate_backend($1, 10000)", session.pid)
            finally:
                await conn.close()
            assert gone, f"backend {session.pid} did not terminate"
            # _from_server relays the FATAL error, sees the end, and ends the connection.
            await anyio.sleep_forever()
        # DROP_COMMIT: returning cuts the connection with the COMMIT unsent.

    async def _from_server(
        self, session: _Session, src: SocketStream, dst: SocketStream, tg: TaskGroup
    ) -> None:
        framer = _Framer()
        try:
            async for chunk in src:
                if session.opaque:
                    await dst.send(chunk)
                    continue
                framer.feed(chunk)
                out = bytearray()
                while session.one_byte_answers:
                    answer = framer.take_byte()
                    if answer is None:
                        break
                    session.one_byte_answers -= 1
                    session.opaque = answer == b"S"
                    out += answer
                    if session.opaque:
                        out += framer.rest()
                while not session.opaque and (message := framer.take(typed=True)) is not None:
                    kind = message[:1]
                    if kind == b"K":  # BackendKeyData: the backend's pid
                        session.pid = int.from_bytes(message[5:9], "big")
                    if session.cut_on_answer and kind in (b"C", b"E"):
                        # The COMMIT's answer: the client never learns that it committed.
                        if kind == b"C" and message[5:].startswith(b"COMMIT"):
                            self.commits_withheld += 1
                        if out:
                            await dst.send(bytes(out))
                        return
                    out += message
                if out:
                    await dst.send(bytes(out))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def pg_proxy(
    target_port: int = 5432, *, admin_url: str | None = None
) -> AsyncIterator[PgProxy]:
    """A proxy to PostgreSQL on ``target_port``; ``admin_url`` (default: the postgres
    database on that port) is used for ``Fault.TERMINATE``."""
    if admin_url is None:
        admin_url = f"postgresql://postgres@127.0.0.1:{target_port}/postgres"
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        proxy = PgProxy(tg, target_port, admin_url)
        proxy.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.start_soon(listener.serve, proxy._handle)
        try:
            yield proxy
        finally:
            proxy.down()
            tg.cancel_scope.cancel()
