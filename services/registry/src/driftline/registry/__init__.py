"""The Driftline model registry service.

The ``driftline.models`` topic is the source of truth: :mod:`.state` rebuilds
everything from it; :mod:`.core` turns requests into events; :mod:`.grpc_api`
and :mod:`.event_log` are the thin gRPC and Kafka edges; :mod:`.service` wires
them.  The API types, their protobuf converters and the promotion policy live in
:mod:`driftline.registry_api`, the contract library this service and its clients share,
so that a client never imports the service (nor the service a client).
"""
