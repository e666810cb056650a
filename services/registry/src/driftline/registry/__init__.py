"""The Driftline model registry service.

The ``driftline.models`` topic is the source of truth: :mod:`.state` rebuilds
everything from it; :mod:`.core` turns requests into events; :mod:`.grpc_api`
and :mod:`.event_log` are the thin gRPC and Kafka edges; :mod:`.service` wires
them.  The promotion policy lives in :mod:`driftline.registry_client.promotion`
(re-exported by :mod:`.core`) so that its callers can import it without this service.
"""
