"""Passthrough: the pipeline's source and sink with no stage between them, on the same runner.

python -m bench.passthrough --input messages.jsonl --output out.jsonl [Beam runner flags]

ReadMessageFile (the same source the orchestrator uses)
→ each SourceRecord as a KafkaRecord → WriteRecordsJsonl (the orchestrator's sink): the
ceiling of the runner itself on this machine.
"""

from __future__ import annotations

import argparse
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.launcher import LOCAL_RUNNER
from transforms.local_io import ReadMessageFile, WriteRecordsJsonl
from transforms.records import KafkaRecord


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--input', required=True)
    parser.add_argument('--output', required=True)
    args, beam_args = parser.parse_known_args(argv)
    options = PipelineOptions(beam_args)
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = LOCAL_RUNNER
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | 'ReadMessageFile' >> ReadMessageFile(args.input)
             | 'AsRecord' >> beam.Map(lambda r: KafkaRecord(key=r.key, value=r.value))
             | 'Write' >> WriteRecordsJsonl(args.output))
    return 0


if __name__ == '__main__':
    sys.exit(main())
