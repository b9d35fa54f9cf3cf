"""An HTTP fault proxy between fakescan and the S3 endpoint (moto), on 127.0.0.1.

Each request is read whole (request line, headers, body by Content-Length), sent to the
upstream with ``Connection: close``, and its response relayed; the client's connection is
closed after each response. A :class:`FaultPlan` decides, per request, whether to inject:

- ``503``: answer ``503 Slow Down`` (an S3 error document) without asking the upstream;
- ``reset``: drop the connection with a TCP reset before any response byte;
- ``stall``: hold the connection open, silent, for ``stall_seconds``, then drop it;
- ``truncate``: relay the upstream's status and headers (its Content-Length included) and then
  only half of the body before an orderly close, as a cut-off transfer through a middlebox looks.

``latency`` (seconds) holds every request that long before it is forwarded or answered: the
first-byte latency of a real object store, which a local moto server does not have
(``bench_scan --s3-latency``).

Runs its own asyncio loop in a daemon thread, so synchronous tests and benchmarks can change the
plan while it serves. Counts every injected fault by kind (``proxy.injected``).
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlparse

FAULTS = ("503", "reset", "stall", "truncate")
SLOW_DOWN = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
             b"<Message>Please reduce your request rate.</Message></Error>")


@dataclass
class FaultPlan:
    """Probabilities per fault kind, for requests that ``applies`` selects (object GETs by default)."""

    rates: dict[str, float] = field(default_factory=dict)
    stall_seconds: float = 5.0
    seed: int = 0
    budget: int | None = None  # at most this many faults in all, then every request passes
    applies: Callable[[str, str], bool] = lambda method, path: method == "GET" and "?" not in path

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()

    def choose(self, method: str, path: str) -> str | None:
        if not self.rates or not self.applies(method, path):
            return None
        with self._lock:
            if self.budget is not None and self.budget <= 0:
                return None
            draw = self._random.random()
            for kind in FAULTS:
                rate = self.rates.get(kind, 0.0)
                if draw < rate:
                    if self.budget is not None:
                        self.budget -= 1
                    return kind
                draw -= rate
        return None


class FaultProxy:
    def __init__(self, upstream: str, latency: float = 0.0) -> None:
        self.latency = latency
        parsed = urlparse(upstream)
        self.upstream_host, self.upstream_port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.plan = FaultPlan()
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultProxy":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def set_plan(self, plan: FaultPlan | None) -> None:
        self.plan = plan or FaultPlan()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request is None:
                return
            method, path, raw = request
            self.requests += 1
            if self.latency:
                await asyncio.sleep(self.latency)
            fault = self.plan.choose(method, path)
            if fault is not None:
                self.injected[fault] += 1
            await self._answer(fault, raw, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, fault: str | None, raw: bytes, writer: asyncio.StreamWriter) -> None:
        if fault == "503":
            writer.write(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                         + f"Content-Length: {len(SLOW_DOWN)}\r\nConnection: close\r\n\r\n".encode() + SLOW_DOWN)
            await writer.drain()
            return
        if fault == "reset":
            _reset(writer)
            return
        if fault == "stall":
            await asyncio.sleep(self.plan.stall_seconds)
            _reset(writer)
            return
        head, body = await self._forward(raw)
        if fault == "truncate" and len(body) > 1:  # a clean close (FIN) halfway: no error on the wire
            writer.write(head + body[: len(body) // 2])
            await writer.drain()
            return
        writer.write(head + body)
        await writer.drain()

    async def _forward(self, raw: bytes) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        try:
            writer.write(raw)
            await writer.drain()
            response = await reader.read()  # the upstream closes after its answer (Connection: close)
        finally:
            writer.close()
        head, _, body = response.partition(b"\r\n\r\n")
        lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        return b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n", body


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers = [line for line in lines[1:] if line and not line.lower().startswith("connection:")]
    length = next((int(line.split(":", 1)[1]) for line in headers if line.lower().startswith("content-length:")), 0)
    body = await reader.readexactly(length) if length else b""
    raw = "\r\n".join([lines[0], *headers, "Connection: close", "", ""]).encode("latin-1") + body
    return method, path, raw


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a dropped connection looks to the client."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
