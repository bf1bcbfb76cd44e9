"""Benchmark harness: seed_baseline vs the pipeline in local mode vs a passthrough pipeline.

python -m bench.run --n 20000 --keys 500 --latency_ms 10 --sql_latency_ms 20 --repeats 3 \
    --out bench/results

Every contender run gets its own loopback services (the sample config service with
``--latency_ms`` per request, the HS2 server with ``--sql_latency_ms`` per statement over a
fresh SQLite file), started as subprocesses that count what they serve. Contenders are
alternated within each repeat; the figure of each is the median of its repeats. Every run's
outputs are verified against the expected state (the seed's loop run over the catalogue and
in-memory tables) before any figure is reported; a difference fails the run loudly.

Figures: ``latest.csv`` (one row per contender), ``sweep.csv`` (the pipeline against
batch size, shards and REST concurrency), ``runs.json`` (every run), ``throughput.png``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import workload as workload_module
from bench.measure import run_measured
from bench.seed_baseline import expected_outputs
from bench.verify import State, compare, state_from_memory, state_from_run, verify_passthrough

ROOT = Path(__file__).resolve().parents[1]
CSV_COLUMNS = ('contender', 'messages', 'seconds', 'messages_per_s', 'ratio_to_seed',
               'ratio_to_passthrough', 'rest_per_1000', 'sql_per_1000', 'p50_ms', 'p99_ms',
               'peak_rss_mb')
MODES = {
    'in_memory': [],
    'multi_processing': ['--direct_num_workers', '2', '--direct_running_mode',
                         'multi_processing'],
    'multi_threading': ['--direct_num_workers', '2', '--direct_running_mode',
                        'multi_threading'],
}


class BenchError(RuntimeError):
    """A contender failed to run."""


@dataclasses.dataclass
class Run:
    contender: str
    messages: int
    seconds: float
    peak_rss_mb: float
    rest_requests: int | None = None
    sql_statements: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    settings: dict = dataclasses.field(default_factory=dict)
    verified: bool = False

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds

    def per_1000(self, count: int | None) -> float | None:
        return None if count is None else count * 1000.0 / self.messages


class Services:
    """The config service and the HS2 server for one contender run, as subprocesses."""

    def __init__(self, run_dir: Path, catalogue: str, latency_ms: float, sql_latency_ms: float):
        self.run_dir = run_dir
        self.database = str(run_dir / 'warehouse.db')
        self._specs = {
            'config': ['config', '--catalogue', catalogue, '--latency_ms', str(latency_ms)],
            'hs2': ['hs2', '--database', self.database, '--latency_ms', str(sql_latency_ms)],
        }
        self._processes: dict[str, subprocess.Popen] = {}
        self.addresses: dict[str, str] = {}
        self.stats: dict = {}

    def __enter__(self) -> Services:
        try:
            for name, spec in self._specs.items():
                process = subprocess.Popen(
                    [sys.executable, '-m', 'bench.services', *spec,
                     '--stats_out', str(self.run_dir / f'{name}.stats.json')],
                    cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
                self._processes[name] = process
                line = process.stdout.readline()
                match = re.match(r'listening on (\S+)', line)
                if not match:
                    raise BenchError(f'{name} service did not start: {line!r}')
                self.addresses[name] = match.group(1)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in self._processes.items():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            stats_path = self.run_dir / f'{name}.stats.json'
            if stats_path.exists():
                self.stats.update(json.loads(stats_path.read_text()))
        self._processes.clear()

    @property
    def config_url(self) -> str:
        return f'http://{self.addresses["config"]}'

    @property
    def warehouse_url(self) -> str:
        return f'impala://{self.addresses["hs2"]}/default'


def _env() -> dict:
    env = dict(os.environ)
    env['PYTHONPATH'] = str(ROOT) + (os.pathsep + env['PYTHONPATH']
                                     if env.get('PYTHONPATH') else '')
    return env


def _check(measured, label: str) -> None:
    if measured.returncode != 0:
        raise BenchError(f'{label} exited with {measured.returncode}:\n'
                         f'{measured.stdout[-2000:]}\n{measured.stderr[-4000:]}')


class Harness:
    def __init__(self, args, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.counter = 0
        self.runs: list[Run] = []
        self.expected: dict[str, State] = {}

    def run_dir(self, label: str) -> Path:
        self.counter += 1
        path = self.workdir / f'{self.counter:03d}-{label}'
        path.mkdir(parents=True)
        return path

    def expect(self, messages_path: str, catalogue_path: str) -> State:
        if messages_path not in self.expected:
            tables, jobs, dead = expected_outputs(
                messages_path, catalogue_path, job_namespace=workload_module.JOB_NAMESPACE,
                job_image=workload_module.JOB_IMAGE,
                max_message_bytes=workload_module.MAX_MESSAGE_BYTES)
            self.expected[messages_path] = state_from_memory(tables, jobs, dead)
        return self.expected[messages_path]

    def _record(self, run: Run) -> Run:
        run.verified = True
        self.runs.append(run)
        rest = '' if run.rest_requests is None else f' rest={run.rest_requests}'
        sql = '' if run.sql_statements is None else f' sql={run.sql_statements}'
        print(f'  {run.contender:<34} {run.messages:>7} msgs {run.seconds:8.2f} s '
              f'{run.messages_per_s:9.1f} msg/s rss={run.peak_rss_mb:7.1f} MB{rest}{sql} '
              '[verified]', flush=True)
        return run

    def seed(self, messages_path: str, catalogue_path: str, messages: int) -> tuple[Run, State]:
        directory = self.run_dir('seed')
        jobs, dead, stats_path = directory / 'jobs.jsonl', directory / 'dead.jsonl', \
            directory / 'seed.stats.json'
        with Services(directory, catalogue_path, self.args.latency_ms,
                      self.args.sql_latency_ms) as services:
            measured = run_measured([
                sys.executable, '-m', 'bench.seed_baseline', '--input', messages_path,
                '--tsc_config_url', services.config_url, '--warehouse', services.warehouse_url,
                '--jobs_out', str(jobs), '--dead_letter_out', str(dead),
                '--stats_out', str(stats_path), '--job_image', workload_module.JOB_IMAGE,
                '--job_namespace', workload_module.JOB_NAMESPACE,
                '--max_message_bytes', str(workload_module.MAX_MESSAGE_BYTES)],
                cwd=str(ROOT), env=_env())
        _check(measured, 'seed_baseline')
        stats = json.loads(stats_path.read_text())
        actual = state_from_run(services.database, str(jobs), str(dead))
        compare(self.expect(messages_path, catalogue_path), actual, 'seed_baseline', messages)
        return self._record(Run(
            'seed_baseline', messages, measured.seconds, measured.peak_rss_mb,
            services.stats.get('rest_requests'), services.stats.get('sql_statements'),
            stats['p50_ms'], stats['p99_ms'], {'loop_seconds': stats['loop_seconds']})), actual

    def pipeline(self, messages_path: str, catalogue_path: str, messages: int, mode: str,
                 contender: str | None = None, **flags) -> tuple[Run, State]:
        directory = self.run_dir('pipeline')
        jobs, dead = directory / 'jobs.jsonl', directory / 'dead.jsonl'
        extra = [item for name, value in flags.items() for item in (f'--{name}', str(value))]
        with Services(directory, catalogue_path, self.args.latency_ms,
                      self.args.sql_latency_ms) as services:
            measured = run_measured([
                sys.executable, str(ROOT / 'run_pipeline.py'), '--input', messages_path,
                '--tsc_config_url', services.config_url, '--warehouse', services.warehouse_url,
                '--jobs_out', str(jobs), '--dead_letter_out', str(dead),
                '--job_image', workload_module.JOB_IMAGE,
                '--job_namespace', workload_module.JOB_NAMESPACE,
                '--max_message_bytes', str(workload_module.MAX_MESSAGE_BYTES),
                '--log_level', self.args.log_level, *MODES[mode], *extra],
                cwd=str(ROOT), env=_env())
        label = contender or f'pipeline_local[{mode}]'
        _check(measured, label)
        summary = _summary_counts(measured.stdout)
        if services.stats.get('sql_failed'):
            raise BenchError(f'{label}: {services.stats["sql_failed"]} SQL statements failed: '
                             f'{services.stats.get("sql_errors")}')
        actual = state_from_run(services.database, str(jobs), str(dead))
        compare(self.expect(messages_path, catalogue_path), actual, label, messages)
        return self._record(Run(
            label, messages, measured.seconds, measured.peak_rss_mb,
            services.stats.get('rest_requests'), services.stats.get('sql_statements'),
            settings={'mode': mode, **flags, 'summary': summary,
                      'sql_by_verb': services.stats.get('sql_by_verb')})), actual

    def passthrough(self, messages_path: str, messages: int, mode: str) -> Run:
        directory = self.run_dir('passthrough')
        output = directory / 'out.jsonl'
        measured = run_measured([
            sys.executable, '-m', 'bench.passthrough', '--input', messages_path,
            '--output', str(output), *MODES[mode]], cwd=str(ROOT), env=_env())
        label = f'passthrough[{mode}]'
        _check(measured, label)
        verify_passthrough(messages_path, str(output), label)
        return self._record(Run(label, messages, measured.seconds, measured.peak_rss_mb, 0, 0,
                                settings={'mode': mode}))


def _summary_counts(stdout: str) -> dict:
    counts = {}
    for name, key in (('REST requests', 'rest_requests'), ('SQL statements', 'sql_statements'),
                      ('records read', 'read'), ('processed', 'processed')):
        match = re.search(rf'^{name}:\s+(\d+)', stdout, re.M)
        if match:
            counts[key] = int(match.group(1))
    return counts


def _median_run(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda run: run.seconds)
    median = dataclasses.replace(ordered[len(ordered) // 2])
    median.seconds = statistics.median(run.seconds for run in runs)
    median.peak_rss_mb = max(run.peak_rss_mb for run in runs)
    return median


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return ''
    if isinstance(value, float):
        return f'{value:.{digits}f}'
    return str(value)


def _rows(contenders: list[tuple[str, Run]], seed: Run, passthrough: Run) -> list[dict]:
    rows = []
    for name, run in contenders:
        rows.append({
            'contender': name, 'messages': run.messages, 'seconds': _fmt(run.seconds, 2),
            'messages_per_s': _fmt(run.messages_per_s, 1),
            'ratio_to_seed': _fmt(run.messages_per_s / seed.messages_per_s, 1),
            'ratio_to_passthrough': _fmt(run.messages_per_s / passthrough.messages_per_s, 3),
            'rest_per_1000': _fmt(run.per_1000(run.rest_requests), 1),
            'sql_per_1000': _fmt(run.per_1000(run.sql_statements), 2),
            'p50_ms': _fmt(run.p50_ms, 1), 'p99_ms': _fmt(run.p99_ms, 1),
            'peak_rss_mb': _fmt(run.peak_rss_mb, 1)})
    return rows


def _print_table(rows: list[dict]) -> None:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in CSV_COLUMNS}
    print('  '.join(c.ljust(widths[c]) for c in CSV_COLUMNS))
    for row in rows:
        print('  '.join(str(row[c]).ljust(widths[c]) for c in CSV_COLUMNS))


def _write_csv(path: Path, columns, rows) -> None:
    with open(path, 'w', newline='', encoding='utf-8') as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def _plot(path: Path, sweep: list[Run], seed: Run, passthrough: Run, pipeline: Run,
          args) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    by_batch = sorted((r for r in sweep if set(r.settings) & {'batch_size'}
                       and 'num_shards' not in r.settings
                       and 'tsc_config_concurrency' not in r.settings),
                      key=lambda r: r.settings['batch_size'])
    if by_batch:
        sizes = [r.settings['batch_size'] for r in by_batch]
        left.plot(sizes, [r.messages_per_s for r in by_batch], 'o-',
                  label=f'pipeline local ({pipeline.settings.get("mode")})')
        right.plot(sizes, [r.per_1000(r.rest_requests) for r in by_batch], 'o-',
                   label='REST requests / 1000 msgs')
        right.plot(sizes, [r.per_1000(r.sql_statements) for r in by_batch], 's-',
                   label='SQL statements / 1000 msgs')
    left.axhline(passthrough.messages_per_s, color='green', linestyle='--',
                 label=f'passthrough ({passthrough.messages_per_s:.0f} msg/s)')
    left.axhline(seed.messages_per_s, color='red', linestyle=':',
                 label=f'seed_baseline ({seed.messages_per_s:.1f} msg/s, '
                       f'{seed.messages} msgs)')
    for axis in (left, right):
        axis.set_xscale('log')
        axis.set_yscale('log')
        axis.set_xlabel('--batch_size')
        axis.grid(True, which='both', alpha=0.3)
        axis.legend(fontsize=8)
    left.set_ylabel('messages / s')
    left.set_title(f'Throughput, N={args.n}, K={args.keys}, REST {args.latency_ms:g} ms, '
                   f'SQL {args.sql_latency_ms:g} ms', fontsize=9)
    right.set_title('Calls to the services per 1,000 messages', fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(',') if part.strip()]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add('--n', type=int, default=20000, help='Messages (default 20000).')
    add('--keys', type=int, default=500, help='Distinct (customerId, tscId) keys (default 500).')
    add('--seed', type=int, default=7, help='Workload random seed (default 7).')
    add('--latency_ms', type=float, default=10.0, help='Config service latency (default 10).')
    add('--sql_latency_ms', type=float, default=20.0, help='Per-statement latency (default 20).')
    add('--repeats', type=int, default=3, help='Runs per contender; the median counts.')
    add('--seed_messages', type=int, default=1000,
        help='seed_baseline runs on the first min(N, this) messages (default 1000).')
    add('--modes', default='in_memory,multi_processing',
        help='DirectRunner (FnApiRunner) modes to run the pipeline and passthrough in.')
    add('--sweep_batch_sizes', default='100,500,2000,5000',
        help='--batch_size values to sweep (one run each; empty to skip).')
    add('--sweep_num_shards', default='2,32', help='--num_shards values to sweep.')
    add('--sweep_concurrency', default='4,64', help='--tsc_config_concurrency values to sweep.')
    add('--rss_scale', type=int, default=10,
        help='Also run the pipeline at this many times N for memory (0 to skip).')
    add('--log_level', default='WARNING', help='Pipeline --log_level (default WARNING).')
    add('--out', default='bench/results', help='Where latest.csv and the plot go.')
    add('--workdir', default=None, help='Scratch directory (default a temporary one, removed).')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modes = [m for m in args.modes.split(',') if m]
    unknown = set(modes) - set(MODES)
    if unknown or not modes:
        raise SystemExit(f'--modes: unknown {sorted(unknown)}; choose from {sorted(MODES)}')
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix='tsc-bench-'))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _bench(args, modes, out, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _bench(args, modes: list[str], out: Path, workdir: Path) -> int:
    started = time.time()
    harness = Harness(args, workdir)
    full = workload_module.generate(str(workdir / 'workload'), args.n, args.keys, args.seed)
    seed_n = min(args.n, args.seed_messages)
    subset_dir = workdir / 'subset'
    subset_dir.mkdir()
    subset_path = str(subset_dir / 'messages.jsonl')
    with open(full.messages_path, 'rb') as source, open(subset_path, 'wb') as target:
        for _, line in zip(range(seed_n), source, strict=False):
            target.write(line)
    catalogue = full.catalogue_path
    print(f'workload: {full.messages} messages ({full.poison} poison) over {full.keys} keys; '
          f'seed_baseline on the first {seed_n}; REST {args.latency_ms:g} ms, '
          f'SQL {args.sql_latency_ms:g} ms; workdir {workdir}', flush=True)
    expected = harness.expect(full.messages_path, catalogue)
    print(f'expected state: {expected.summary()}', flush=True)

    # The seed and the pipeline on the same subset must agree with each other, not only
    # with the expected state.
    print('cross-check on the seed subset:', flush=True)
    seed_run, seed_state = harness.seed(subset_path, catalogue, seed_n)
    seed_runs = [seed_run]
    _, pipeline_state = harness.pipeline(subset_path, catalogue, seed_n, modes[0],
                                         contender='pipeline_local[subset]')
    compare(seed_state, pipeline_state, 'pipeline vs seed_baseline on the same messages')

    pipeline_runs: dict[str, list[Run]] = {mode: [] for mode in modes}
    passthrough_runs: dict[str, list[Run]] = {mode: [] for mode in modes}
    for repeat in range(1, args.repeats + 1):
        print(f'repeat {repeat}/{args.repeats}:', flush=True)
        if repeat > 1:
            seed_runs.append(harness.seed(subset_path, catalogue, seed_n)[0])
        for mode in modes:
            pipeline_runs[mode].append(
                harness.pipeline(full.messages_path, catalogue, full.messages, mode)[0])
            passthrough_runs[mode].append(
                harness.passthrough(full.messages_path, full.messages, mode))

    seed = _median_run(seed_runs)
    pipelines = {mode: _median_run(runs) for mode, runs in pipeline_runs.items()}
    passthroughs = {mode: _median_run(runs) for mode, runs in passthrough_runs.items()}
    best_mode = max(pipelines, key=lambda mode: pipelines[mode].messages_per_s)
    best = pipelines[best_mode]
    ceiling = max(passthroughs.values(), key=lambda run: run.messages_per_s)

    sweep: list[Run] = []
    sweeps = [('batch_size', _ints(args.sweep_batch_sizes)),
              ('num_shards', _ints(args.sweep_num_shards)),
              ('tsc_config_concurrency', _ints(args.sweep_concurrency))]
    if any(values for _, values in sweeps):
        print(f'sweep ({best_mode}, one run each):', flush=True)
    for name, values in sweeps:
        for value in values:
            run, _ = harness.pipeline(full.messages_path, catalogue, full.messages, best_mode,
                                      contender=f'pipeline[{name}={value}]', **{name: value})
            sweep.append(run)

    scaled = None
    if args.rss_scale > 1:
        print(f'memory at {args.rss_scale}xN ({best_mode}):', flush=True)
        big = workload_module.generate(str(workdir / 'workload-scaled'), args.n * args.rss_scale,
                                       args.keys, args.seed)
        scaled, _ = harness.pipeline(big.messages_path, big.catalogue_path, big.messages,
                                     best_mode, contender=f'pipeline_local@{args.rss_scale}xN')

    contenders = [('seed_baseline', seed), ('pipeline_local', best)]
    contenders += [(f'pipeline_local[{mode}]', run) for mode, run in pipelines.items()]
    contenders += [('passthrough', ceiling)]
    contenders += [(f'passthrough[{mode}]', run) for mode, run in passthroughs.items()]
    if scaled is not None:
        contenders.append((f'pipeline_local@{args.rss_scale}xN', scaled))
    rows = _rows(contenders, seed, ceiling)
    _write_csv(out / 'latest.csv', CSV_COLUMNS, rows)
    sweep_columns = ('setting', 'value', 'messages', 'seconds', 'messages_per_s',
                     'rest_per_1000', 'sql_per_1000', 'peak_rss_mb')
    _write_csv(out / 'sweep.csv', sweep_columns, [{
        'setting': next(k for k in ('batch_size', 'num_shards', 'tsc_config_concurrency')
                        if k in r.settings),
        'value': next(r.settings[k] for k in ('batch_size', 'num_shards',
                                               'tsc_config_concurrency') if k in r.settings),
        'messages': r.messages, 'seconds': _fmt(r.seconds, 2),
        'messages_per_s': _fmt(r.messages_per_s, 1),
        'rest_per_1000': _fmt(r.per_1000(r.rest_requests), 1),
        'sql_per_1000': _fmt(r.per_1000(r.sql_statements), 2),
        'peak_rss_mb': _fmt(r.peak_rss_mb, 1)} for r in sweep])
    with open(out / 'runs.json', 'w', encoding='utf-8') as handle:
        json.dump({'args': vars(args), 'headline_mode': best_mode,
                   'runs': [dataclasses.asdict(run) for run in harness.runs]}, handle, indent=1)
    try:
        _plot(out / 'throughput.png', sweep, seed, ceiling, best, args)
    except ImportError:
        print('matplotlib is not installed (pip install -r requirements-bench.txt, or '
              '`make bench`): no throughput.png this time')

    print()
    _print_table(rows)
    print(f'\nseed_baseline ran on the first {seed.messages} messages '
          f'(at ~{seed.messages_per_s:.0f} msg/s the full {args.n} would take '
          f'~{args.n / seed.messages_per_s / 60:.0f} min); '
          f'the others on all {args.n}. p50/p99: seed per-message time from parse to archive '
          'row; empty for batch runs (no per-message latency in a bounded local run).')
    print(f'headline pipeline mode: {best_mode}; seconds are wall-clock of the whole process '
          '(interpreter and Beam start-up included); peak_rss_mb sums the process tree.')
    if sweep:
        print('sweep:', ', '.join(f'{r.contender} {r.messages_per_s:.0f} msg/s '
                                  f'rest/1000={r.per_1000(r.rest_requests):.0f} '
                                  f'sql/1000={r.per_1000(r.sql_statements):.1f}' for r in sweep))
    if scaled is not None:
        print(f'memory: peak RSS {best.peak_rss_mb:.0f} MB at N={args.n}, '
              f'{scaled.peak_rss_mb:.0f} MB at {args.rss_scale}xN '
              f'({scaled.peak_rss_mb / best.peak_rss_mb:.2f}x)')
    print(f'all outputs verified ({len(harness.runs)} runs); results in {out} '
          f'({time.time() - started:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
