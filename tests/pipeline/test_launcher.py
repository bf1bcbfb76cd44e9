"""The launcher's choices: checkpointing on streaming runners, summaries, configuration errors."""

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.launcher import run, summary, with_checkpointing
from pipeline.options import OrchestratorOptions


def test_streaming_runs_get_checkpointing_unless_given():
    options = PipelineOptions(['--runner=FlinkRunner', '--flink_master=jm:8081',
                               '--bootstrap_servers=k:9092', '--kafka_config=a=b',
                               '--kafka_config=c=d'])
    checked = with_checkpointing(options)
    every = checked.get_all_options(retain_unknown_options=True)
    assert int(every['checkpointing_interval']) == 10_000  # unknown options come back as text
    assert every['flink_master'] == 'jm:8081'  # an option Beam's SDK does not parse either
    assert checked.view_as(StandardOptions).runner == 'FlinkRunner'
    assert checked.view_as(OrchestratorOptions).bootstrap_servers == 'k:9092'
    assert checked.view_as(OrchestratorOptions).kafka_config == ['a=b', 'c=d']

    given = PipelineOptions(['--checkpointing_interval=5000'])
    assert with_checkpointing(given).get_all_options(
        retain_unknown_options=True)['checkpointing_interval'] in ('5000', 5000)


def test_summary_counts_dead_letters_by_stage():
    text = summary({'read': 10, 'archived': 7, 'jobs': 5, 'dead_letters_parse': 2,
                    'dead_letters_enrich': 1, 'rest_requests': 4, 'sql_statements': 3})
    assert 'records read:      10' in text
    assert 'processed:         7' in text
    assert 'dead letters:      3 (parse=2, enrich=1)' in text


def test_local_runner_refuses_an_unbounded_kafka_read(capsys):
    code = run(PipelineOptions(['--bootstrap_servers=127.0.0.1:1',
                                '--kafka_expansion_service=localhost:1',
                                '--tsc_config_url=http://127.0.0.1:1', '--job_image=x']))
    assert code == 2
    assert 'reads Kafka only bounded' in capsys.readouterr().out


def test_create_tables_reports_an_unusable_warehouse(capsys):
    code = run(PipelineOptions(['--create_tables', '--warehouse=postgres://x']))
    assert code == 2
    assert 'cannot create the tables' in capsys.readouterr().out
