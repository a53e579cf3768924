"""A small local server speaking the OpenAI chat-completions protocol over real HTTP (loopback).

The `model` field of a request picks its behaviour, so one server covers every case:
`stream` (SSE chunks), `plain` (one JSON reply even when asked to stream), `slow` (answers after
2 s), `error` (HTTP 500), `malformed` (a broken stream event), `empty` (a stream with no text),
`json` (a ```json block with revised_prompt), `think` (a reply wrapped in <think>…</think>).
Every request body it received is kept in `server.requests`.
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


def start() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
