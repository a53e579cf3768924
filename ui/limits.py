"""Limits keyed on what a client cannot mint: its address, and the size of what it sends.

A session hash is the client's own choice (every `/call` gets a fresh one), so a limit keyed on it
binds nobody who does not want to be bound. The peer address of the connection is not chosen by
the client; behind a reverse proxy (a Space) every connection comes from the proxy, and only
when the peer is the operator's `--trusted-proxy` (an address or a network) is its
`X-Forwarded-For` believed (its last entry: the address the proxy itself saw; earlier entries are
the client's to write).
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
from collections import OrderedDict, deque
from urllib.parse import parse_qs

from starlette.requests import Request

UPLOAD_PATH = "/upload"  # gradio's multipart upload route: it caps each file itself (max_file_size)
SESSION_HASH_CHARS = 128  # a page's session hash is 11 characters, gradio_client's a uuid (36)
LONG_SESSION_HASH = re.compile(rb'"session_hash"\s*:\s*"[^"]{%d}' % (SESSION_HASH_CHARS + 1))


def _from_proxy(peer: str, trusted_proxy: str) -> bool:
    """Whether `peer` is the operator's proxy: an address, or a network such as 10.0.0.0/8."""
    try:
        return ipaddress.ip_address(peer) in ipaddress.ip_network(trusted_proxy, strict=False)
    except ValueError:
        return False


def client_address(request, trusted_proxy: str = "") -> str:
    """The client's address for `request` (a starlette/fastapi Request or a gr.Request)."""
    client = getattr(request, "client", None)
    peer = getattr(client, "host", "") or ""
    if trusted_proxy and _from_proxy(peer, trusted_proxy):
        forwarded = (getattr(request, "headers", None) or {}).get("x-forwarded-for", "")
        last = forwarded.split(",")[-1].strip()
        if last:
            return last
    return peer


class UploadLedger:
    """The bytes each client address uploaded within the last `window_s` (gradio keeps every upload
    that long), held to `limit`: many small upload requests filled the disk at 175 MB/s. A request
    counts by its declared length (else the most one request may carry), before gradio writes it."""

    ADDRESSES = 100_000  # addresses remembered, the least recent forgotten first

    def __init__(self, limit: int, window_s: float):
        self.limit, self.window_s = limit, window_s
        self._sent: OrderedDict[str, deque] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, address: str, size: int) -> str | None:
        """Count `size` bytes for `address`, or say why not (nothing counted)."""
        now = time.monotonic()
        with self._lock:
            sent = self._sent.setdefault(address, deque())
            self._sent.move_to_end(address)
            while sent and now - sent[0][0] > self.window_s:
                sent.popleft()
            held = sum(n for _, n in sent)
            if held + size > self.limit:
                wait = self.window_s - (now - sent[0][0]) if sent else self.window_s
                return (f"uploads: your address has sent {held / 2**20:,.1f} MB that the upload cache still keeps "
                        f"(this app's budget is {self.limit / 2**20:,.0f} MB per client while uploads are kept, "
                        f"{self.window_s / 3600:,.0f} h); this upload of {size / 2**20:,.1f} MB would go over it: "
                        f"reuse the files you uploaded, or try again in {wait / 60:,.0f} minutes.")
            sent.append((now, size))
            while len(self._sent) > self.ADDRESSES:
                self._sent.popitem(last=False)
        return None


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before gradio reads it,
    so an inline `data:` URL cannot carry more than an upload may. An upload request (gradio caps
    each of its files itself) is held to `upload_limit` bytes, all its files together, answered 413
    before gradio writes any of them to disk (0: only gradio's cap on each file)."""

    def __init__(self, app, limit: int, upload_mb: int, upload_limit: int = 0, client_upload_limit: int = 0,
                 window_s: float = 0, trusted_proxy: str = ""):
        self.app, self.limit, self.upload_mb, self.upload_limit = app, limit, upload_mb, upload_limit
        # a client's uploads stay in gradio's cache for `window_s`: what each address sent then
        self.uploads = UploadLedger(client_upload_limit, window_s) if client_upload_limit and window_s else None
        self.trusted_proxy = trusted_proxy

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["path"].endswith(UPLOAD_PATH)
        limit = self.upload_limit if upload else self.limit
        if not limit:
            return await self.app(scope, receive, send)
        if self._long_session_hash(scope):
            return await self._refuse_session_hash(send)
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await self._refuse(send, int(length), upload)
        if upload and self.uploads is not None:
            refusal = self.uploads.take(client_address(Request(scope), self.trusted_proxy),
                                        int(length) if length.isdigit() else limit)
            if refusal:
                return await self._answer(send, 413, refusal)
        if upload and length.isdigit() and b"transfer-encoding" not in headers:
            # a declared length within the budget: the server reads no byte past it, so the files
            # stream on to gradio's parser as they come (not held in memory here); counted all the
            # same, and cut off (a disconnect, to gradio) should more ever come
            counted = 0

            async def counting():
                nonlocal counted
                message = await receive()
                counted += len(message.get("body", b""))
                return {"type": "http.disconnect"} if counted > limit else message

            return await self.app(scope, counting, send)
        messages, size = [], 0
        while True:  # read up to the limit (a body without a declared length is counted as it comes)
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)
                break
            size += len(message.get("body", b""))
            if size > limit:
                return await self._refuse(send, size, upload)
            messages.append(message)
            if not message.get("more_body"):
                break

        if LONG_SESSION_HASH.search(b"".join(m.get("body", b"") for m in messages)):
            return await self._refuse_session_hash(send)

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    def _long_session_hash(scope) -> bool:
        """A session hash in the query or the path (`/heartbeat/<hash>`) over SESSION_HASH_CHARS:
        gradio keeps every session's state by its hash, so a megabyte hash is a megabyte held."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        path = scope["path"]
        return any(len(v) > SESSION_HASH_CHARS for v in query.get("session_hash", ())) or \
            ("/heartbeat/" in path and len(path.rsplit("/", 1)[-1]) > SESSION_HASH_CHARS)

    async def _refuse_session_hash(self, send) -> None:
        await self._answer(send, 400, f"session_hash: longer than {SESSION_HASH_CHARS} characters: a session "
                                      f"hash names a session (a page's is 11 characters); send a short one.")

    async def _refuse(self, send, size: int, upload: bool = False) -> None:
        if upload:
            detail = (f"upload request: {size:,} bytes is over this app's budget of {self.upload_limit:,} bytes "
                      f"per upload request (all its files together; each file up to {self.upload_mb} MB): upload "
                      f"fewer or smaller files in one request, or send the rest in another.")
        else:
            detail = (f"request body: {size:,} bytes is over this app's budget of {self.limit:,} bytes per request "
                      f"(inline data: URLs count): upload large images as files (up to {self.upload_mb} MB each) "
                      f"or send smaller ones.")
        await self._answer(send, 413, detail)

    @staticmethod
    async def _answer(send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail, "error": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
