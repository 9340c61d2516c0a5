"""Who may talk to the explorer: loopback binds are open to this machine (with the Host
header checked, against DNS rebinding); any other bind needs a token, as Jupyter does —
in the URL once (then a cookie), or ``Authorization: token …`` for scripts."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
from urllib.parse import parse_qs

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_for(host: str, token: str | None) -> str | None:
    """The token a server bound to ``host`` checks: the one given, a new random one for a
    non-loopback bind, or None (loopback without a token)."""
    if token:
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def cookie_name(token: str) -> str:
    """The cookie one server's token lives in: named after the token, because browsers
    keep one cookie per name and host whatever the port, so two servers on one host
    would otherwise overwrite each other's."""
    return "vaefast_explore_" + hashlib.sha256(token.encode()).hexdigest()[:16]


def _refuse(status: int, message: str):
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return body, headers, status


class Guard:
    """ASGI middleware: a request without the token (when there is one), or with a Host
    header naming another machine (when there is none), gets a JSON 403."""

    def __init__(self, app, token: str | None) -> None:
        self.app, self.token = app, token
        self.cookie = cookie_name(token) if token else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        from_query = query.get("token", [""])[0]
        problem = self._problem(headers, from_query)
        if problem:
            body, hdrs, status = _refuse(403, problem)
            await send({"type": "http.response.start", "status": status, "headers": hdrs})
            return await send({"type": "http.response.body", "body": body})
        if self.token and from_query:

            async def send_with_cookie(message):
                if message["type"] == "http.response.start":
                    cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                    message["headers"] = [*message["headers"], (b"set-cookie", cookie.encode())]
                await send(message)

            return await self.app(scope, receive, send_with_cookie)
        return await self.app(scope, receive, send)

    def _problem(self, headers: dict[str, str], from_query: str) -> str | None:
        if self.token is None:
            host = headers.get("host", "").rsplit(":", 1)[0].strip("[]")
            return None if host in LOCAL_NAMES else "Host not allowed"
        given = [from_query, headers.get("authorization", "").removeprefix("token ").strip()]
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie:
                given.append(value)
        if any(g and hmac.compare_digest(g.encode(), self.token.encode()) for g in given):
            return None
        return "missing or wrong token"
