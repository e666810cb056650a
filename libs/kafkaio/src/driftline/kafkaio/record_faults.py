"""Is it the record or the world?  The one place consumers ask before retrying.

A consumer that retries an error one record causes retries forever: the
partition stalls behind a poison pill.  One that skips an error the world causes
(broker, Redis or registry down) loses records.  So every consumer sorts a
failure with :func:`is_record_fault`: record faults are isolated (the batch is
split to find the record, which is dead-lettered or skipped), everything else
is retried with a back-off and watched for a stall.

>>> from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
>>> is_record_fault(MessageSizeTooLargeError("too big")), is_record_fault(KafkaConnectionError())
(True, False)
>>> is_record_fault(TypeError("'<' not supported between instances of 'int' and 'str'"))
True
"""

from __future__ import annotations

from aiokafka.errors import (
    CorruptRecordException,
    InvalidMessageError,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from pydantic import ValidationError

from driftline.contracts.errors import DriftlineError

__all__ = ["RECORD_KAFKA_ERRORS", "is_record_fault", "unreadable_detail"]

RECORD_KAFKA_ERRORS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidMessageError,
    InvalidTimestampError,
)
"""Kafka errors that the records being written cause: writing them again fails again."""


def is_record_fault(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the records at hand (retrying the same ones cannot help).

    * the Kafka errors of :data:`RECORD_KAFKA_ERRORS`: yes;
    * any other Kafka error (unreachable broker, timeout, leader moved, even
      authorization: the operator fixes those, not the record): no;
    * a :class:`DriftlineError`: yes unless it says it is retriable;
    * ``OSError`` / ``TimeoutError`` and other I/O (Redis, sockets): no;
    * anything else (``TypeError``, ``ValueError``, ``OverflowError`` … raised while
      processing a record): yes, the record exercised a path that cannot take it.
    """
    if isinstance(exc, RECORD_KAFKA_ERRORS):
        return True
    if isinstance(exc, KafkaError):
        return False
    if isinstance(exc, DriftlineError):
        return not exc.retriable
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return False
    module = type(exc).__module__
    # Redis client errors are I/O whatever their class (connection, timeout, busy).
    return not module.startswith("redis")


def unreadable_detail(value: bytes | None, exc: ValidationError) -> str:
    """Why a record's value is not its topic's model, in one line, for a skip's log line.

    >>> from driftline.contracts.messages import ValidLabel
    >>> try:
    ...     ValidLabel.model_validate_json(b'{"event_id": "e-1"}')
    ... except ValidationError as exc:
    ...     unreadable_detail(b"...", exc)
    'not a ValidLabel: entity_id: Field required (and 3 more)'
    """
    if value is None:
        return "a null value (tombstone)"
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return str(exc).splitlines()[0]
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "the value"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"not a {exc.title}: {where}: {first['msg']}{more}"
