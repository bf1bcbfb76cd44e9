"""setup_logger: one log format for the launcher and the workers."""

from __future__ import annotations

import logging
import sys

_FORMAT = '%(asctime)s %(levelname)s %(name)s: %(message)s'
# Chatty at INFO, and impyla logs the password of a PLAIN/LDAP connection at DEBUG:
# these stay at WARNING whatever --log_level says.
_QUIET = ('apache_beam', 'urllib3', 'impala', 'thrift', 'kafka')


def setup_logger(level: str = 'INFO') -> logging.Logger:
    """Configures the root logger once and returns it."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f'--log_level must be DEBUG, INFO, WARNING or ERROR, got {level!r}')
    root = logging.getLogger()
    # Replace handlers a library installed with basicConfig, so each line is printed once.
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    return root
