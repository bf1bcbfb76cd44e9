"""Tests for transforms.cronjob_builder: frequencies, names, manifests and job records."""

from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest
import yaml
from croniter import croniter

from transforms.cronjob_builder import (
    CronFormatError,
    create_job,
    cronjob_name,
    frequency_to_cron,
    generate_cronjob_manifest,
    generate_delete_manifest,
)
from transforms.records import KafkaRecord

K8S_VERSION = '1.33'

ACCEPTED = [
    # 5-field cron, normalized.
    ('* * * * *', '* * * * *'),
    ('0 0 * * *', '0 0 * * *'),
    ('  5   4  *  *  *  ', '5 4 * * *'),
    ('\t*/15 * * * *\n', '*/15 * * * *'),
    ('0 9-17 * * 1-5', '0 9-17 * * 1-5'),
    ('0,15,30,45 * * * *', '0,15,30,45 * * * *'),
    ('0 0-23/2 * * *', '0 0-23/2 * * *'),
    ('5/15 * * * *', '5-59/15 * * * *'),
    ('*/1 * * * *', '* * * * *'),
    ('0 0 1 JAN *', '0 0 1 1 *'),
    ('0 0 * jan-mar MON-FRI', '0 0 * 1-3 1-5'),
    ('0 0 * Dec Sun', '0 0 * 12 0'),
    ('0 0 * * sat,SUN', '0 0 * * 6,0'),
    ('0 0 * * 7', '0 0 * * 0'),
    ('0 0 * * 5-7', '0 0 * * 0,5,6'),
    ('0 0 * * 1,7', '0 0 * * 1,0'),
    ('0 0 ? * MON', '0 0 * * 1'),
    ('0 0 1 * ?', '0 0 1 * *'),
    ('05 08 01 01 *', '5 8 1 1 *'),
    ('59 23 31 12 6', '59 23 31 12 6'),
    ('0 0 1-31/2 * *', '0 0 1-31/2 * *'),
    ('0 0 * * */2', '0 0 * * */2'),
    ('0 12 * * 3-3', '0 12 * * 3'),
    # Macros and bare words.
    ('@yearly', '0 0 1 1 *'),
    ('@annually', '0 0 1 1 *'),
    ('@monthly', '0 0 1 * *'),
    ('@weekly', '0 0 * * 0'),
    ('@daily', '0 0 * * *'),
    ('@midnight', '0 0 * * *'),
    ('@hourly', '0 * * * *'),
    ('@HOURLY', '0 * * * *'),
    ('hourly', '0 * * * *'),
    ('daily', '0 0 * * *'),
    ('weekly', '0 0 * * 0'),
    ('monthly', '0 0 1 * *'),
    ('yearly', '0 0 1 1 *'),
    ('annually', '0 0 1 1 *'),
    ('  Daily  ', '0 0 * * *'),
    ('every year', '0 0 1 1 *'),
    # Every N minutes / hours.
    ('every minute', '* * * * *'),
    ('every 1 minute', '* * * * *'),
    ('every 5 minutes', '*/5 * * * *'),
    ('every 15 min', '*/15 * * * *'),
    ('every 30 mins', '*/30 * * * *'),
    ('every 2 minute', '*/2 * * * *'),
    ('every 10minutes', '*/10 * * * *'),
    ('every 60 minutes', '0 * * * *'),
    ('Every_5_Minutes', '*/5 * * * *'),
    ('every-15-minutes', '*/15 * * * *'),
    ('every hour', '0 * * * *'),
    ('every 1 hour', '0 * * * *'),
    ('every 2 hours', '0 */2 * * *'),
    ('every 6 hours', '0 */6 * * *'),
    ('every 12 hours', '0 */12 * * *'),
    ('every 24 hours', '0 0 * * *'),
    ('every day', '0 0 * * *'),
    ('every 1 day', '0 0 * * *'),
    ('every week', '0 0 * * 0'),
    ('every month', '0 0 1 * *'),
    # Daily / weekdays / weekends with times.
    ('daily at 10:00', '0 10 * * *'),
    ('daily at 8:30', '30 8 * * *'),
    ('daily at 23:59', '59 23 * * *'),
    ('daily at 0:00', '0 0 * * *'),
    ('every day at 07:05', '5 7 * * *'),
    ('daily at 9am', '0 9 * * *'),
    ('daily at 9 am', '0 9 * * *'),
    ('daily at 9:15 AM', '15 9 * * *'),
    ('daily at 6pm', '0 18 * * *'),
    ('daily at 6:45 pm', '45 18 * * *'),
    ('daily at 12 am', '0 0 * * *'),
    ('daily at 12pm', '0 12 * * *'),
    ('daily at 12:30am', '30 0 * * *'),
    ('DAILY_AT_10:00', '0 10 * * *'),
    ('weekdays', '0 0 * * 1-5'),
    ('weekdays at 09:00', '0 9 * * 1-5'),
    ('every weekday', '0 0 * * 1-5'),
    ('every weekday at 7:30 am', '30 7 * * 1-5'),
    ('every_weekday_at_9am', '0 9 * * 1-5'),
    ('weekends', '0 0 * * 0,6'),
    ('every weekend at 10:00', '0 10 * * 0,6'),
    # Weekly / every DAY.
    ('weekly at 06:00', '0 6 * * 0'),
    ('weekly on monday', '0 0 * * 1'),
    ('weekly on Mon at 10:00', '0 10 * * 1'),
    ('weekly on mon, wed and fri at 6 pm', '0 18 * * 1,3,5'),
    ('weekly on Monday, Wednesday, and Friday at 10:30pm', '30 22 * * 1,3,5'),
    ('every week on tuesday', '0 0 * * 2'),
    ('every monday', '0 0 * * 1'),
    ('every sunday at 23:00', '0 23 * * 0'),
    ('every sat at 10:00', '0 10 * * 6'),
    ('Every Monday and Friday', '0 0 * * 1,5'),
    ('every fri, mon', '0 0 * * 1,5'),
    ('every mon,mon,sun', '0 0 * * 0,1'),
    ('every thursday and thu at 1:00', '0 1 * * 4'),
    ('every tuesday, wednesday, saturday', '0 0 * * 2,3,6'),
    # Monthly.
    ('monthly at 02:00', '0 2 1 * *'),
    ('monthly on day 15', '0 0 15 * *'),
    ('monthly on day 31 at 23:30', '30 23 31 * *'),
    ('monthly on the 1st', '0 0 1 * *'),
    ('monthly on the 2nd at 4am', '0 4 2 * *'),
    ('monthly on the 3rd', '0 0 3 * *'),
    ('monthly on the 11th', '0 0 11 * *'),
    ('monthly on the 15th at 10:30', '30 10 15 * *'),
    ('monthly on the 22nd', '0 0 22 * *'),
    ('monthly on the 5', '0 0 5 * *'),
    ('every month on day 10', '0 0 10 * *'),
    # ISO-8601 durations.
    ('PT1M', '* * * * *'),
    ('PT15M', '*/15 * * * *'),
    ('pt30m', '*/30 * * * *'),
    ('PT60M', '0 * * * *'),
    ('PT1H', '0 * * * *'),
    ('PT6H', '0 */6 * * *'),
    ('PT24H', '0 0 * * *'),
    ('P1D', '0 0 * * *'),
    ('p1w', '0 0 * * 0'),
    ('P1M', '0 0 1 * *'),
    ('P1Y', '0 0 1 1 *'),
    # Italian.
    ('orario', '0 * * * *'),
    ('giornaliero', '0 0 * * *'),
    ('giornaliera', '0 0 * * *'),
    ('quotidiano', '0 0 * * *'),
    ('quotidiana', '0 0 * * *'),
    ('settimanale', '0 0 * * 0'),
    ('mensile', '0 0 1 * *'),
    ('annuale', '0 0 1 1 *'),
    ('ogni minuto', '* * * * *'),
    ('ogni 5 minuti', '*/5 * * * *'),
    ('ogni ora', '0 * * * *'),
    ('ogni 3 ore', '0 */3 * * *'),
    ('ogni giorno', '0 0 * * *'),
    ('giornaliero alle 08:30', '30 8 * * *'),
    ('ogni giorno alle 7:05', '5 7 * * *'),
    ('Giornaliera alle 18:00', '0 18 * * *'),
    ('settimanale alle 06:00', '0 6 * * 0'),
    ('mensile alle 10:00', '0 10 1 * *'),
]

