"""The request body limit, for every route and every way a body can arrive.

A declared Content-Length over the limit gets 413 before a byte is read. A body without one
(`Transfer-Encoding: chunked`) is counted as it streams in: the moment it passes the limit, reading
stops, and whatever the route was about to answer (a form parser's 400, a 500) becomes the same 413.
Either way the connection is closed after the answer, since the rest of the body was never read.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kgreport.api.service.errors import ApiError, error_response


class BodyTooLarge(ApiError):
    """The body passed the limit while it was being read."""

    def __init__(self, megabytes: float) -> None:
        super().__init__(413, "upload_too_large", f"request body over the {megabytes:g} MB limit")


class BodyLimit:
    """Plain ASGI middleware (no task per request) that enforces `limit` bytes of request body."""

    def __init__(self, app: ASGIApp, limit: int, megabytes: float) -> None:
        self.app, self.limit, self.megabytes = app, limit, megabytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(send)
            return

        received = 0
        over = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, over
            if over:  # a route that swallowed the error and reads on gets nothing more
                raise BodyTooLarge(self.megabytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    over = True
                    raise BodyTooLarge(self.megabytes)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(send)
                return  # the route's own answer to a cut-off body is replaced by the 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over:
                raise
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        err = BodyTooLarge(self.megabytes)
        response = error_response(err.status, err.code, err.message, headers={"Connection": "close"})

        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        await response({"type": "http"}, no_body, send)
