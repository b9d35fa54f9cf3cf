"""One-class ensemble: nine anomaly detectors fitted on real images only, combined by a weighted vote.

Importing this package registers the ``one-class-ensemble`` detector family, the shared features
and the nine members, in the model card's order.
"""

# the import order is the registration order, which is the model card's
# isort: off
from worker.detectors.ensemble import texture  # noqa: F401  (registers the texture and patch features)
from worker.detectors.ensemble import vae, flow, svdd  # noqa: F401  (members 1-3)
from worker.detectors.ensemble import classical  # noqa: F401  (members 4-9)
from worker.detectors.ensemble import lite_knn  # noqa: F401  (opt-in: pretrained-backbone features)
# isort: on
from worker.detectors.ensemble.detector import OneClassEnsemble
from worker.detectors.ensemble.members import member_class, member_names, parse_members

__all__ = ["OneClassEnsemble", "member_class", "member_names", "parse_members"]
