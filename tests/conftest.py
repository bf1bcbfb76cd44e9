"""Fixtures shared by the test modules."""

from __future__ import annotations

import threading

import pytest

from pipeline.sample_config_server import ConfigServer


@pytest.fixture()
def serve_configs():
    """Serves a {(customerId, tscId): config} catalogue on loopback; returns its base URL."""
    servers = []

    def serve(catalogue: dict) -> str:
        server = ConfigServer(('127.0.0.1', 0), catalogue)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f'http://127.0.0.1:{server.server_address[1]}'

    try:
        yield serve
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
