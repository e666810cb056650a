"""The model registry's contract, imported by the registry service and by every client.

* :mod:`driftline.registry_api.models` — what the registry hands back, as typed pydantic
  models (versions, summaries, alias changes, artifact metadata, unserved retrains).
* :mod:`driftline.registry_api.convert` — ``driftline.v1`` registry messages ↔ those
  models; the service and the clients share it so both sides agree on one mapping.
* :mod:`driftline.registry_api.promotion` — the promotion policy, a pure function: the
  caller of ``SetAlias`` (training) decides with the same rule the registry applies.

It lives apart from the service and from :mod:`driftline.registry_client`, so a client
does not depend on the server and the server does not depend on a client.  Errors are the
shared :mod:`driftline.contracts.errors`, mapped to gRPC statuses by
:mod:`driftline.edge.errors`.
"""

from driftline.registry_api.models import (
    ALIASES,
    SKLEARN_INPUT_TAG,
    AliasChange,
    AliasChangeKind,
    ArtifactMetadata,
    ModelSummary,
    ModelVersionInfo,
    ParamValue,
    UnservedRetrain,
    VersionStatus,
    WriterClaim,
    WriterLease,
)
from driftline.registry_api.promotion import (
    LOWER_IS_BETTER,
    Decision,
    PromotionPolicy,
    decide_promotion,
    higher_is_better,
)

__all__ = [
    "ALIASES",
    "LOWER_IS_BETTER",
    "SKLEARN_INPUT_TAG",
    "AliasChange",
    "AliasChangeKind",
    "ArtifactMetadata",
    "Decision",
    "ModelSummary",
    "ModelVersionInfo",
    "ParamValue",
    "PromotionPolicy",
    "UnservedRetrain",
    "VersionStatus",
    "WriterClaim",
    "WriterLease",
    "decide_promotion",
    "higher_is_better",
]
