"""A small local server speaking the OpenAI chat-completions protocol over real HTTP (loopback).

The `model` field of a request picks its behaviour, so one server covers every case:
`stream` (SSE chunks), `plain` (one JSON reply even when asked to stream), `slow` (answers after
2 s), `error` (HTTP 500), `malformed` (a broken stream event), `empty` (a stream with no text),
`json` (a ```json block with revised_prompt), `think` (a reply wrapped in <think>…</think>),
`trickle` (a stream that sends one byte every 0.5 s, forever), `flaky` (HTTP 429, then 503, then a
normal stream), `huge` (a 2 MB stream), `secret-error` (HTTP 500 whose body holds a secret).
Every request it received is kept in `server.requests`.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY = "A red fox in fresh snow at sunrise, warm rim light."


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        model = body.get("model")
        if self.path != "/v1/chat/completions":
            return self._send(404, b'{"error": "not found"}')
        if model == "error":
            return self._send(500, b'{"error": "the model crashed"}')
        if model == "secret-error":
            return self._send(500, b'{"error": "internal db password=HUNTER2"}')
        if model == "flaky" and sum(r["body"].get("model") == "flaky" for r in self.server.requests) <= 2:
            status = 429 if sum(r["body"].get("model") == "flaky" for r in self.server.requests) == 1 else 503
            self.send_response(status)
            self.send_header("Retry-After", "0.05")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if model in ("trickle", "huge"):
            return self._stream_forever(model)
        if model == "slow":
            time.sleep(2)
        if model == "plain":
            reply = {"choices": [{"message": {"role": "assistant", "content": REPLY}}]}
            return self._send(200, json.dumps(reply).encode())
        content = body["messages"][-1]["content"]
        images = sum(1 for p in content if p.get("type") == "image_url") if isinstance(content, list) else 0
        text = {"json": 'Sure.\n```json\n{"name": "Ada", "revised_prompt": "Ada, a tall inventor"}\n```',
                "think": "<think>The user wants a fox.</think>\n\n" + REPLY,
                "image": f"saw {images} image"}.get(model, REPLY)
        events = [] if model == "empty" else [text[i:i + 7] for i in range(0, len(text), 7)]
        lines = [f"data: {json.dumps({'choices': [{'delta': {'content': e}}]})}\n\n" for e in events]
        if model == "malformed":
            lines.insert(1, "data: {not json\n\n")
        payload = ("".join(lines) + "data: [DONE]\n\n").encode()
        self._send(200, payload, "text/event-stream")


    def _stream_forever(self, model):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        event = f"data: {json.dumps({'choices': [{'delta': {'content': 'x' * 1000}}]})}\n\n".encode()
        try:
            if model == "huge":
                for _ in range(2100):
                    self.wfile.write(event)
                return
            for _ in range(600):  # 5 minutes at most, one byte at a time
                self.wfile.write(b"d")
                self.wfile.flush()
                time.sleep(0.5)
        except (BrokenPipeError, ConnectionResetError):
            pass


def start() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
