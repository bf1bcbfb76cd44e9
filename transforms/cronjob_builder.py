"""Builds Kubernetes CronJob schedules, manifests and job records from TSC configurations."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import apache_beam as beam
import yaml
from apache_beam.metrics import Metrics
from croniter import croniter

from transforms.dead_letters import dead_letter, with_safety_net
from transforms.records import KafkaRecord, Message

_LOGGER = logging.getLogger(__name__)

# yaml.safe_dump with libyaml's C emitter when PyYAML has it: the same output, 5x faster.
_SAFE_DUMPER = getattr(yaml, 'CSafeDumper', yaml.SafeDumper)


class CronFormatError(ValueError):
    """A frequency text that cannot become a Kubernetes CronJob schedule."""


class _Error(Exception):
    """Internal: the reason a frequency was rejected (wrapped into CronFormatError)."""


# --------------------------------------------------------------------------------------------
# Five-field cron expressions, checked against robfig/cron v3 ``ParseStandard`` rules.
# --------------------------------------------------------------------------------------------

_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ('jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'),
        start=1,
    )
}
_DOW_NAMES = {
    name: number
    for number, name in enumerate(('sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'))
}


class _Field(NamedTuple):
    label: str
    low: int
    high: int  # highest value accepted on input (7 for day-of-week)
    names: dict[str, int]
    allow_question: bool


_FIELDS = (
    _Field('minute', 0, 59, {}, False),
    _Field('hour', 0, 23, {}, False),
    _Field('day-of-month', 1, 31, {}, True),
    _Field('month', 1, 12, _MONTH_NAMES, False),
    _Field('day-of-week', 0, 7, _DOW_NAMES, True),
)
_DOW_OUTPUT_HIGH = 6
_CRON_TOKEN = re.compile(r'[0-9a-z*?/,#-]+')
_LW_ATOM = re.compile(r'\d*[lw]+')


def _parse_atom(atom: str, field: _Field) -> int:
    """Parses one number or name of a cron field and checks its range."""
    if atom in field.names:
        return field.names[atom]
    if atom.isdigit():
        value = int(atom)
        if not field.low <= value <= field.high:
            raise _Error(
                f'{field.label} value {value} is out of range {field.low}-{field.high}'
            )
        return value
    if _LW_ATOM.fullmatch(atom):
        raise _Error(f"'L' and 'W' are not supported by Kubernetes ({field.label} {atom!r})")
    raise _Error(f'invalid {field.label} value {atom!r}')


def _parse_cron_part(part: str, field: _Field) -> str:
    """Validates and normalizes one comma-separated element of a cron field."""
    if '#' in part:
        raise _Error(f"'#' is not supported by Kubernetes ({field.label} {part!r})")
    range_text, slash, step_text = part.partition('/')
    if '/' in step_text:
        raise _Error(f'too many slashes in {field.label} {part!r}')
    step = 1
    if slash:
        if not step_text.isdigit():
            raise _Error(f'invalid step in {field.label} {part!r}')
        step = int(step_text)
        if step == 0:
            raise _Error(f'step must be positive in {field.label} {part!r}')

    is_dow = field.label == 'day-of-week'
    output_high = _DOW_OUTPUT_HIGH if is_dow else field.high
    if range_text in ('*', '?'):
        if range_text == '?' and not field.allow_question:
            raise _Error(f"'?' is only allowed in day-of-month and day-of-week, not {field.label}")
        return '*' if step == 1 else f'*/{step}'

    bounds = range_text.split('-')
    if len(bounds) > 2:
        raise _Error(f'too many hyphens in {field.label} {part!r}')
    if any(bound in ('*', '?') for bound in bounds):
        raise _Error(f"'*' cannot be part of a range in {field.label} {part!r}")
    start = _parse_atom(bounds[0], field)
    if len(bounds) == 2:
        end = _parse_atom(bounds[1], field)
    elif slash:
        end = output_high  # robfig: "N/step" means "N-max/step"
    else:
        end = start
    if start > end:
        raise _Error(f'range {range_text!r} in {field.label} is reversed')

    if is_dow and 7 in (start, end):
        values = sorted({value % 7 for value in range(start, end + 1, step)})
        return ','.join(str(value) for value in values)
    if start == end:
        return str(start)
    return f'{start}-{end}' if step == 1 else f'{start}-{end}/{step}'


def _normalize_cron(expression: str) -> str:
    """Validates a 5-field cron expression with Kubernetes rules and normalizes it."""
    tokens = expression.lower().split()
    if len(tokens) != 5:
        hint = ''
        if len(tokens) in (6, 7):
            hint = '; Kubernetes does not support seconds or year fields'
        raise _Error(
            f'expected 5 cron fields (minute hour day-of-month month day-of-week), '
            f'got {len(tokens)}{hint}'
        )
    normalized = []
    for token, field in zip(tokens, _FIELDS, strict=True):
        if not _CRON_TOKEN.fullmatch(token):
            raise _Error(f'invalid characters in {field.label} field {token!r}')
        parts = token.split(',')
        if '' in parts:
            raise _Error(f'empty list element in {field.label} field {token!r}')
        normalized.append(','.join(_parse_cron_part(part, field) for part in parts))
    result = ' '.join(normalized)
    if not croniter.is_valid(result):
        raise _Error(f'croniter rejects the normalized expression {result!r}')
    return result


# --------------------------------------------------------------------------------------------
# Textual frequencies (English, Italian, ISO-8601 durations, @macros).
# --------------------------------------------------------------------------------------------

_MINUTELY = '* * * * *'
_HOURLY = '0 * * * *'
_DAILY = '0 0 * * *'
_WEEKLY = '0 0 * * 0'
_MONTHLY = '0 0 1 * *'
_YEARLY = '0 0 1 1 *'

_MACROS = {
    '@yearly': _YEARLY,
    '@annually': _YEARLY,
    '@monthly': _MONTHLY,
    '@weekly': _WEEKLY,
    '@daily': _DAILY,
    '@midnight': _DAILY,
    '@hourly': _HOURLY,
}

_DAY_NAMES = {
    'sunday': 0, 'monday': 1, 'tuesday': 2, 'wednesday': 3,
    'thursday': 4, 'friday': 5, 'saturday': 6,
}
_DAY_NAMES.update({name[:3]: number for name, number in list(_DAY_NAMES.items())})

_TIME_SPLIT = re.compile(r'(?P<main>.+?) (?:at|alle) (?P<time>.+)')
_TIME_24H = re.compile(r'(?P<hour>\d{1,2}):(?P<minute>\d{2})')
_TIME_12H = re.compile(r'(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))? ?(?P<meridiem>am|pm)')
_TIME_PREFIX = re.compile(r'\d{1,2}(?::\d{2})?(?: ?(?:am|pm)\b)?')
_DAY_LIST_SEPARATOR = re.compile(r' ?, ?(?:and )?| and ')
_EVERY_N = re.compile(r'(?:every|ogni) (?P<count>\d+) ?(?P<unit>[a-z]+)(?P<rest>.*)')
_ISO = re.compile(r'p(?:t(?P<tcount>\d+)(?P<tunit>[mhs])|(?P<count>\d+)(?P<unit>[dwmy]))')
_DAY_OF_MONTH = re.compile(r'on (?:day|the) (?P<day>\d+)(?P<suffix>st|nd|rd|th)?')

_DAILY_WORDS = frozenset({
    'daily', 'every day', 'giornaliero', 'giornaliera', 'quotidiano', 'quotidiana',
    'ogni giorno',
})
_HOURLY_WORDS = frozenset({'hourly', 'every hour', 'orario', 'ogni ora'})
_MINUTELY_WORDS = frozenset({'every minute', 'ogni minuto'})
_YEARLY_WORDS = frozenset({'yearly', 'annually', 'every year', 'annuale'})
_WEEKDAY_WORDS = frozenset({'weekdays', 'every weekday'})
_WEEKEND_WORDS = frozenset({'weekends', 'every weekend'})
_WEEKLY_WORDS = ('weekly', 'every week', 'settimanale')
_MONTHLY_WORDS = ('monthly', 'every month', 'mensile')

_MINUTE_UNITS = frozenset({'minute', 'minutes', 'min', 'mins', 'minuti', 'minuto'})
_HOUR_UNITS = frozenset({'hour', 'hours', 'ore', 'ora'})
_SECOND_UNITS = frozenset({'second', 'seconds', 'sec', 'secs', 'secondi', 'secondo'})
_LONG_UNITS = {
    'day': _DAILY, 'days': _DAILY, 'giorno': _DAILY, 'giorni': _DAILY,
    'week': _WEEKLY, 'weeks': _WEEKLY, 'settimana': _WEEKLY, 'settimane': _WEEKLY,
    'month': _MONTHLY, 'months': _MONTHLY, 'mese': _MONTHLY, 'mesi': _MONTHLY,
    'year': _YEARLY, 'years': _YEARLY, 'anno': _YEARLY, 'anni': _YEARLY,
}


def _every_n_minutes(count: int) -> str:
    if not 1 <= count <= 60:
        raise _Error(f'minute interval {count} must be between 1 and 60')
    if 60 % count:
        raise _Error(f'{count} does not divide 60')
    if count == 1:
        return _MINUTELY
    return _HOURLY if count == 60 else f'*/{count} * * * *'


def _every_n_hours(count: int) -> str:
    if not 1 <= count <= 24:
        raise _Error(f'hour interval {count} must be between 1 and 24')
    if 24 % count:
        raise _Error(f'{count} does not divide 24')
    if count == 1:
        return _HOURLY
    return _DAILY if count == 24 else f'0 */{count} * * *'


def _parse_time(text: str) -> tuple[int, int]:
    """Parses ``HH:MM`` (24 h) or ``H[:MM] am|pm`` into (hour, minute)."""
    match = _TIME_12H.fullmatch(text)
    if match:
        hour, minute = int(match['hour']), int(match['minute'] or 0)
        if not 1 <= hour <= 12:
            raise _Error(f'hour {hour} is out of range 1-12 in 12-hour time {text!r}')
        if minute > 59:
            raise _Error(f'minute {minute} is out of range 0-59 in time {text!r}')
        return hour % 12 + (12 if match['meridiem'] == 'pm' else 0), minute
    match = _TIME_24H.fullmatch(text)
    if match:
        hour, minute = int(match['hour']), int(match['minute'])
        if hour > 23:
            raise _Error(f'hour {hour} is out of range 0-23 in time {text!r}')
        if minute > 59:
            raise _Error(f'minute {minute} is out of range 0-59 in time {text!r}')
        return hour, minute
    prefix = _TIME_PREFIX.match(text)
    if prefix and prefix.end() < len(text) and text[prefix.end()] == ' ':
        raise _Error(f'unexpected trailing text {text[prefix.end():].strip()!r}')
    if re.fullmatch(r'\d{1,2}', text):
        raise _Error(f'time {text!r} needs minutes (HH:MM) or am/pm')
    raise _Error(f'invalid time {text!r}; use HH:MM or H[:MM] am/pm')


def _parse_days(text: str) -> str:
    """Parses a list of English day names into sorted, unique day-of-week numbers."""
    days = set()
    for name in _DAY_LIST_SEPARATOR.split(text):
        if name not in _DAY_NAMES:
            raise _Error(f'unknown day name {name!r}')
        days.add(_DAY_NAMES[name])
    return ','.join(str(day) for day in sorted(days))


def _parse_day_of_month(text: str) -> int:
    match = _DAY_OF_MONTH.fullmatch(text)
    if not match:
        raise _Error(f"expected 'on day D' or 'on the Dth', got {text!r}")
    day = int(match['day'])
    if not 1 <= day <= 31:
        raise _Error(f'day of month {day} is out of range 1-31')
    suffix = match['suffix']
    if suffix:
        expected = {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th')
        if 11 <= day <= 13:
            expected = 'th'
        if suffix != expected:
            raise _Error(f'wrong ordinal suffix in {text!r} (expected {day}{expected})')
    return day


def _day_list_form(main: str) -> str | None:
    """Returns the day-of-week field for weekly/weekday/weekend forms, or None."""
    if main in _WEEKDAY_WORDS:
        return '1-5'
    if main in _WEEKEND_WORDS:
        return '0,6'
    for word in _WEEKLY_WORDS:
        if main == word:
            return '0'
        if main.startswith(word + ' on '):
            return _parse_days(main[len(word) + len(' on '):])
    if main.startswith('every '):
        return _parse_days(main[len('every '):])
    return None


def _timed_form(main: str) -> Callable[[int, int], str] | None:
    """Returns a builder ``(hour, minute) -> cron`` for forms that take ``at T``, or None."""
    if main in _DAILY_WORDS:
        return lambda hour, minute: f'{minute} {hour} * * *'
    for word in _MONTHLY_WORDS:
        if main == word or main.startswith(word + ' on '):
            day = 1 if main == word else _parse_day_of_month(main[len(word) + 1:])
            return lambda hour, minute: f'{minute} {hour} {day} * *'
    if main.startswith('every ') and _EVERY_N.fullmatch(main):
        return None
    days = _day_list_form(main)
    if days is not None:
        return lambda hour, minute: f'{minute} {hour} * * {days}'
    return None


def _untimed_form(text: str) -> str | None:
    """Returns the cron for forms that do not take a time, or None."""
    if text in _MINUTELY_WORDS:
        return _MINUTELY
    if text in _HOURLY_WORDS:
        return _HOURLY
    if text in _YEARLY_WORDS:
        return _YEARLY
    match = _EVERY_N.fullmatch(text)
    if match:
        count, unit = int(match['count']), match['unit']
        if match['rest']:
            raise _Error(f'unexpected trailing text {match["rest"].strip()!r}')
        if unit in _MINUTE_UNITS:
            return _every_n_minutes(count)
        if unit in _HOUR_UNITS:
            return _every_n_hours(count)
        if unit in _SECOND_UNITS:
            raise _Error('Kubernetes CronJobs have a resolution of one minute')
        if unit in _LONG_UNITS:
            if count != 1:
                raise _Error(f'every {count} {unit} cannot be expressed as a cron schedule')
            return _LONG_UNITS[unit]
        raise _Error(f'unknown time unit {unit!r}')
    match = _ISO.fullmatch(text)
    if match:
        return _iso_duration(match)
    return None


def _iso_duration(match: re.Match[str]) -> str:
    if match['tunit'] == 'm':
        return _every_n_minutes(int(match['tcount']))
    if match['tunit'] == 'h':
        return _every_n_hours(int(match['tcount']))
    if match['tunit'] == 's':
        raise _Error('Kubernetes CronJobs have a resolution of one minute')
    count = int(match['count'])
    if count != 1:
        raise _Error(f'a period of {count}{match["unit"].upper()} cannot be expressed as cron')
    return {'d': _DAILY, 'w': _WEEKLY, 'm': _MONTHLY, 'y': _YEARLY}[match['unit']]


def _textual_to_cron(text: str) -> str:
    """Translates a normalized (lowercase, single-spaced) textual frequency."""
    split = _TIME_SPLIT.fullmatch(text)
    if split:
        main, time_text = split['main'], split['time']
        if _untimed_form(main) is not None:
            raise _Error(f'{main!r} does not take a time of day')
        builder = _timed_form(main)
        if builder is not None:
            return builder(*_parse_time(time_text))
    untimed = _untimed_form(text)
    if untimed is not None:
        return untimed
    builder = _timed_form(text)
    if builder is not None:
        return builder(0, 0)
    raise _Error('unrecognized frequency')


def _frequency_to_cron(text: str) -> str:
    stripped = ' '.join(text.split())
    if not stripped:
        raise _Error('empty frequency')
    lowered = stripped.lower()
    if re.match(r'(?:cron_)?tz ?=', lowered):
        raise _Error('TZ=/CRON_TZ= prefixes are rejected by Kubernetes; use the timezone field')
    if lowered.startswith('@'):
        if lowered in _MACROS:
            return _MACROS[lowered]
        if lowered == '@reboot':
            raise _Error('@reboot is not supported by Kubernetes CronJobs')
        if lowered.startswith('@every'):
            raise _Error("'@every' is not supported; use 'every N minutes' or 'every N hours'")
        raise _Error('unknown @ macro')
    if lowered[0].isdigit() or lowered[0] in '*?':
        return _normalize_cron(lowered)
    words = ' '.join(re.sub(r'[_-]', ' ', lowered).split())
    return _normalize_cron(_textual_to_cron(words))


def frequency_to_cron(text: str) -> str:
    """Converts a frequency description into a Kubernetes-compatible 5-field cron expression.

    Accepts 5-field cron expressions (normalized: single spaces, names as numbers,
    day-of-week 7 as 0, ``?`` as ``*``), ``@`` macros other than ``@reboot``/``@every``,
    English and Italian phrases (``daily at 8:30``, ``every 15 minutes``, ``ogni 2 ore``,
    ``weekly on mon and fri at 6 pm``, ``monthly on the 15th``) and ISO-8601 durations
    (``PT15M``, ``PT2H``, ``P1D``, ``P1W``, ``P1M``, ``P1Y``).

    Args:
        text: The frequency as written in the TSC configuration.

    Returns:
        A single-spaced 5-field cron expression accepted by robfig/cron ``ParseStandard``.

    Raises:
        CronFormatError: If the text is not a string or cannot be expressed for Kubernetes;
            the message quotes the input with ``repr()``.
    """
    if not isinstance(text, str):
        raise CronFormatError(
            f'unsupported frequency {text!r}: expected a string, got {type(text).__name__}'
        )
    try:
        return _cached_frequency_to_cron(text)
    except _Error as reason:
        raise CronFormatError(f'unsupported frequency {text!r}: {reason}') from None


# A pure function over a small vocabulary: every message of a key repeats its frequency.
_cached_frequency_to_cron = functools.lru_cache(maxsize=4096)(_frequency_to_cron)


# --------------------------------------------------------------------------------------------
# Names, labels and manifests.
# --------------------------------------------------------------------------------------------

MAX_CRONJOB_NAME_LENGTH = 52
_HASH_LENGTH = 10
_MAX_LABEL_VALUE_LENGTH = 63
_DNS_1123_LABEL = re.compile(r'[a-z0-9]([-a-z0-9]*[a-z0-9])?')
_APP_NAME = 'tsc-job'
_MANAGED_BY = 'tsc-orchestrator'
_ID_KEY_PREFIX = 'tsc.orchestrator/'


def _sanitize_for_name(value: str) -> str:
    return re.sub(r'[^a-z0-9]+', '-', value.lower()).strip('-')


def _label_value(value: str) -> str:
    """Turns an arbitrary id into a valid label value (possibly empty)."""
    cleaned = re.sub(r'[^A-Za-z0-9._-]+', '-', value)
    cleaned = re.sub(r'^[^A-Za-z0-9]+|[^A-Za-z0-9]+$', '', cleaned)
    cleaned = cleaned[:_MAX_LABEL_VALUE_LENGTH]
    return re.sub(r'[^A-Za-z0-9]+$', '', cleaned)


def _require_str(name: str, value: Any) -> str:
    # ValueError rather than TypeError: callers dead-letter bad records on ValueError.
    if not isinstance(value, str):
        raise ValueError(  # noqa: TRY004
            f'{name} must be a string, got {type(value).__name__}'
        )
    return value


def cronjob_name(customer_id: str, tsc_id: str) -> str:
    """Builds the deterministic CronJob name for a TSC.

    The name is ``tsc-<customer>-<tsc>`` from the sanitized ids, truncated, followed by
    ``-`` and 10 hex characters of a SHA-256 over the raw pair, so distinct pairs get
    distinct names even when they sanitize alike.

    Args:
        customer_id: The raw customer id.
        tsc_id: The raw TSC id.

    Returns:
        A DNS-1123 label starting with ``tsc-`` of at most 52 characters.

    Raises:
        ValueError: If either id is not a string.
    """
    _require_str('customer_id', customer_id)
    _require_str('tsc_id', tsc_id)
    parts = [part for part in (_sanitize_for_name(customer_id), _sanitize_for_name(tsc_id))
             if part]
    base = '-'.join(['tsc', *parts])
    base = base[:MAX_CRONJOB_NAME_LENGTH - _HASH_LENGTH - 1].rstrip('-')
    raw = json.dumps([customer_id, tsc_id], ensure_ascii=True).encode('utf-8')
    digest = hashlib.sha256(raw).hexdigest()[:_HASH_LENGTH]
    return f'{base}-{digest}'


def _labels(customer_id: str, tsc_id: str) -> dict[str, str]:
    return {
        'app.kubernetes.io/name': _APP_NAME,
        'app.kubernetes.io/managed-by': _MANAGED_BY,
        _ID_KEY_PREFIX + 'customer-id': _label_value(customer_id),
        _ID_KEY_PREFIX + 'tsc-id': _label_value(tsc_id),
    }


def _check_namespace(namespace: Any) -> str:
    _require_str('namespace', namespace)
    if len(namespace) > 63 or not _DNS_1123_LABEL.fullmatch(namespace):
        raise ValueError(f'namespace {namespace!r} is not a DNS-1123 label (at most 63 chars)')
    return namespace


def generate_cronjob_manifest(
    *,
    customer_id: str,
    tsc_id: str,
    schedule: str,
    namespace: str,
    image: str,
    time_zone: str | None = None,
    enabled: bool = True,
    parameters: dict | None = None,
) -> dict:
    """Builds the ``batch/v1`` CronJob manifest that runs one TSC.

    Args:
        customer_id: The raw customer id.
        tsc_id: The raw TSC id.
        schedule: The 5-field cron schedule (see ``frequency_to_cron``).
        namespace: The target namespace (a DNS-1123 label).
        image: The container image of the job.
        time_zone: IANA time zone for ``spec.timeZone``; omitted when None.
        enabled: False suspends the CronJob.
        parameters: Job parameters, passed as JSON in ``TSC_PARAMETERS``.

    Returns:
        The manifest as a plain dict.

    Raises:
        ValueError: If an argument is missing or malformed.
    """
    _require_str('customer_id', customer_id)
    _require_str('tsc_id', tsc_id)
    if not isinstance(schedule, str) or not schedule.strip():
        raise ValueError(f'schedule must be a non-empty string, got {schedule!r}')
    _check_namespace(namespace)
    if not isinstance(image, str) or not image.strip():
        raise ValueError(f'image must be a non-empty string, got {image!r}')
    if time_zone is not None and (not isinstance(time_zone, str) or not time_zone.strip()):
        raise ValueError(f'time_zone must be a non-empty string or None, got {time_zone!r}')
    if enabled is not True and enabled is not False:
        raise ValueError(f'enabled must be a bool, got {enabled!r}')
    if parameters is not None and not isinstance(parameters, dict):
        raise ValueError(f'parameters must be a dict or None, got {type(parameters).__name__}')
    try:
        parameters_json = json.dumps(
            parameters or {}, sort_keys=True, separators=(',', ':'), ensure_ascii=False
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f'parameters are not JSON-serializable: {error}') from error

    labels = _labels(customer_id, tsc_id)
    spec: dict[str, Any] = {'schedule': schedule}
    if time_zone is not None:
        spec['timeZone'] = time_zone
    spec.update({
        'suspend': not enabled,
        'concurrencyPolicy': 'Forbid',
        'successfulJobsHistoryLimit': 3,
        'failedJobsHistoryLimit': 1,
        'startingDeadlineSeconds': 300,
        'jobTemplate': {
            'spec': {
                'backoffLimit': 2,
                'template': {
                    'metadata': {'labels': dict(labels)},
                    'spec': {
                        'restartPolicy': 'Never',
                        'containers': [{
                            'name': _APP_NAME,
                            'image': image,
                            'env': [
                                {'name': 'TSC_CUSTOMER_ID', 'value': customer_id},
                                {'name': 'TSC_ID', 'value': tsc_id},
                                {'name': 'TSC_PARAMETERS', 'value': parameters_json},
                            ],
                        }],
                    },
                },
            },
        },
    })
    return {
        'apiVersion': 'batch/v1',
        'kind': 'CronJob',
        'metadata': {
            'name': cronjob_name(customer_id, tsc_id),
            'namespace': namespace,
            'labels': labels,
            'annotations': {
                _ID_KEY_PREFIX + 'customer-id': customer_id,
                _ID_KEY_PREFIX + 'tsc-id': tsc_id,
            },
        },
        'spec': spec,
    }


def generate_delete_manifest(*, customer_id: str, tsc_id: str, namespace: str) -> dict:
    """Builds the minimal manifest that identifies the CronJob of a TSC for deletion.

    Args:
        customer_id: The raw customer id.
        tsc_id: The raw TSC id.
        namespace: The namespace of the CronJob (a DNS-1123 label).

    Returns:
        ``{'apiVersion', 'kind', 'metadata': {'name', 'namespace'}}``.

    Raises:
        ValueError: If an id is not a string or the namespace is malformed.
    """
    _check_namespace(namespace)
    return {
        'apiVersion': 'batch/v1',
        'kind': 'CronJob',
        'metadata': {'name': cronjob_name(customer_id, tsc_id), 'namespace': namespace},
    }


_ACTIONS = ('apply', 'delete')


def create_job(
    *,
    action: str,
    operation: str,
    customer_id: str,
    tsc_id: str,
    config: dict | None,
    schedule: str | None,
    default_namespace: str,
    default_image: str,
) -> KafkaRecord:
    """Renders the Kafka record that asks the applier to apply or delete a TSC CronJob.

    Args:
        action: ``'apply'`` or ``'delete'``.
        operation: The source operation, copied to the ``operation`` header.
        customer_id: The raw customer id.
        tsc_id: The raw TSC id.
        config: The validated TSC configuration (required for ``'apply'``; may be None
            for ``'delete'``). Its ``namespace``, ``image``, ``timezone``, ``enabled`` and
            ``parameters`` override the defaults when set.
        schedule: The cron schedule (required for ``'apply'``).
        default_namespace: Namespace used when the config names none.
        default_image: Image used when the config names none.

    Returns:
        A KafkaRecord keyed ``<namespace>/<name>`` whose value is the YAML manifest and whose
        headers are ``action``, ``operation``, ``customerId`` and ``tscId``.

    Raises:
        ValueError: If the action is unknown or a required input is missing or malformed.
    """
    if action not in _ACTIONS:
        raise ValueError(f'action must be one of {_ACTIONS}, got {action!r}')
    _require_str('operation', operation)
    if config is not None and not isinstance(config, dict):
        raise ValueError(f'config must be a dict or None, got {type(config).__name__}')
    namespace = (config or {}).get('namespace') or default_namespace
    if action == 'apply':
        if config is None:
            raise ValueError("config is required for action 'apply'")
        if not schedule:
            raise ValueError("schedule is required for action 'apply'")
        enabled = config.get('enabled')
        manifest = generate_cronjob_manifest(
            customer_id=customer_id,
            tsc_id=tsc_id,
            schedule=schedule,
            namespace=namespace,
            image=config.get('image') or default_image,
            time_zone=config.get('timezone') or None,
            enabled=True if enabled is None else enabled,
            parameters=config.get('parameters'),
        )
    else:
        manifest = generate_delete_manifest(
            customer_id=customer_id, tsc_id=tsc_id, namespace=namespace
        )
    value = yaml.dump(
        manifest, Dumper=_SAFE_DUMPER, sort_keys=False, default_flow_style=False,
        allow_unicode=True,
    ).encode('utf-8')
    key = f'{namespace}/{manifest["metadata"]["name"]}'.encode()
    headers = tuple(
        (name, header.encode('utf-8'))
        for name, header in (
            ('action', action),
            ('operation', operation),
            ('customerId', customer_id),
            ('tscId', tsc_id),
        )
    )
    return KafkaRecord(key=key, value=value, headers=headers)


class _RenderBatchFn(beam.DoFn):
    """Renders the job record of each applied message; superseded ones get none."""

    def __init__(self, job_actions: dict[str, str], default_namespace: str, default_image: str):
        self._job_actions = dict(job_actions)
        self._default_namespace = default_namespace
        self._default_image = default_image
        self._jobs = Metrics.counter('orchestrator', 'jobs')
        self._dead = Metrics.counter('orchestrator', 'dead_letters_render')

    def process(self, batch: list[Message]):
        rendered = []
        for message in batch:
            if not message.superseded:
                try:
                    message.job = create_job(
                        action=self._job_actions[message.operation],
                        operation=message.operation, customer_id=message.customer_id,
                        tsc_id=message.tsc_id, config=message.config,
                        schedule=message.cron_schedule,
                        default_namespace=self._default_namespace,
                        default_image=self._default_image)
                except (ValueError, KeyError) as e:
                    self._dead.inc()
                    _LOGGER.warning('dead letter at render for %s:%s@%s: %s',
                                    message.source.topic, message.source.partition,
                                    message.source.offset, e)
                    yield beam.pvalue.TaggedOutput(
                        RenderCronJobs.DEAD_LETTERS, dead_letter(message.source, 'render', e))
                    continue
                self._jobs.inc()
                yield beam.pvalue.TaggedOutput(RenderCronJobs.JOBS, message.job)
            rendered.append(message)
        if rendered:
            yield rendered


class RenderCronJobs(beam.PTransform):
    """Renders a Kubernetes CronJob job record for each message that changed a TSC.

    Takes batches of upserted messages and returns the batches (for archiving),
    ``jobs`` (``KafkaRecord`` keyed ``<namespace>/<name>`` with the manifest YAML)
    and ``dead_letters`` at stage ``render``.

    Args:
        job_actions: Operation → ``apply`` or ``delete``.
        default_namespace: Namespace when the configuration names none.
        default_image: Image when the configuration names none.
    """

    JOBS = 'jobs'
    DEAD_LETTERS = 'dead_letters'

    def __init__(self, job_actions: dict[str, str], default_namespace: str, default_image: str):
        super().__init__()
        bad = {action for action in job_actions.values() if action not in ('apply', 'delete')}
        if bad:
            raise ValueError(f'job actions must be apply or delete, got {sorted(bad)}')
        try:
            _check_namespace(default_namespace)
        except ValueError as e:
            raise ValueError(f'--job_namespace: {e}') from e
        if not default_image:
            raise ValueError('--job_image must not be empty')
        self._job_actions = dict(job_actions)
        self._default_namespace = default_namespace
        self._default_image = default_image

    def expand(self, batches):
        return with_safety_net(batches, 'RenderBatch', 'render', 'batches', _RenderBatchFn(
            self._job_actions, self._default_namespace, self._default_image), self.JOBS)
