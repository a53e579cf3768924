"""One HTTP exchange with an OpenAI-compatible server, inside a total deadline and a size cap.

httpx's `timeout` bounds each read, not the whole reply: a server that trickles a byte every few
seconds never times out. Here the socket work runs in a worker thread and the caller waits on a
queue with the time left, so the whole exchange (retries included) ends by the deadline, however
the server behaves. Connection errors, 429 and 5xx answers are retried with backoff (honouring
Retry-After) while time is left and nothing was received yet.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Iterator

from . import cancel

RETRIES = 3
BACKOFF_S = 0.5
MAX_REPLY_BYTES = 1 << 20  # a rewritten prompt is a few KB; a larger reply is refused
RETRY_STATUS = {429, 500, 502, 503, 504}
POLL_S = 0.1  # how often a wait checks whether the client went away
_END = object()


class HttpExchange:
    def __init__(self, url: str, body: dict, headers: dict, label: str, deadline_s: float,
                 echo_errors: bool = False, max_bytes: int = MAX_REPLY_BYTES):
        self.url, self.body, self.headers, self.label = url, body, headers, label
        self.deadline_s, self.echo_errors, self.max_bytes = deadline_s, echo_errors, max_bytes

    def lines(self) -> Iterator[str]:
        """The reply's text lines as they arrive; ValueError (naming the server, never echoing its
        body when hosted) on any failure, the deadline or the size cap."""
        import httpx

        items: queue.Queue = queue.Queue()
        stop = threading.Event()
        holder: dict = {}
        started = time.monotonic()
        worker = threading.Thread(target=self._work, args=(items, stop, holder), daemon=True)
        worker.start()
        try:
            while True:
                left = self.deadline_s - (time.monotonic() - started)
                try:
                    item = items.get(timeout=min(max(left, 0.0), POLL_S))
                except queue.Empty:
                    cancel.check()  # the client went away
                    if left > POLL_S:
                        continue
                    raise ValueError(f"timeout: the {self.label} did not finish its reply within "
                                     f"{self.deadline_s:g} s: raise the timeout or check the server.") from None
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise self._explain(item, httpx) from None
                yield item
        finally:
            stop.set()
            client = holder.get("client")
            if client is not None:
                client.close()  # unblocks a read in the worker

    def _work(self, items: queue.Queue, stop: threading.Event, holder: dict) -> None:
        import httpx

        started = time.monotonic()
        try:
            with httpx.Client(timeout=self.deadline_s, follow_redirects=False) as client:
                holder["client"] = client
                for attempt in range(RETRIES + 1):
                    try:
                        with client.stream("POST", self.url, json=self.body, headers=self.headers) as reply:
                            if reply.status_code in RETRY_STATUS and attempt < RETRIES:
                                wait = _retry_after(reply, BACKOFF_S * 2**attempt)
                                if time.monotonic() - started + wait < self.deadline_s:
                                    stop.wait(wait)
                                    continue
                            if reply.status_code >= 400:
                                detail = reply.read()[:300].decode(errors="replace") if self.echo_errors else ""
                                items.put(_StatusError(reply.status_code, detail))
                                return
                            self._stream(reply, items, stop)
                            return
                    except (httpx.ConnectError, httpx.ConnectTimeout) as err:
                        if attempt == RETRIES or stop.wait(BACKOFF_S * 2**attempt):
                            items.put(err)
                            return
        except Exception as err:  # noqa: BLE001 - handed to the caller's thread
            if not stop.is_set():
                items.put(err)
        finally:
            items.put(_END)

    def _stream(self, reply, items: queue.Queue, stop: threading.Event) -> None:
        received, pending = 0, b""
        for chunk in reply.iter_bytes():
            if stop.is_set():
                return
            received += len(chunk)
            if received > self.max_bytes:
                items.put(_TooLarge())
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                items.put(line.decode("utf-8", errors="replace").rstrip("\r"))
        if pending:
            items.put(pending.decode("utf-8", errors="replace"))

    def _explain(self, err: Exception, httpx) -> ValueError:
        where = self.label
        if isinstance(err, _StatusError):
            tail = f": {err.detail}" if err.detail else ""
            return ValueError(f"the {where} answered HTTP {err.status}{tail}: check the model name and the "
                              f"server, or try again later.")
        if isinstance(err, _TooLarge):
            return ValueError(f"the {where} sent more than {self.max_bytes // 1024} KB: lower max_new_tokens.")
        if isinstance(err, (httpx.ConnectError, httpx.ConnectTimeout)):
            return ValueError(f"base_url: cannot connect to the {where} after {RETRIES + 1} tries: is the server "
                              f"running, and is the address right?")
        if isinstance(err, httpx.TimeoutException):
            return ValueError(f"timeout: the {where} did not answer within {self.deadline_s:g} s: raise the "
                              f"timeout or check the server.")
        return ValueError(f"the exchange with the {where} failed ({type(err).__name__}): check the server and "
                          f"try again.")


class _StatusError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(status)
        self.status, self.detail = status, detail


class _TooLarge(Exception):
    pass


def _retry_after(reply, default: float) -> float:
    try:
        return min(float(reply.headers.get("retry-after", default)), 10.0)
    except ValueError:
        return default
