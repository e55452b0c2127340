"""Prometheus metrics over the REST port (text format), as TF Serving's monitoring config asks."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from recflow.serving.server.manager import ModelManager


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _metrics_text(manager: ModelManager) -> str:
    return manager.metrics.text(manager.snapshot())


def start_metrics(manager: ModelManager, host: str, port: int, path: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            found = self.path.split("?")[0] == path
            body = (_metrics_text(manager) if found else f"only {path} is served here\n").encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet access log
            return

    server_class = ThreadingHTTPServer
    if ":" in host:  # an IPv6 address

        class _V6(ThreadingHTTPServer):
            address_family = socket.AF_INET6

        server_class = _V6
    httpd = server_class((host, port), Handler)
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    return httpd
