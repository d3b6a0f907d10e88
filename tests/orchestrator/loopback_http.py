"""A tiny HTTP server on 127.0.0.1 standing in for a tracking server's network behaviour.

It answers ``/health`` (what ``tracking.answers`` probes), records the other paths it served,
answers GET ``/refuse...`` with 404, ``/busy...`` with 503 and ``/flaky...`` with 503 the first
time; POST with MLflow's error JSON (400 INVALID_PARAMETER_VALUE). With ``drop_api=True`` it
answers MLflow's ``experiments/search`` (so ``tracking.connect`` passes) and drops the
connection of every other ``/api/`` request, as a server dying mid-command does.
"""

from __future__ import annotations

import http.server
import threading

from tests.cluster.cluster_harness import free_port


class Server:
    """A tiny HTTP server on 127.0.0.1 that records the paths it served; stop() and start()."""

    def __init__(self, drop_api: bool = False) -> None:
        self.port, self.drop_api = free_port(), drop_api
        self.paths: list[str] = []
        self.httpd: http.server.ThreadingHTTPServer | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        served, drop_api = self.paths, self.drop_api

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if drop_api and self.path.startswith("/api/"):
                    self._search_or_drop()
                    return
                if self.path != "/health":
                    served.append(self.path)
                busy = self.path.startswith("/busy") or (
                    self.path.startswith("/flaky") and served.count(self.path) == 1
                )
                status = 503 if busy else 404 if self.path.startswith("/refuse") else 200
                self.send_response(status)
                self.end_headers()

            def _search_or_drop(self) -> None:
                if "/experiments/search" in self.path:
                    self._json(200, b'{"experiments": []}')
                else:
                    self.close_connection = True  # no status line: RemoteDisconnected

            def _json(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # MLflow's REST API, refusing every call
                if drop_api:
                    self._search_or_drop()
                    return
                self._json(400, b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}')

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self.httpd is not None
        self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.httpd is not None:  # a test may have stopped it already
            self.stop()