REJECTED = [
    # Empty and non-cron shapes.
    ('', 'empty frequency'),
    ('   \t ', 'empty frequency'),
    ('whenever', 'unrecognized frequency'),
    ('daily please', 'unrecognized frequency'),
    ('sometimes at 10:00', 'unrecognized frequency'),
    # 6/7 fields, L W #, TZ prefixes, unsupported macros.
    ('0 0 0 * * *', r'got 6.*seconds or year'),
    ('0 0 0 * * * 2030', r'got 7.*seconds or year'),
    ('0 0 *', 'expected 5 cron fields'),
    ('0 0 L * *', "'L' and 'W' are not supported"),
    ('0 0 15W * *', "'L' and 'W' are not supported"),
    ('0 0 LW * *', "'L' and 'W' are not supported"),
    ('0 0 * * 5L', "'L' and 'W' are not supported"),
    ('0 0 * * 1#2', "'#' is not supported"),
    ('TZ=UTC 0 * * * *', 'TZ=/CRON_TZ= prefixes'),
    ('CRON_TZ=Europe/Rome 0 * * * *', 'TZ=/CRON_TZ= prefixes'),
    ('tz = UTC daily', 'TZ=/CRON_TZ= prefixes'),
    ('@reboot', '@reboot is not supported'),
    ('@every 5m', "'@every' is not supported"),
    ('@every 1h30m', "'@every' is not supported"),
    ('@fortnightly', 'unknown @ macro'),
    ('@daily at 10:00', 'unknown @ macro'),
    # 5-field values out of range, reversed ranges, bad steps.
    ('60 * * * *', 'minute value 60 is out of range 0-59'),
    ('* 24 * * *', 'hour value 24 is out of range 0-23'),
    ('* * 0 * *', 'day-of-month value 0 is out of range 1-31'),
    ('* * 32 * *', 'day-of-month value 32 is out of range 1-31'),
    ('* * * 13 *', 'month value 13 is out of range 1-12'),
    ('* * * 0 *', 'month value 0 is out of range 1-12'),
    ('* * * * 8', 'day-of-week value 8 is out of range 0-7'),
    ('5-1 * * * *', r"range '5-1' in minute is reversed"),
    ('0 0 * * fri-mon', r"range 'fri-mon' in day-of-week is reversed"),
    ('*/0 * * * *', 'step must be positive'),
    ('1-5/0 * * * *', 'step must be positive'),
    ('*/x * * * *', 'invalid step'),
    ('1/2/3 * * * *', 'too many slashes'),
    ('1-2-3 * * * *', 'too many hyphens'),
    ('*-5 * * * *', r"'\*' cannot be part of a range"),
    ('? * * * *', "'\\?' is only allowed in day-of-month and day-of-week"),
    ('* * * ? *', "'\\?' is only allowed in day-of-month and day-of-week"),
    ('0 0 * * funday', "invalid day-of-week value 'funday'"),
    ('0 0 * mon *', "invalid month value 'mon'"),
    ('0 0 * * jan', "invalid day-of-week value 'jan'"),
    ('jan * * * *', "unrecognized frequency"),
    ('0 0 1,,2 * *', 'empty list element'),
    ('0 0 1 * 1;2', 'invalid characters'),
    ('0 0 -1 * *', "invalid day-of-month value ''"),
    # Intervals that do not divide, or cannot be cron.
    ('every 7 minutes', '7 does not divide 60'),
    ('every 45 minutes', '45 does not divide 60'),
    ('every 0 minutes', 'minute interval 0 must be between 1 and 60'),
    ('every 90 minutes', 'minute interval 90 must be between 1 and 60'),
    ('every 5 hours', '5 does not divide 24'),
    ('every 48 hours', 'hour interval 48 must be between 1 and 24'),
    ('every 0 hours', 'hour interval 0 must be between 1 and 24'),
    ('every 2 days', 'every 2 days cannot be expressed'),
    ('every 3 weeks', 'every 3 weeks cannot be expressed'),
    ('every 6 months', 'every 6 months cannot be expressed'),
    ('ogni 2 giorni', 'every 2 giorni cannot be expressed'),
    ('every 30 seconds', 'resolution of one minute'),
    ('every 5 fortnights', "unknown time unit 'fortnights'"),
    ('every 5 minutes please', "unexpected trailing text 'please'"),
    ('ogni 7 minuti', '7 does not divide 60'),
    ('ogni 5 ore', '5 does not divide 24'),
    ('PT7M', '7 does not divide 60'),
    ('PT90M', 'minute interval 90 must be between 1 and 60'),
    ('PT5H', '5 does not divide 24'),
    ('PT30S', 'resolution of one minute'),
    ('P2D', 'a period of 2D cannot be expressed'),
    ('P2W', 'a period of 2W cannot be expressed'),
    ('P3M', 'a period of 3M cannot be expressed'),
    ('P1DT2H', 'unrecognized frequency'),
    # Times that are out of range or malformed.
    ('daily at 25:00', 'hour 25 is out of range 0-23'),
    ('daily at 24:00', 'hour 24 is out of range 0-23'),
    ('daily at 12:60', 'minute 60 is out of range 0-59'),
    ('daily at 13 pm', 'hour 13 is out of range 1-12'),
    ('daily at 0 am', 'hour 0 is out of range 1-12'),
    ('daily at 11:75 pm', 'minute 75 is out of range 0-59'),
    ('daily at 10', 'needs minutes'),
    ('daily at noon', "invalid time 'noon'"),
    ('daily at 10:00 please', "unexpected trailing text 'please'"),
    ('daily at 9 am sharp', "unexpected trailing text 'sharp'"),
    ('weekdays at 9.30', "invalid time '9.30'"),
    ('every hour at 10:00', "'every hour' does not take a time of day"),
    ('every 15 minutes at 10:00', "'every 15 minutes' does not take a time of day"),
    ('yearly at 10:00', "'yearly' does not take a time of day"),
    ('P1D at 10:00', "'p1d' does not take a time of day"),
    # Days of week / days of month.
    ('every funday', "unknown day name 'funday'"),
    ('weekly on someday', "unknown day name 'someday'"),
    ('every mon and', "unknown day name 'mon and'"),
    ('every monday please', "unknown day name 'monday please'"),
    ('weekly on mon,,tue', "unknown day name ''"),
    ('monthly on day 32', 'day of month 32 is out of range 1-31'),
    ('monthly on day 0', 'day of month 0 is out of range 1-31'),
    ('monthly on the 32nd', 'day of month 32 is out of range 1-31'),
    ('monthly on the 3th', r'wrong ordinal suffix .*expected 3rd'),
    ('monthly on the 11st', r'wrong ordinal suffix .*expected 11th'),
    ('monthly on friday', "expected 'on day D' or 'on the Dth'"),
]

