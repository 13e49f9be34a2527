"""Classifier two-sample tests (C2ST; Lopez-Paz & Oquab, ICLR 2017) of conformation ensembles.

A classifier learns to tell samples from reference frames on per-frame features; its
cross-validated ROC AUC measures how distinguishable the two ensembles are: 0.5 when they are
indistinguishable, 1 when every frame is told apart. Two feature sets:

* ``backbone_torsions``: sin and cos of every backbone phi and psi (peptides only);
* ``local_geometry``: every bond length (Angstrom) and bond angle (degrees).

The default classifier is scikit-learn's HistGradientBoostingClassifier: trees see differences in
the width and shape of a distribution and interactions between features, which a linear model
on these features misses (with 0.03 Angstrom of noise on the coordinates of 2,000 AIB9 frames
against 2,000 clean ones: local-geometry AUC 0.99, logistic regression 0.85), need no feature
scaling, accept the NaN of a degenerate angle, and fit a few thousand frames in a fraction of a
second (``BOOSTING_ROUNDS``, ``BOOSTING_BINS``). A pure shift of basin populations moves the means
of sin and cos, which logistic regression detects about as well or slightly better (right-handed
frames twice as likely: AUC 0.56 against 0.53, best possible 0.58). ``classifier="logistic"``
(standardised features, L2 logistic regression) is that linear alternative.

Finite, time-correlated reference sets are themselves distinguishable from independent draws of
the same distribution, so read an AUC against its matched floor (:func:`c2st_floors`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from bond_vae.bond_graph import angle_triplets
from bond_vae.data.records import Topology
from bond_vae.evaluation.floors import FLOOR_REPEATS, FLOOR_SEED, MatchedFloor, matched_floors
from bond_vae.evaluation.metrics import bond_angles, dihedrals, find_backbone

C2ST_FOLDS = 5
C2ST_SEED = 0
CLASSIFIERS = ("gradient_boosting", "logistic")
# half scikit-learn's 100 rounds and a quarter of its 255 bins: on AIB9 (2,000 frames a class) the
# same AUCs to within 0.01 on helix-population, torsion and bond-length shifts, at a quarter of the time
BOOSTING_ROUNDS = 50
BOOSTING_BINS = 63


def torsion_features(coords: np.ndarray, topology: Topology) -> np.ndarray | None:
    """sin and cos of the backbone phi and psi of every residue that has both.

    Args:
        coords: (F, N, 3) conformations, Angstrom.
        topology: the molecule.

    Returns:
        (F, 4 R) features [sin phi, sin psi, cos phi, cos psi] for R residues; None for a molecule
        without backbone phi and psi.
    """
    backbone = find_backbone(topology)
    if backbone is None:
        return None
    angles = np.radians(np.concatenate([dihedrals(coords, backbone.phi), dihedrals(coords, backbone.psi)], axis=1))
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def local_geometry_features(coords: np.ndarray, topology: Topology) -> np.ndarray | None:
    """Every bond length and bond angle.

    Args:
        coords: (F, N, 3) conformations, Angstrom.
        topology: the molecule.

    Returns:
        (F, n_bonds + n_angles) bond lengths in Angstrom then bond angles in degrees; None for a
        molecule without bonds.
    """
    bonds = topology.bonds
    if len(bonds) == 0:
        return None
    lengths = np.linalg.norm(coords[:, bonds[:, 0]] - coords[:, bonds[:, 1]], axis=-1)
    return np.concatenate([lengths, bond_angles(coords, angle_triplets(bonds, topology.n_atoms))], axis=1)


# the feature sets in words, for the report
TWO_SAMPLE_FEATURES = {
    "backbone_torsions": "backbone torsions (sin, cos of every phi, psi)",
    "local_geometry": "local geometry (bond lengths and angles)",
}
# the feature sets in words, for the report
TWO_SAMPLE_FEATURES = {
    "backbone_torsions": "backbone torsions (sin, cos of every phi, psi)",
    "local_geometry": "local geometry (bond lengths and angles)",
}
FEATURE_SETS: dict[str, Callable[[np.ndarray, Topology], np.ndarray | None]] = {
    "backbone_torsions": torsion_features,
    "local_geometry": local_geometry_features,
}


@dataclass
class C2STResult:
    """Cross-validated ROC AUC of a classifier telling two sets of frames apart (:func:`c2st`).

    ``auc`` is the mean over folds of the held-out AUC, ``auc_fold_std`` its standard deviation
    over folds; ``per_class`` frames of each set were used (the larger set subsampled to the
    smaller). Time-correlated MD frames make ``auc`` scatter more than independent frames would
    (random halves of AIB9, 600 frames a class: standard deviation about 0.03 against 0.017).
    """

    auc: float
    auc_fold_std: float
    fold_aucs: list[float]
    per_class: int
    n_features: int
    folds: int
    classifier: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def make_classifier(name: str, seed: int) -> ClassifierMixin:
    """A fresh classifier by name (one of ``CLASSIFIERS``), seeded where it draws random numbers."""
    if name == "gradient_boosting":
        return HistGradientBoostingClassifier(max_iter=BOOSTING_ROUNDS, max_bins=BOOSTING_BINS, random_state=seed)
    if name == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    raise ValueError(f"unknown classifier {name!r}; choose one of {CLASSIFIERS}")


def c2st(
    first: np.ndarray,
    second: np.ndarray,
    folds: int = C2ST_FOLDS,
    seed: int = C2ST_SEED,
    classifier: str = "gradient_boosting",
) -> C2STResult:
    """Classifier two-sample test of two sets of feature vectors.

    The larger set is subsampled (seeded, without replacement) to the size of the smaller, so the
    classes balance and an AUC of 0.5 means chance; the balanced frames are split into ``folds``
    stratified, shuffled folds (fewer when a class has fewer frames), and the classifier trained
    on the others scores each fold. The fits run on one thread: a few thousand frames gain little
    from more, and on a busy machine OpenMP threads that wait on each other cost far more CPU.

    Args:
        first: (F1, D) features, e.g. of samples.
        second: (F2, D) features, e.g. of reference frames.
        folds: cross-validation folds.
        seed: seed of the subsampling, the fold split and the classifier.
        classifier: one of ``CLASSIFIERS``.

    Returns:
        The :class:`C2STResult`.
    """
    per_class = min(len(first), len(second))
    if per_class < 2:
        raise ValueError(f"c2st needs at least 2 frames in each set, got {len(first)} and {len(second)}")
    rng = np.random.default_rng(seed)
    first = first[np.sort(rng.choice(len(first), per_class, replace=False))]
    second = second[np.sort(rng.choice(len(second), per_class, replace=False))]
    features = np.concatenate([first, second])
    labels = np.repeat([0, 1], per_class)
    n_folds = min(folds, per_class)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    aucs = []
    with threadpool_limits(limits=1):
        for train, held_out in splitter.split(features, labels):
            model = make_classifier(classifier, seed).fit(features[train], labels[train])
            aucs.append(float(roc_auc_score(labels[held_out], model.predict_proba(features[held_out])[:, 1])))
    return C2STResult(
        auc=float(np.mean(aucs)),
        auc_fold_std=float(np.std(aucs)),
        fold_aucs=aucs,
        per_class=per_class,
        n_features=features.shape[1],
        folds=n_folds,
        classifier=classifier,
    )


def c2st_ensembles(
    samples: np.ndarray,
    reference: np.ndarray,
    topology: Topology,
    folds: int = C2ST_FOLDS,
    seed: int = C2ST_SEED,
    classifier: str = "gradient_boosting",
) -> dict[str, C2STResult | None]:
    """:func:`c2st` of samples against reference frames on each of ``FEATURE_SETS``.

    Args:
        samples: (S, N, 3) conformations, Angstrom.
        reference: (R, N, 3) reference conformations, Angstrom.
        topology: the molecule.
        folds, seed, classifier: as for :func:`c2st`.

    Returns:
        Per feature-set name its :class:`C2STResult`, None where the molecule lacks the features
        (no backbone: ``backbone_torsions``).
    """
    results: dict[str, C2STResult | None] = {}
    for name, featurize in FEATURE_SETS.items():
        sample_features, reference_features = featurize(samples, topology), featurize(reference, topology)
        results[name] = (
            None
            if sample_features is None or reference_features is None
            else c2st(sample_features, reference_features, folds, seed, classifier)
        )
    return results


def c2st_floors(
    pool: np.ndarray,
    reference: np.ndarray,
    topology: Topology,
    n_samples: int,
    n_reference: int,
    repeats: int = FLOOR_REPEATS,
    seed: int = FLOOR_SEED,
    folds: int = C2ST_FOLDS,
    classifier: str = "gradient_boosting",
) -> dict[str, MatchedFloor | None]:
    """The matched floors (:func:`matched_floors`) of the AUCs of :func:`c2st_ensembles`: held-out MD
    frames subsampled to ``n_samples`` against the reference subsampled to ``n_reference``.

    Args:
        pool: (P, N, 3) held-out MD frames, unseen in training and disjoint from the reference, Angstrom.
        reference: (R, N, 3) the reference the samples were tested against, Angstrom.
        topology: the molecule.
        n_samples: number of samples in the model's test.
        n_reference: number of reference frames in the model's test.
        repeats: draws of the subsets (each costs one C2ST per feature set).
        seed: seed of the draws.
        folds, classifier: as for :func:`c2st` (whose seed stays its default, as in the model's test).

    Returns:
        Per feature-set name the floor of the AUC, None where the molecule lacks the features.
    """
    floors: dict[str, MatchedFloor | None] = {}
    for name, featurize in FEATURE_SETS.items():
        pool_features, reference_features = featurize(pool, topology), featurize(reference, topology)
        floors[name] = (
            None
            if pool_features is None or reference_features is None
            else matched_floors(
                lambda a, b: {"auc": c2st(a, b, folds, C2ST_SEED, classifier).auc},
                pool_features,
                reference_features,
                n_samples,
                n_reference,
                repeats,
                seed,
            )["auc"]
        )
    return floors
