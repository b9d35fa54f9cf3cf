"""The scikit-learn members: one-class SVM, isolation forest, LOF, Gaussian mixture, two Mahalanobis models.

Each is a pipeline over named features, saved with skops. Loading names the few non-default types
these pipelines contain; anything else in the file (a tampered or foreign object) is refused,
because a pickle-like load of an arbitrary object can run code.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from fakescan.errors import DetectorError
from worker.detectors.ensemble.features import FeatureBank
from worker.detectors.ensemble.members import FitContext, Member, register_member

# Types skops does not trust by default that our fitted pipelines legitimately contain.
TRUSTED_SKOPS_TYPES = [
    "sklearn.tree._tree.Tree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
]


def load_skops(path: Path) -> Any:
    import skops.io as sio
    from sklearn.pipeline import Pipeline

    try:
        untrusted = sio.get_untrusted_types(file=path)
        refused = sorted(set(untrusted) - set(TRUSTED_SKOPS_TYPES))
        if refused:
            raise DetectorError(f"refusing {path.name}: it contains types this ensemble never writes: "
                                f"{', '.join(refused)}")
        model = sio.load(path, trusted=TRUSTED_SKOPS_TYPES)
    except DetectorError:
        raise
    except Exception as error:  # a truncated file, a plain pickle, not a zip at all ...
        raise DetectorError(f"cannot load {path.name}: not a readable skops file ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if not isinstance(model, Pipeline):
        raise DetectorError(f"refusing {path.name}: expected a scikit-learn Pipeline, found {type(model).__name__}")
    return model


class SklearnMember(Member):
    """A scikit-learn pipeline over the concatenation of ``features``."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.model: Any = None

    @abstractmethod
    def build(self, context: FitContext, n_samples: int) -> Any:
        """The unfitted scikit-learn estimator or pipeline of this member."""

    def raw_score(self, inputs: np.ndarray) -> np.ndarray:
        return -self.model.score_samples(inputs)

    def fit(self, bank: FeatureBank, context: FitContext) -> None:
        inputs = self.inputs(bank)
        self.model = self.build(context, len(inputs)).fit(inputs)

    def score(self, bank: FeatureBank) -> np.ndarray:
        return np.asarray(self.raw_score(self.inputs(bank)), dtype=np.float64)

    def save(self, folder: Path) -> list[str]:
        import skops.io as sio

        name = f"{self.name}.skops"
        sio.dump(self.model, folder / name)
        return [name]

    @classmethod
    def load(cls, folder: Path, config: dict[str, Any], device: str) -> "SklearnMember":
        member = cls(config)
        member.model = load_skops(folder / f"{cls.name}.skops")
        return member


@register_member("texture-ocsvm")
class TextureOneClassSVM(SklearnMember):
    features = ("texture",)
    summary = "one-class SVM (RBF, nu=0.03) over whitened LBP and co-occurrence texture"

    def build(self, context: FitContext, n_samples: int) -> Any:
        from sklearn.decomposition import PCA
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import OneClassSVM

        # whitened inputs have unit variance in every direction, so one RBF width fits all of them;
        # 0.5 keeps the boundary local enough to follow the real images' curved texture manifold
        return make_pipeline(StandardScaler(), PCA(n_components=0.99, whiten=True, random_state=context.seed),
                             OneClassSVM(kernel="rbf", nu=0.03, gamma=0.5))


@register_member("isolation-forest")
class FrequencySpatialIsolationForest(SklearnMember):
    features = ("fft_multiscale", "residual_stats")
    summary = "isolation forest, 200 trees, over frequency and spatial residual features"

    def build(self, context: FitContext, n_samples: int) -> Any:
        from sklearn.ensemble import IsolationForest
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), IsolationForest(n_estimators=200, random_state=context.seed))


@register_member("patch-lof")
class PatchLocalOutlierFactor(SklearnMember):
    features = ("patches", "residual_stats")
    summary = "local outlier factor (novelty mode, 20 neighbours) over multi-scale patch and residual statistics"

    def build(self, context: FitContext, n_samples: int) -> Any:
        from sklearn.neighbors import LocalOutlierFactor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LocalOutlierFactor(n_neighbors=20, novelty=True))


@register_member("colour-gmm")
class ColourGaussianMixture(SklearnMember):
    features = ("colour",)
    summary = "Gaussian mixture, 10 full-covariance components, over colour distribution features"

    def build(self, context: FitContext, n_samples: int) -> Any:
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        # the 8-bin histograms sum to one, so their raw covariance is singular: PCA drops that direction
        components = min(10, max(1, n_samples // 20))
        return make_pipeline(StandardScaler(), PCA(n_components=0.99, random_state=context.seed),
                             GaussianMixture(components, covariance_type="full", reg_covar=1e-3,
                                             random_state=context.seed))


class MahalanobisMember(SklearnMember):
    """Distance to the real images' mean under a shrunk (Ledoit-Wolf) covariance."""

    def build(self, context: FitContext, n_samples: int) -> Any:
        from sklearn.covariance import LedoitWolf
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LedoitWolf())

    def raw_score(self, inputs: np.ndarray) -> np.ndarray:
        return np.sqrt(self.model[-1].mahalanobis(self.model[:-1].transform(inputs)))


@register_member("colour-mahalanobis")
class ColourDistribution(MahalanobisMember):
    features = ("colour",)
    summary = "RGB histograms and colour moments, Mahalanobis distance"


@register_member("edge-colour-stats")
class EdgeColourStatistics(MahalanobisMember):
    features = ("edges_multiscale", "residual_stats", "colour")
    summary = "multi-scale Sobel edge, residual and colour statistics, Mahalanobis distance"
