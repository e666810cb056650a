"""The gRPC edge that every Driftline server and client shares.

* :mod:`driftline.edge.server` — :class:`~driftline.edge.server.ServerEdge`, the one
  wrapper of servicer methods: it continues the caller's trace, refuses a call whose
  deadline has passed, runs the servicer's authorization hook, maps a
  :class:`~driftline.contracts.errors.DriftlineError` to its status and message, and
  records the server span and the service's RPC metric.
* :mod:`driftline.edge.errors` — a Driftline error ↔ a gRPC status, both directions
  (servers answer with :func:`~driftline.edge.errors.status_code_of`; clients turn a
  failed call back into an error with :class:`~driftline.edge.errors.RpcErrors`).
* :mod:`driftline.edge.values` — Python scalars ↔ ``driftline.v1.Value``.

The submodules are imported by name: a client that only converts values does not
load the server side (and its tracing).
"""
