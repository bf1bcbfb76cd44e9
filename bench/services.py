"""The benchmark's loopback services, each run as its own process, counting what they serve.

python -m bench.services config --catalogue PATH --latency_ms 10 --stats_out STATS.json
python -m bench.services hs2 --database PATH --latency_ms 20 --stats_out STATS.json

Each prints ``listening on HOST:PORT`` once ready and, on SIGTERM, writes its counters to
``--stats_out`` (requests served; SQL statements received, by verb, and failed ones) and
exits. The HS2 service creates both warehouse tables before it reports ready and does not
count those DDL statements.
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import sys
import threading

from pipeline.sample_config_server import ConfigServer, load_catalogue
from testing.hs2_server import HS2Server
from transforms.impala_writer import ImpalaWriter


def _wait_for_sigterm() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass


def _write_stats(path: str, stats: dict) -> None:
    with open(path, 'w', encoding='utf-8') as handle:
        json.dump(stats, handle)


def serve_config(args) -> int:
    server = ConfigServer(('127.0.0.1', 0), load_catalogue(args.catalogue), args.latency_ms)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f'listening on 127.0.0.1:{server.server_address[1]}', flush=True)
    _wait_for_sigterm()
    server.shutdown()
    server.server_close()
    _write_stats(args.stats_out, {'rest_requests': server.requests_served})
    return 0


def serve_hs2(args) -> int:
    server = HS2Server(args.database, host='127.0.0.1', port=0, latency_ms=0).start()
    writer = ImpalaWriter.from_url(f'impala://127.0.0.1:{server.port}/default')
    try:
        writer.create_tables()
    finally:
        writer.close()
    server.clear_statements()
    server.set_latency_ms(args.latency_ms)
    print(f'listening on 127.0.0.1:{server.port}', flush=True)
    _wait_for_sigterm()
    statements = server.statements
    server.stop()
    verbs = collections.Counter((s.statement.split(None, 1) or [''])[0].upper()
                                for s in statements)
    _write_stats(args.stats_out, {
        'sql_statements': len(statements),
        'sql_failed': sum(1 for s in statements if not s.success),
        'sql_by_verb': dict(verbs),
        'sql_errors': sorted({s.error for s in statements if s.error})[:5],
    })
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='service', required=True)
    config = sub.add_parser('config', help='the sample TSC configuration service')
    config.add_argument('--catalogue', required=True)
    config.add_argument('--latency_ms', type=float, default=0.0)
    config.add_argument('--stats_out', required=True)
    hs2 = sub.add_parser('hs2', help='the loopback HiveServer2 (Impala) server')
    hs2.add_argument('--database', required=True)
    hs2.add_argument('--latency_ms', type=float, default=0.0)
    hs2.add_argument('--stats_out', required=True)
    args = parser.parse_args(argv)
    return serve_config(args) if args.service == 'config' else serve_hs2(args)


if __name__ == '__main__':
    sys.exit(main())
