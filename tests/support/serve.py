"""A static HTTP server on 127.0.0.1, started and stopped by a test (no network)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from pathlib import Path
from typing import Iterator


class _Server:
    """A static file server on 127.0.0.1 for one test module; ``swap`` makes a path answer other bytes
    from its second request on (a source that changes under a running build)."""

    def __init__(self, root: Path):
        self.root = root
        self.swap: dict[str, bytes] = {}
        self.requests: dict[str, int] = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=str(root), **k)

            def do_GET(self):
                path = self.path.split("?")[0]
                server.requests[path] = server.requests.get(path, 0) + 1
                if path in server.swap and server.requests[path] > 1:
                    body = server.swap[path]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"


@contextlib.contextmanager
def serve(root: Path) -> Iterator[_Server]:
    """Serve the files under ``root`` for the length of the block."""
    server = _Server(root)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
