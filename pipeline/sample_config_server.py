"""Sample TSC configuration service: serves a JSON catalogue over HTTP on loopback.

python -m pipeline.sample_config_server --catalogue examples/tsc_configs.json --port 8080
prints ``listening on HOST:PORT`` first, then serves until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.server
import json
import signal
import sys
import threading
import time
import urllib.parse
from typing import Any

PATH_PREFIX = '/customers/'


def load_catalogue(path: str) -> dict[tuple[str, str], Any]:
    """Reads a list of configuration objects, indexed by (customerId, tscId)."""
    with open(path, encoding='utf-8') as handle:
        entries = json.load(handle)
    if not isinstance(entries, list):
        raise ValueError(f'{path}: the catalogue must be a JSON list of configurations')
    return {(entry['customerId'], entry['tscId']): entry for entry in entries}


def _lookup_key(path: str) -> tuple[str, str] | None:
    # /customers/{customerId}/tscs/{tscId}/configuration, each id one encoded segment.
    parts = urllib.parse.urlsplit(path).path.split('/')
    if len(parts) != 6 or parts[1] != 'customers' or parts[3] != 'tscs' \
            or parts[5] != 'configuration':
        return None
    return urllib.parse.unquote(parts[2]), urllib.parse.unquote(parts[4])


class ConfigServer(http.server.ThreadingHTTPServer):
    """A threaded HTTP server over a catalogue, with an optional latency per request."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], catalogue: dict[tuple[str, str], Any],
                 latency_ms: float = 0.0):
        super().__init__(address, _Handler)
        self.catalogue = catalogue
        self.latency_ms = latency_ms
        self.requests_served = 0
        self._lock = threading.Lock()

    def count(self) -> None:
        with self._lock:
            self.requests_served += 1


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    # Headers and body go out in two writes; with Nagle on, each keep-alive reply then
    # waits for the client's delayed ACK (about 40 ms).
    disable_nagle_algorithm = True
    server: ConfigServer

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.count()
        if self.server.latency_ms:
            time.sleep(self.server.latency_ms / 1000.0)
        key = _lookup_key(self.path)
        config = self.server.catalogue.get(key) if key else None
        if config is None:
            self._send(404, {'error': 'not found'})
        else:
            self._send(200, config)

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode('utf-8')
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.1', help='Address to bind (default loopback).')
    parser.add_argument('--port', type=int, default=8080, help='Port; 0 picks a free one.')
    parser.add_argument('--catalogue', default='examples/tsc_configs.json',
                        help='JSON list of configurations to serve.')
    parser.add_argument('--latency_ms', type=float, default=0.0,
                        help='Latency added to every request (default 0).')
    args = parser.parse_args(argv)
    server = ConfigServer((args.host, args.port), load_catalogue(args.catalogue), args.latency_ms)
    host, port = server.server_address[:2]
    print(f'listening on {host}:{port}', flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
