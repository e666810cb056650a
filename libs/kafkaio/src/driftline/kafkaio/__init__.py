"""aiokafka helpers: JSON values, W3C trace-context headers, topic provisioning, retries.

Producing injects the active span's ``traceparent`` into the record headers;
consuming extracts it again so the next hop continues the same trace.
"""

from driftline.kafkaio.batching import OutRecord, RecordBatch, batch_records, send_batched
from driftline.kafkaio.clients import (
    encode_value,
    group_session,
    make_consumer,
    make_producer,
    read_from_start,
    send_model,
    wait_for_kafka,
)
from driftline.kafkaio.leadership import (
    Leadership,
    assign_to_holder,
    first_done,
    work_while_held,
)
from driftline.kafkaio.provision import provision_topics
from driftline.kafkaio.record_faults import (
    RECORD_KAFKA_ERRORS,
    is_record_fault,
    unreadable_detail,
)
from driftline.kafkaio.retry import backoff, delay_before, of_the_world, retry_io
from driftline.kafkaio.tracing import context_from_headers, headers_from_context, traceparent_of

__all__ = [
    "RECORD_KAFKA_ERRORS",
    "Leadership",
    "OutRecord",
    "RecordBatch",
    "assign_to_holder",
    "backoff",
    "batch_records",
    "context_from_headers",
    "delay_before",
    "encode_value",
    "first_done",
    "group_session",
    "headers_from_context",
    "is_record_fault",
    "make_consumer",
    "make_producer",
    "of_the_world",
    "provision_topics",
    "read_from_start",
    "retry_io",
    "send_batched",
    "send_model",
    "traceparent_of",
    "unreadable_detail",
    "wait_for_kafka",
    "work_while_held",
]
