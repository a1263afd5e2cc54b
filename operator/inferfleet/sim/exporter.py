"""Serve a metrics registry in the Prometheus text format (0.0.4), whatever the scraper asks for.

prometheus-client >= 0.22 answers an OpenMetrics request from Prometheus 2.x with metric names
escaped (`vllm:num_requests_waiting` becomes `vllm_num_requests_waiting`). Engines' queue metrics
carry colons, and the operator's queries must see the names engines document, so the simulated
engines always answer in the text format, which keeps them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest

TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class TextExporter:
    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def start_text_exporter(registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0) -> TextExporter:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", TEXT_FORMAT)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="text-exporter", daemon=True)
    thread.start()
    return TextExporter(server, thread)
