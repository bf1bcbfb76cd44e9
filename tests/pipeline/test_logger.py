"""setup_logger: one handler, the chosen level, noisy libraries kept at WARNING."""

import logging

import pytest

from pipeline.logger import setup_logger


def test_debug_level_keeps_impyla_quiet_so_it_cannot_log_passwords():
    root = setup_logger('debug')
    assert root.level == logging.DEBUG
    assert len(root.handlers) == 1
    # impyla logs the PLAIN password at DEBUG in get_transport.
    assert not logging.getLogger('impala._thrift_api').isEnabledFor(logging.DEBUG)
    assert not logging.getLogger('apache_beam').isEnabledFor(logging.INFO)
    setup_logger('INFO')
    assert len(logging.getLogger().handlers) == 1


def test_bad_level_is_refused():
    with pytest.raises(ValueError, match='--log_level'):
        setup_logger('LOUD')
