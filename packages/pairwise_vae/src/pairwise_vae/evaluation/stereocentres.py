"""Stereocentres of a chiral model's output: does each keep the configuration of the training data?

The losses cannot tell a conformation from its mirror image, so the parity rule
(:mod:`pairwise_vae.model.parity`) reflects a whole sample where most of its stereocentres disagree
with the training data. The rule chooses one hand for the whole sample: a sample whose
stereocentres disagree among themselves (an L-peptide with one D-residue) keeps the odd ones
after it. The fraction of frames with every stereocentre in the training configuration thus
measures the model, not the rule; the fraction per centre shows which centres it inverts.
"""

from __future__ import annotations

import numpy as np
import torch

from pairwise_vae.data.records import Topology
from pairwise_vae.geometry import signed_volumes
from pairwise_vae.model.parity import ParityRule, atom_label


def stereocentre_agreement(coords: np.ndarray, rule: ParityRule) -> dict:
    """How the stereocentres of an ensemble compare with the training data's configuration.

    Args:
        coords: (F, N, 3) conformations, Angstrom.
        rule: a ``chiral`` parity rule (its centres and the training data's signs).

    Returns:
        ``per_centre``: (S,) fraction of frames where each centre's signed volume has the training
        sign; ``all_kept``: fraction of frames where every centre has it; ``inverted_per_frame``:
        mean number of centres per frame with the other sign (a volume of exactly 0 counts as inverted).
    """
    volumes = signed_volumes(torch.from_numpy(np.asarray(coords, dtype=np.float64)), rule.centres)
    kept = (torch.sign(volumes) == rule.signs.to(volumes)).numpy()
    return {
        "per_centre": kept.mean(axis=0).tolist(),
        "all_kept": float(kept.all(axis=1).mean()),
        "inverted_per_frame": float((~kept).sum(axis=1).mean()),
    }


def stereocentre_report(rule: ParityRule, topology: Topology, ensembles: dict[str, np.ndarray | None]) -> dict | None:
    """The ``stereocentres`` entry of an evaluation report: the centres' names and
    :func:`stereocentre_agreement` of each ensemble given (name -> (F, N, 3) Angstrom, None skipped);
    None unless the rule is ``chiral``."""
    if rule.mode != "chiral":
        return None
    report: dict = {"centres": [atom_label(topology, int(atom)) for atom in rule.centres[:, 0]]}
    for name, coords in ensembles.items():
        if coords is not None:
            report[name] = stereocentre_agreement(coords, rule)
    return report
