"""The server's HTTP behaviour, independent of Ray: token first, then routes, then the body.

``SwapService.handle(method, path, headers, read_body)`` returns a ``Reply``; the Serve deployment
(``app``) adapts a Starlette request to it and runs the swaps. Order of checks, for every request:
the token (401 on any path, before a byte of the body is read), the route (404/405), the declared
size (400 before reading), then the body itself (400 naming the problem). A failed swap is a 500
with the reason; the server keeps serving either way.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Awaitable, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

from dfl_perf.remote.wire import (
    PROTOCOL,
    SwapReply,
    SwapRequest,
    WireError,
    decode_request,
    encode_reply,
    request_limit,
)
from dfl_perf.serve.auth import TokenCheck

__all__ = ["SwapService", "Reply", "BodyTooLarge"]

log = logging.getLogger("dfl_perf.serve")

SwapFn = Callable[[SwapRequest], Awaitable[Tuple[SwapReply, float]]]  # (reply, seconds of its model run)
BodyReader = Callable[[int], Awaitable[bytes]]


class BodyTooLarge(Exception):
    """Raised by a body reader when the body grows past the limit it was given."""


class Reply(NamedTuple):
    status: int
    headers: Dict[str, str]
    body: bytes


def _text(status: int, message: str, **headers: str) -> Reply:
    return Reply(status, dict(headers, **{"Content-Type": "text/plain; charset=utf-8"}),
                 (message + "\n").encode("utf-8"))


class SwapService:
    """One model behind the wire format. ``info``: what ``GET /info`` says (model, resolution, ...);
    ``swap``: an async callable that runs one request's faces (batched or not, the caller decides)
    and returns ``(reply, seconds of the model run that served it)``; each 200 reply carries a
    ``Server-Timing`` header: ``model`` (that run) and ``replica`` (body read to reply encoded), ms.
    ``counters``: a callable whose dict ``GET /info`` adds (model runs, faces swapped, ...)."""

    def __init__(self, info: Mapping[str, Any], token: Optional[str], swap: SwapFn,
                 counters: Optional[Callable[[], Mapping[str, Any]]] = None) -> None:
        self.info = dict(info, protocol=PROTOCOL, token_required=token is not None)
        self.resolution = int(info["resolution"])
        self.limit = request_limit(self.resolution, "jpeg")
        self._token = TokenCheck(token)
        self._swap = swap
        self._counters = counters
        self.served = self.refused = self.rejected = self.failed = 0

    async def handle(self, method: str, path: str, headers: Mapping[str, str], read_body: BodyReader) -> Reply:
        if not self._token.allows(headers.get("authorization")):
            self.refused += 1
            return _text(401, "401 unauthorized: a valid 'Authorization: Bearer TOKEN' header is required",
                         **{"WWW-Authenticate": "Bearer"})
        route = "/" + path.strip("/").rsplit("/", 1)[-1]
        if route == "/swap":
            if method != "POST":
                return _text(405, "405: /swap takes POST", Allow="POST")
            return await self._swap_reply(headers, read_body)
        if route in ("/info", "/healthz"):
            if method != "GET":
                return _text(405, "405: %s takes GET" % route, Allow="GET")
            if route == "/healthz":
                return _text(200, "ok")
            return Reply(200, {"Content-Type": "application/json"}, json.dumps(self.describe()).encode("utf-8"))
        return _text(404, "404: no such path %r (paths: POST /swap, GET /info, GET /healthz)" % path[:100])

    def describe(self) -> Dict[str, Any]:
        """``GET /info``: the model and settings, plus what this replica has done so far."""
        info = dict(self.info, requests=self.served, refused=self.refused, rejected=self.rejected,
                    failed=self.failed)
        if self._counters is not None:
            info.update(self._counters())
        return info

    async def _swap_reply(self, headers: Mapping[str, str], read_body: BodyReader) -> Reply:
        started = time.perf_counter()
        try:
            request = await self._request(headers, read_body)
        except WireError as exc:
            self.rejected += 1
            return _text(400, "400 bad request: %s" % exc)
        try:
            reply, model_seconds = await self._swap(request)
            out_headers, body = encode_reply(reply, request.codec)
        except Exception as exc:  # the model or the encoder failed: this request only
            self.failed += 1
            log.exception("swap failed")
            return _text(500, "500 swap failed: %s: %s" % (type(exc).__name__, exc))
        self.served += 1
        out_headers["Server-Timing"] = "model;dur=%.3f, replica;dur=%.3f" % (
            model_seconds * 1e3, (time.perf_counter() - started) * 1e3)
        return Reply(200, out_headers, body)

    async def _request(self, headers: Mapping[str, str], read_body: BodyReader) -> SwapRequest:
        declared = headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise WireError("Content-Length %r is not a number" % declared[:40]) from None
            if size > self.limit:
                raise WireError("oversized body: Content-Length %d is over this server's limit of %d bytes"
                                % (size, self.limit))
        try:
            body = await read_body(self.limit)
        except BodyTooLarge:
            raise WireError("oversized body: more than this server's limit of %d bytes" % self.limit) from None
        if declared is not None and len(body) != int(declared):
            raise WireError("truncated body: got %d of the %s bytes in Content-Length" % (len(body), declared))
        return decode_request(headers, body, self.resolution)
