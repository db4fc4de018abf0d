"""Browser-facing protection on every response: a strict Content-Security-Policy, `nosniff`, no framing.

The page shows patients' reports, so it runs only its own script and style (no inline code: `app.js` and
`style.css` under /static), talks only to its own origin, shows images only from there or from blob URLs
it made itself (previews, thumbnails), and may not be framed (clickjacking). JSON answers get the same
headers: a JSON error rendered as HTML by a confused browser can run nothing. The interactive API docs
(/docs, /redoc) are FastAPI's, which load Swagger UI and ReDoc from a CDN with an inline script; they keep
every header but a policy of their own that allows exactly that.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DOCS_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; font-src https://fonts.gstatic.com; "
    "worker-src blob:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),  # for browsers that predate frame-ancestors
    (b"referrer-policy", b"no-referrer"),  # a case URL in a Referer would name the case
    (b"cross-origin-opener-policy", b"same-origin"),
]


def policy_for(path: str) -> str:
    """The Content-Security-Policy of the response to `path`."""
    return DOCS_POLICY if path.startswith(DOCS_PATHS) else PAGE_POLICY


class SecurityHeaders:
    """ASGI middleware: sets the headers above on every HTTP response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = (b"content-security-policy", policy_for(scope.get("path", "")).encode())

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in (*COMMON, policy) if n not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)