NON_STRINGS = [None, 12, 1.5, b'daily', ['daily'], {'frequency': 'daily'}]


# --------------------------------------------------------------------------------------------
# A Kubernetes (robfig/cron v3 ParseStandard) field checker, independent of the module.
# --------------------------------------------------------------------------------------------

_MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']
_DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']
_BOUNDS = [
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, {name: number for number, name in enumerate(_MONTHS, start=1)}),
    (0, 6, {name: number for number, name in enumerate(_DAYS)}),
]


def _robfig_value(text: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    assert re.fullmatch(r'\d+', text), f'not a number or name: {text!r}'
    return int(text)


def assert_kubernetes_cron(expression: str) -> None:
    """Asserts that robfig/cron v3 ParseStandard (as Kubernetes uses it) would accept this."""
    assert expression == expression.strip()
    assert '  ' not in expression
    assert not expression.startswith('@')
    assert 'tz' not in expression.lower()
    fields = expression.split(' ')
    assert len(fields) == 5, expression
    for field, (low, high, names) in zip(fields, _BOUNDS, strict=True):
        assert not re.search(r'[#]', field)
        for part in field.split(','):
            range_text, _, step = part.partition('/')
            if step:
                assert step.isdigit() and int(step) > 0, part
            if range_text in ('*', '?'):
                continue
            bounds = range_text.split('-')
            assert len(bounds) in (1, 2), part
            start = _robfig_value(bounds[0], names)
            end = _robfig_value(bounds[-1], names) if len(bounds) == 2 or not step else high
            assert low <= start <= end <= high, (expression, part)
    assert croniter.is_valid(expression), expression


# --------------------------------------------------------------------------------------------
# frequency_to_cron
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(('text', 'expected'), ACCEPTED)
def test_accepted_frequencies(text, expected):
    assert frequency_to_cron(text) == expected


@pytest.mark.parametrize(('text', 'expected'), ACCEPTED)
def test_accepted_outputs_are_kubernetes_cron(text, expected):
    result = frequency_to_cron(text)
    assert_kubernetes_cron(result)
    # Normalized output is a fixed point.
    assert frequency_to_cron(result) == result


@pytest.mark.parametrize(('text', 'reason'), REJECTED)
def test_rejected_frequencies(text, reason):
    with pytest.raises(CronFormatError, match=reason) as caught:
        frequency_to_cron(text)
    assert repr(text) in str(caught.value)
    assert str(caught.value).startswith(f'unsupported frequency {text!r}: ')
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize('value', NON_STRINGS)
def test_non_string_frequency(value):
    with pytest.raises(CronFormatError, match='expected a string') as caught:
        frequency_to_cron(value)
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize(
    ('expression', 'valid'),
    [
        ('0 0 * * 1-5', True),
        ('0 0 L * *', False),
        ('0 0 * * 7', False),
        ('0 0 * * 1#2', False),
        ('0 0 0 * * *', False),
        ('0 0 ? * sun', True),
        ('5-59/15 * * * *', True),
    ],
)
def test_kubernetes_cron_checker_itself(expression, valid):
    if valid:
        assert_kubernetes_cron(expression)
    else:
        with pytest.raises(AssertionError):
            assert_kubernetes_cron(expression)


# --------------------------------------------------------------------------------------------
# cronjob_name
# --------------------------------------------------------------------------------------------

_DNS_1123_LABEL = re.compile(r'[a-z0-9]([-a-z0-9]*[a-z0-9])?')
_LABEL_VALUE = re.compile(r'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')

HOSTILE_IDS = [
    ('acme', 'tsc-1'),
    ('ACME', 'TSC_1'),
    ('!!!', '???'),
    ('', ''),
    ('x' * 300, 'y' * 300),
    ('Ünïcødé-客户', 'séríe/温度'),
    ('../x', '../../etc/passwd'),
    ('a-', '-b'),
    ('-', '-'),
    ('cust 1', 'tsc.1'),
    ('a' * 41, 'b'),
    ('emoji🚀', '🚀'),
]


@pytest.mark.parametrize(('customer_id', 'tsc_id'), HOSTILE_IDS)
def test_cronjob_name_is_a_short_dns_label(customer_id, tsc_id):
    name = cronjob_name(customer_id, tsc_id)
    assert len(name) <= 52
    assert _DNS_1123_LABEL.fullmatch(name), name
    assert name.startswith('tsc-')
    assert re.search(r'-[0-9a-f]{10}$', name)
    assert cronjob_name(customer_id, tsc_id) == name


def test_cronjob_name_readable_prefix():
    assert re.fullmatch(r'tsc-acme-sensor-01-[0-9a-f]{10}', cronjob_name('ACME', 'Sensor_01'))
    assert re.fullmatch(r'tsc-[0-9a-f]{10}', cronjob_name('!!!', '???'))


@pytest.mark.parametrize(
    ('first', 'second'),
    [
        (('acme', 'tsc1'), ('ACME', 'tsc1')),
        (('acme', 'tsc-1'), ('acme', 'tsc_1')),
        (('acme', 'tsc-1'), ('acme', 'tsc.1')),
        (('a-b', 'c'), ('a', 'b-c')),
        (('a', 'b,c'), ('a,b', 'c')),
        (('!!!', ''), ('', '!!!')),
        (('x' * 300, 'y'), ('x' * 300, 'z')),
        (('x' * 299 + 'a', 't'), ('x' * 299 + 'b', 't')),
        (('客户', '1'), ('顾客', '1')),
    ],
)
def test_cronjob_names_are_distinct(first, second):
    assert cronjob_name(*first) != cronjob_name(*second)


def test_cronjob_name_rejects_non_strings():
    with pytest.raises(ValueError, match='customer_id must be a string'):
        cronjob_name(None, 'x')
    with pytest.raises(ValueError, match='tsc_id must be a string'):
        cronjob_name('x', 5)


# --------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------

BASE_ARGS = {
    'customer_id': 'ACME Corp',
    'tsc_id': 'sensor/42',
    'schedule': '*/15 * * * *',
    'namespace': 'tsc-jobs',
    'image': 'registry.example.com/tsc-runner:1.4.2',
}


def _manifest(**overrides):
    return generate_cronjob_manifest(**{**BASE_ARGS, **overrides})


def _assert_labels(labels):
    for key, value in labels.items():
        assert len(value) <= 63, (key, value)
        assert _LABEL_VALUE.fullmatch(value), (key, value)


@pytest.mark.parametrize(
    'overrides',
    [
        {},
        {'time_zone': 'Europe/Rome'},
        {'enabled': False},
        {'enabled': False, 'time_zone': 'America/New_York', 'parameters': {'a': [1, 2]}},
        {'customer_id': '!!!', 'tsc_id': 'x' * 300},
        {'customer_id': 'Ünïcødé-客户', 'tsc_id': '../x', 'parameters': {'città': 'Roma'}},
    ],
)
def test_cronjob_manifest_validates(overrides):
    manifest = _manifest(**overrides)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    assert manifest['metadata']['name'] == cronjob_name(
        overrides.get('customer_id', BASE_ARGS['customer_id']),
        overrides.get('tsc_id', BASE_ARGS['tsc_id']),
    )
    _assert_labels(manifest['metadata']['labels'])
    _assert_labels(manifest['spec']['jobTemplate']['spec']['template']['metadata']['labels'])
    assert yaml.safe_load(yaml.safe_dump(manifest, allow_unicode=True)) == manifest


def test_cronjob_manifest_contents():
    manifest = _manifest(parameters={'b': 2, 'a': 'è'})
    name = cronjob_name('ACME Corp', 'sensor/42')
    labels = {
        'app.kubernetes.io/name': 'tsc-job',
        'app.kubernetes.io/managed-by': 'tsc-orchestrator',
        'tsc.orchestrator/customer-id': 'ACME-Corp',
        'tsc.orchestrator/tsc-id': 'sensor-42',
    }
    assert manifest == {
        'apiVersion': 'batch/v1',
        'kind': 'CronJob',
        'metadata': {
            'name': name,
            'namespace': 'tsc-jobs',
            'labels': labels,
            'annotations': {
                'tsc.orchestrator/customer-id': 'ACME Corp',
                'tsc.orchestrator/tsc-id': 'sensor/42',
            },
        },
        'spec': {
            'schedule': '*/15 * * * *',
            'suspend': False,
            'concurrencyPolicy': 'Forbid',
            'successfulJobsHistoryLimit': 3,
            'failedJobsHistoryLimit': 1,
            'startingDeadlineSeconds': 300,
            'jobTemplate': {
                'spec': {
                    'backoffLimit': 2,
                    'template': {
                        'metadata': {'labels': labels},
                        'spec': {
                            'restartPolicy': 'Never',
                            'containers': [{
                                'name': 'tsc-job',
                                'image': 'registry.example.com/tsc-runner:1.4.2',
                                'env': [
                                    {'name': 'TSC_CUSTOMER_ID', 'value': 'ACME Corp'},
                                    {'name': 'TSC_ID', 'value': 'sensor/42'},
                                    {'name': 'TSC_PARAMETERS', 'value': '{"a":"è","b":2}'},
                                ],
                            }],
                        },
                    },
                },
            },
        },
    }


def test_cronjob_manifest_time_zone_and_suspend():
    assert 'timeZone' not in _manifest()['spec']
    spec = _manifest(time_zone='Europe/Rome', enabled=False)['spec']
    assert spec['timeZone'] == 'Europe/Rome'
    assert spec['suspend'] is True
    env = spec['jobTemplate']['spec']['template']['spec']['containers'][0]['env']
    assert env[2] == {'name': 'TSC_PARAMETERS', 'value': '{}'}


@pytest.mark.parametrize(
    ('customer_id', 'tsc_id'),
    [('!!!', '???'), ('x' * 300, '-' * 10 + 'y' * 100), ('a.' * 40, '_b_'), ('Ünï', '客户')],
)
def test_label_values_are_valid(customer_id, tsc_id):
    labels = _manifest(customer_id=customer_id, tsc_id=tsc_id)['metadata']['labels']
    _assert_labels(labels)


@pytest.mark.parametrize(
    ('overrides', 'message'),
    [
        ({'schedule': ''}, 'schedule must be a non-empty string'),
        ({'schedule': '   '}, 'schedule must be a non-empty string'),
        ({'schedule': None}, 'schedule must be a non-empty string'),
        ({'namespace': 'Bad_NS'}, 'is not a DNS-1123 label'),
        ({'namespace': ''}, 'is not a DNS-1123 label'),
        ({'namespace': '-ns'}, 'is not a DNS-1123 label'),
        ({'namespace': 'a' * 64}, 'is not a DNS-1123 label'),
        ({'namespace': None}, 'namespace must be a string'),
        ({'image': ''}, 'image must be a non-empty string'),
        ({'image': None}, 'image must be a non-empty string'),
        ({'time_zone': ''}, 'time_zone must be a non-empty string or None'),
        ({'enabled': 'false'}, 'enabled must be a bool'),
        ({'parameters': ['a']}, 'parameters must be a dict or None'),
        ({'parameters': {'a': object()}}, 'parameters are not JSON-serializable'),
        ({'customer_id': None}, 'customer_id must be a string'),
    ],
)
def test_cronjob_manifest_rejects_bad_input(overrides, message):
    with pytest.raises(ValueError, match=message):
        _manifest(**overrides)


def test_delete_manifest():
    manifest = generate_delete_manifest(customer_id='ACME', tsc_id='t/1', namespace='tsc-jobs')
    assert manifest == {
        'apiVersion': 'batch/v1',
        'kind': 'CronJob',
        'metadata': {'name': cronjob_name('ACME', 't/1'), 'namespace': 'tsc-jobs'},
    }
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    with pytest.raises(ValueError, match='DNS-1123'):
        generate_delete_manifest(customer_id='ACME', tsc_id='t/1', namespace='NS')


# --------------------------------------------------------------------------------------------
# create_job
# --------------------------------------------------------------------------------------------

CONFIG = {
    'customerId': 'ACME Corp',
    'tscId': 'sensor/42',
    'frequency': 'every 15 minutes',
    'enabled': True,
    'timezone': 'Europe/Rome',
    'parameters': {'window': 15},
    'image': None,
    'namespace': None,
    'impalaCluster': 'prod',
}
DEFAULTS = {'default_namespace': 'tsc-jobs', 'default_image': 'registry.example.com/tsc:1'}


def _apply(config=CONFIG, **overrides):
    ids = config if isinstance(config, dict) else CONFIG
    args = {
        'action': 'apply',
        'operation': 'create',
        'customer_id': ids['customerId'],
        'tsc_id': ids['tscId'],
        'config': config,
        'schedule': '*/15 * * * *',
        **DEFAULTS,
        **overrides,
    }
    return create_job(**args)


def _delete(config=None, **overrides):
    args = {
        'action': 'delete',
        'operation': 'delete',
        'customer_id': 'ACME Corp',
        'tsc_id': 'sensor/42',
        'config': config,
        'schedule': None,
        **DEFAULTS,
        **overrides,
    }
    return create_job(**args)


def test_create_job_apply_record():
    record = _apply()
    assert isinstance(record, KafkaRecord)
    name = cronjob_name('ACME Corp', 'sensor/42')
    assert record.key == f'tsc-jobs/{name}'.encode()
    assert record.headers == (
        ('action', b'apply'),
        ('operation', b'create'),
        ('customerId', b'ACME Corp'),
        ('tscId', b'sensor/42'),
    )
    manifest = yaml.safe_load(record.value.decode('utf-8'))
    assert manifest == generate_cronjob_manifest(
        customer_id='ACME Corp',
        tsc_id='sensor/42',
        schedule='*/15 * * * *',
        namespace='tsc-jobs',
        image='registry.example.com/tsc:1',
        time_zone='Europe/Rome',
        enabled=True,
        parameters={'window': 15},
    )
    assert list(manifest) == ['apiVersion', 'kind', 'metadata', 'spec']  # sort_keys=False
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_create_job_config_overrides_and_missing_optionals():
    config = {**CONFIG, 'namespace': 'team-a', 'image': 'img:2', 'enabled': False}
    manifest = yaml.safe_load(_apply(config).value)
    assert manifest['metadata']['namespace'] == 'team-a'
    assert manifest['spec']['suspend'] is True
    container = manifest['spec']['jobTemplate']['spec']['template']['spec']['containers'][0]
    assert container['image'] == 'img:2'

    minimal = {'customerId': 'c', 'tscId': 't', 'frequency': 'daily'}
    manifest = yaml.safe_load(_apply(minimal, schedule='0 0 * * *').value)
    assert manifest['metadata']['namespace'] == 'tsc-jobs'
    assert manifest['spec']['suspend'] is False
    assert 'timeZone' not in manifest['spec']

    nones = {**minimal, 'enabled': None, 'timezone': None, 'parameters': None}
    assert yaml.safe_load(_apply(nones, schedule='0 0 * * *').value) == manifest


def test_create_job_unicode_round_trip():
    config = {**CONFIG, 'customerId': 'Società', 'tscId': '温度', 'parameters': {'città': 'Roma'}}
    record = _apply(config)
    assert 'Società'.encode() in record.value  # allow_unicode=True
    assert record.header('customerId') == 'Società'.encode()
    assert record.header('tscId') == '温度'.encode()
    manifest = yaml.safe_load(record.value.decode('utf-8'))
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_delete_job_record():
    record = _delete()
    assert record.key == _apply().key
    assert record.headers == (
        ('action', b'delete'),
        ('operation', b'delete'),
        ('customerId', b'ACME Corp'),
        ('tscId', b'sensor/42'),
    )
    manifest = yaml.safe_load(record.value)
    assert manifest == generate_delete_manifest(
        customer_id='ACME Corp', tsc_id='sensor/42', namespace='tsc-jobs'
    )
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_delete_key_matches_create_key_with_config_namespace():
    config = {**CONFIG, 'namespace': 'team-a'}
    assert _delete(config).key == _apply(config).key == (
        b'team-a/' + cronjob_name('ACME Corp', 'sensor/42').encode()
    )


@pytest.mark.parametrize(
    ('args', 'message'),
    [
        ({'action': 'create'}, 'action must be one of'),
        ({'action': 'APPLY'}, 'action must be one of'),
        ({'config': None}, "config is required for action 'apply'"),
        ({'config': ['not', 'a', 'dict']}, 'config must be a dict or None'),
        ({'schedule': None}, "schedule is required for action 'apply'"),
        ({'schedule': ''}, "schedule is required for action 'apply'"),
        ({'default_namespace': 'Not Valid'}, 'DNS-1123'),
        ({'default_image': ''}, 'image must be a non-empty string'),
    ],
)
def test_create_job_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        _apply(**args)


def test_delete_job_rejects_unknown_action_and_bad_namespace():
    with pytest.raises(ValueError, match='action must be one of'):
        _delete(action='remove')
    with pytest.raises(ValueError, match='DNS-1123'):
        _delete(default_namespace='')


def test_yaml_value_round_trips():
    for record in (_apply(), _delete()):
        text = record.value.decode('utf-8')
        assert yaml.safe_dump(
            yaml.safe_load(text), sort_keys=False, default_flow_style=False, allow_unicode=True
        ) == text


def test_parameters_json_is_canonical():
    record = _apply({**CONFIG, 'parameters': {'z': 1, 'a': {'y': None, 'b': True}}})
    manifest = yaml.safe_load(record.value)
    env = manifest['spec']['jobTemplate']['spec']['template']['spec']['containers'][0]['env']
    value = env[2]['value']
    assert value == '{"a":{"b":true,"y":null},"z":1}'
    assert json.loads(value) == {'z': 1, 'a': {'y': None, 'b': True}}
