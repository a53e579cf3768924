"""Loopback stand-ins for the Hugging Face hub, for first-run tests (no real network).

`FakeHub` serves local folders as model repos through the endpoints huggingface_hub 2.4 calls for
`model_info`, `snapshot_download` and `hf_hub_download` (repo info, the recursive tree listing, and
HEAD/GET on `/resolve/`), and records every request. `Blackhole` accepts connections and never
answers: a firewall that drops the replies, or a hub endpoint that hangs.

Run as a script, either prints its URL and serves until killed:
`python -m tests.fake_hub blackhole` or `python -m tests.fake_hub serve REPO=FOLDER ... [--chunk-delay S]`.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)$")
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
CHUNK = 64 * 1024


class FakeHub:
    """`repos`: {"owner/name": folder}. Files whose name starts with a dot are not served;
    `extra` files (name -> bytes) are added to every repo (a README the loaders never read)."""

    def __init__(self, repos: dict[str, Path], extra: dict[str, bytes] | None = None, chunk_delay_s: float = 0.0):
        self.repos = {}
        for repo, folder in repos.items():
            files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
                     if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}
            files.update(extra or {})
            sha = hashlib.sha1(repo.encode() + b"".join(_blob(d).encode() for d in files.values())).hexdigest()
            self.repos[repo] = (sha, files)
        self.chunk_delay_s = chunk_delay_s
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                hub._answer(self, body=True)

            def do_HEAD(self):  # noqa: N802
                hub._answer(self, body=False)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def size(self, repo: str, pattern: re.Pattern | None = None) -> int:
        return sum(len(data) for name, data in self.repos[repo][1].items() if pattern is None or pattern.search(name))

    def _answer(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(request.path).path)
        with self._lock:
            self.requests.append((request.command, path))
        if match := INFO.match(path):
            self._info(request, match["repo"])
        elif match := TREE.match(path):
            self._tree(request, match["repo"])
        elif match := RESOLVE.match(path):
            self._file(request, match["repo"], match["path"], body)
        else:
            self._send(request, 404, b'{"error": "not found"}', {"Content-Type": "application/json"})

    def _repo(self, request, repo):
        if repo not in self.repos:
            self._send(request, 404, b'{"error": "Repository not found"}',
                       {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"})
            return None
        return self.repos[repo]

    def _info(self, request, repo):
        if (found := self._repo(request, repo)) is None:
            return
        sha, files = found
        siblings = [{"rfilename": name, "size": len(data), "blobId": _blob(data)} for name, data in files.items()]
        self._json(request, {"id": repo, "modelId": repo, "sha": sha, "private": False, "siblings": siblings})

    def _tree(self, request, repo):
        if (found := self._repo(request, repo)) is None:
            return
        self._json(request, [{"type": "file", "path": name, "size": len(data), "oid": _blob(data)}
                             for name, data in found[1].items()])

    def _file(self, request, repo, name, body):
        if (found := self._repo(request, repo)) is None:
            return
        sha, files = found
        if name not in files:
            self._send(request, 404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
            return
        data = files[name]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{_blob(data)}"', "Content-Type": "application/octet-stream"}
        request.send_response(200)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            request.send_header(key, value)
        request.end_headers()
        if body:
            for start in range(0, len(data), CHUNK):
                request.wfile.write(data[start:start + CHUNK])
                request.wfile.flush()
                time.sleep(self.chunk_delay_s)

    def _json(self, request, value):
        self._send(request, 200, json.dumps(value).encode(), {"Content-Type": "application/json"})

    @staticmethod
    def _send(request, status, data, headers):
        request.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            request.send_header(key, value)
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)


def _blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


class Blackhole:
    """A loopback port that accepts connections and never sends a byte."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self._closed = False

    def __enter__(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)  # kept open, never answered

    def __exit__(self, *exc):
        self._closed = True
        self.sock.close()
        for conn in self.held:
            conn.close()


def main(argv: list[str]) -> None:
    if argv[:1] == ["blackhole"]:
        server = Blackhole()
    else:
        delay = 0.0
        if "--chunk-delay" in argv:
            at = argv.index("--chunk-delay")
            delay = float(argv[at + 1])
            argv = argv[:at] + argv[at + 2:]
        repos = dict(arg.split("=", 1) for arg in argv[1:])
        server = FakeHub({repo: Path(folder) for repo, folder in repos.items()},
                         extra={"README.md": b"# a fake repo\n"}, chunk_delay_s=delay)
    with server:
        print(server.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
