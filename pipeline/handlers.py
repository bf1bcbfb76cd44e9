"""OPERATION_HANDLERS: what each requested operation does at each stage."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class OperationHandler:
    """How the stages treat one operation.

    Attributes:
        needs_config: The TSC configuration is fetched and validated.
        deletes: The warehouse row is deleted instead of upserted.
        job_action: The ``action`` header of the job record (``apply`` or ``delete``).
    """

    needs_config: bool
    deletes: bool
    job_action: str


OPERATION_HANDLERS: dict[str, OperationHandler] = {
    'create': OperationHandler(needs_config=True, deletes=False, job_action='apply'),
    'update': OperationHandler(needs_config=True, deletes=False, job_action='apply'),
    'delete': OperationHandler(needs_config=False, deletes=True, job_action='delete'),
}


def operations() -> tuple[str, ...]:
    return tuple(OPERATION_HANDLERS)


def config_operations() -> tuple[str, ...]:
    return tuple(name for name, handler in OPERATION_HANDLERS.items() if handler.needs_config)


def delete_operations() -> tuple[str, ...]:
    return tuple(name for name, handler in OPERATION_HANDLERS.items() if handler.deletes)


def job_actions() -> dict[str, str]:
    return {name: handler.job_action for name, handler in OPERATION_HANDLERS.items()}
