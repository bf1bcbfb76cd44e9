"""Entry point of the TSC orchestrator: python run_pipeline.py --help."""

import argparse
import sys

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.launcher import run
from pipeline.logger import setup_logger
from pipeline.options import OrchestratorOptions


def main(argv: list[str]) -> int:
    if '--help' in argv or '-h' in argv:
        parser = argparse.ArgumentParser(
            description='TSC orchestrator: a Beam pipeline. Beam runner flags (--runner, '
                        '--direct_num_workers, …) are accepted too.')
        OrchestratorOptions._add_argparse_args(parser)
        parser.print_help()
        return 0
    options = PipelineOptions(argv)
    try:
        setup_logger(options.view_as(OrchestratorOptions).log_level)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return run(options)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
