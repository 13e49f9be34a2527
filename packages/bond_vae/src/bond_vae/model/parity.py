"""Mirror images: in which handedness the model's output is shown.

The losses (bond lengths, KL) cannot tell a structure from its mirror image, so the decoder
returns some conformation or its mirror image. A :class:`ParityRule`, decided once from the
training frames (:func:`decide_parity`, flag ``--parity``) and recorded in the checkpoint,
chooses between the two wherever output is shown:

* ``mirror-symmetric``: the molecule has no stereocentres, so its ensemble holds each
  conformation and its mirror image alike; each prior sample is reflected with probability 1/2;
* ``chiral``: the training frames keep the sign of some stereocentres; a prior sample is
  reflected when most of its stereocentres disagree with the data's signs;
* ``none``: the decoder's raw output (``--parity none``, and checkpoints older than the rule).

Under either of the first two, a reconstruction takes the handedness of its input and an
interpolation path that of its first input frame, then of each previous frame. Reflection
through the centroid (x -> -x for centred coordinates) changes no distance and flips the sign
of every signed volume: it flips parity exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bond_vae.bond_graph import atoms_beyond, neighbour_lists, torsion_quadruplets
from bond_vae.config import ConfigError
from bond_vae.data.records import Topology
from bond_vae.geometry import signed_volumes

PARITY_CHOICES = ("auto", "mirror-symmetric", "chiral", "none")
PARITY_MODES = ("mirror-symmetric", "chiral", "none")
# a centre is a stereocentre when its signed volume keeps one sign in at least this fraction of the frames
STEREO_AGREEMENT = 0.98


@dataclass(frozen=True, eq=False)
class ParityRule:
    """How output is oriented (see the module docstring).

    ``mode``: one of ``PARITY_MODES``; ``centres``: (S, 4) long, each stereocentre's atom then
    its first three bonded neighbours (by index); ``signs``: (S,) the data's sign (+1.0 or
    -1.0) of each stereocentre's signed volume (empty unless ``chiral``); ``reason``: why this
    mode, in words.
    """

    mode: str = "none"
    centres: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.long))
    signs: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    reason: str = "the decoder's raw output, in either handedness"

    def summary(self) -> str:
        """One line: ``parity: <mode> (<reason>)``."""
        return f"parity: {self.mode} ({self.reason})"

    def to_record(self) -> dict[str, Any]:
        """The rule as a checkpoint stores it (``torch.load(weights_only=True)`` reads it)."""
        return {"mode": self.mode, "centres": self.centres.cpu(), "signs": self.signs.cpu(), "reason": self.reason}

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> ParityRule:
        """Inverse of :meth:`to_record`; ``None`` (a checkpoint written before parity rules) gives ``none``."""
        if record is None:
            return cls(reason="the checkpoint records no parity rule: the decoder's raw output")
        if record["mode"] not in PARITY_MODES:
            raise ValueError(f"unknown parity mode {record['mode']!r}")
        return cls(record["mode"], record["centres"].long(), record["signs"].float(), record["reason"])


def atom_classes(atomic_numbers: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """Topological classes of the atoms: Weisfeiler-Lehman colour refinement of the element-labelled bond graph.

    Atoms in one class are indistinguishable by element and bonding pattern (the two methyl
    carbons of an Aib residue, say).

    Args:
        atomic_numbers: (N,) atomic numbers.
        bonds: (n_bonds, 2) atom indices.

    Returns:
        (N,) int64 class labels.
    """
    neighbours = neighbour_lists(bonds, len(atomic_numbers))
    colours = relabel([int(z) for z in atomic_numbers])
    while True:
        refined = relabel(
            [(colours[i], tuple(sorted(colours[j] for j in around))) for i, around in enumerate(neighbours)]
        )
        if len(set(refined)) == len(set(colours)):
            return np.array(refined, dtype=np.int64)
        colours = refined


def relabel(signatures: list) -> list[int]:
    """Replace each signature by the rank of its value among the distinct ones."""
    ranks = {signature: rank for rank, signature in enumerate(sorted(set(signatures)))}
    return [ranks[signature] for signature in signatures]


def find_stereocentres(coords: torch.Tensor, topology: Topology) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Stereocentres of the molecule in an ensemble.

    A candidate is an atom with at least 3 bonded neighbours; it is a stereocentre when its
    neighbours are pairwise topologically inequivalent (:func:`atom_classes`) and the signed
    volume of its first three neighbours, (r_a - r_c) . ((r_b - r_c) x (r_d - r_c)) in
    Angstrom^3, has one sign in at least ``STEREO_AGREEMENT`` of the frames.

    Args:
        coords: (F, N, 3) frames, Angstrom.
        topology: the molecule.

    Returns:
        centres (S, 4) long (centre, then its first three neighbours), signs (S,) of +1.0 or
        -1.0, and what was found, in words.
    """
    classes = atom_classes(topology.atomic_numbers, topology.bonds)
    neighbours = neighbour_lists(topology.bonds, topology.n_atoms)
    candidates = [atom for atom, around in enumerate(neighbours) if len(around) >= 3]
    distinct = [
        atom for atom in candidates if len({int(classes[k]) for k in neighbours[atom]}) == len(neighbours[atom])
    ]
    centres = torch.tensor([[atom, *neighbours[atom][:3]] for atom in distinct], dtype=torch.long).reshape(-1, 4)
    volumes = signed_volumes(coords, centres.to(coords.device))
    positive = (volumes > 0).double().mean(dim=0).cpu()
    negative = (volumes < 0).double().mean(dim=0).cpu()
    keeps_sign = torch.maximum(positive, negative) >= STEREO_AGREEMENT
    signs = torch.where(positive >= negative, 1.0, -1.0)[keeps_sign].float()
    centres = centres[keeps_sign]
    if len(centres) == 0:
        found = (
            f"no stereocentres: of {len(candidates)} atoms with >= 3 bonded neighbours, "
            f"{len(candidates) - len(distinct)} have topologically equivalent neighbours and "
            f"{len(distinct)} change the sign of their signed volume in more than "
            f"{1 - STEREO_AGREEMENT:.0%} of {len(coords)} training frames"
        )
    else:
        names = ", ".join(atom_label(topology, int(atom)) for atom in centres[:, 0])
        found = (
            f"{len(centres)} stereocentre(s) ({names}) keep the sign of their signed volume in "
            f">= {STEREO_AGREEMENT:.0%} of {len(coords)} training frames"
        )
    return centres, signs, found


def atom_label(topology: Topology, atom: int) -> str:
    """'AIB2:CA'-style name of an atom."""
    return f"{topology.residue_names[atom]}{topology.residue_ids[atom]}:{topology.atom_names[atom]}"


def decide_parity(coords: torch.Tensor, topology: Topology, override: str = "auto") -> ParityRule:
    """The parity rule of a training run, from its training frames and the ``--parity`` flag.

    ``auto``: ``chiral`` when the frames have stereocentres (:func:`find_stereocentres`), else
    ``mirror-symmetric``; the other values force that mode.

    Args:
        coords: (F, N, 3) training frames, Angstrom.
        topology: the molecule.
        override: a value of ``PARITY_CHOICES``.

    Raises:
        ConfigError: an unknown value, or ``chiral`` on frames without stereocentres.
    """
    if override not in PARITY_CHOICES:
        raise ConfigError(f"--parity must be one of {', '.join(PARITY_CHOICES)}, got {override!r}")
    if override == "none":
        return ParityRule("none", reason="--parity none: the decoder's raw output, in either handedness")
    centres, signs, found = find_stereocentres(coords, topology)
    if override == "chiral" and len(centres) == 0:
        raise ConfigError(f"--parity chiral needs stereocentres, and the training data have {found}")
    if override == "mirror-symmetric":
        return ParityRule("mirror-symmetric", reason=f"--parity mirror-symmetric; {found}")
    if len(centres) == 0:
        return ParityRule("mirror-symmetric", reason=found)
    return ParityRule("chiral", centres, signs, reason=found if override == "auto" else f"--parity chiral; {found}")


def reflect(coords: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reflect the masked conformations through their centroids (x -> -x for centred ones).

    Args:
        coords: (B, N, 3) Angstrom.
        mask: (B,) bool, True where to reflect.

    Returns:
        (B, N, 3) with the same centroids.
    """
    centroid = coords.mean(dim=1, keepdim=True)
    return torch.where(mask.view(-1, 1, 1), 2.0 * centroid - coords, coords)


def orient_samples(samples: torch.Tensor, rule: ParityRule, generator: torch.Generator | None = None) -> torch.Tensor:
    """Prior samples (or decoded given latents) in the handedness the rule asks for.

    ``mirror-symmetric``: each sample is reflected with probability 1/2, drawn from
    ``generator`` (reproducible); ``chiral``: reflected where its stereocentres' signs disagree
    with the data's for more of them than agree; ``none``: unchanged.

    Args:
        samples: (B, N, 3) decoded conformations, Angstrom.
        rule: the model's parity rule.
        generator: random source of the ``mirror-symmetric`` draws (any device).

    Returns:
        (B, N, 3).
    """
    if rule.mode == "mirror-symmetric":
        device = generator.device if generator is not None else samples.device
        flips = torch.rand(len(samples), generator=generator, device=device).to(samples.device) < 0.5
    elif rule.mode == "chiral":
        volumes = signed_volumes(samples, rule.centres.to(samples.device))
        flips = (torch.sign(volumes) * rule.signs.to(volumes)).sum(dim=1) < 0
    else:
        return samples
    return reflect(samples, flips)


def orient_reconstructions(
    reconstructions: torch.Tensor, inputs: torch.Tensor, rule: ParityRule, bonds: torch.Tensor
) -> torch.Tensor:
    """Reconstructions in the handedness of their inputs (unless the rule is ``none``).

    A reconstruction is reflected where sum(v_in * v_out) < 0 over the signed volumes of the
    rule's stereocentres (``chiral``: the hand the data fix, as for samples, so that a centre
    inverted against most others counts as one) or of the molecule's bonded four-atom chains
    (``mirror-symmetric``; :func:`~bond_vae.geometry.torsion_quadruplets`).

    Args:
        reconstructions: (B, N, 3) decoded conformations, Angstrom.
        inputs: (B, N, 3) the conformations they were encoded from, Angstrom.
        rule: the model's parity rule.
        bonds: (n_bonds, 2) covalent bonds.

    Returns:
        (B, N, 3).
    """
    if rule.mode == "none":
        return reconstructions
    if rule.mode == "chiral":
        return match_handedness(reconstructions, inputs, rule.centres.to(reconstructions.device))
    return match_handedness(reconstructions, inputs, chains_of(bonds, reconstructions))


def orient_path(path: torch.Tensor, start: torch.Tensor, rule: ParityRule, bonds: torch.Tensor) -> torch.Tensor:
    """An interpolation path made continuous in handedness (unless the rule is ``none``).

    The first frame takes the handedness of ``start``, each next frame the one closer (by
    signed volumes of bonded chains) to the previous frame as oriented.

    Args:
        path: (K, N, 3) decoded conformations along the path, Angstrom.
        start: (N, 3) the input frame the path starts from, Angstrom.
        rule: the model's parity rule.
        bonds: (n_bonds, 2) covalent bonds.

    Returns:
        (K, N, 3).
    """
    if rule.mode == "none":
        return path
    chains = chains_of(bonds, path)
    previous = start.to(path)
    frames = []
    for frame in path:
        previous = match_handedness(frame[None], previous[None], chains)[0]
        frames.append(previous)
    return torch.stack(frames)


def chains_of(bonds: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """(Q, 4) bonded four-atom chains of the molecule of (B, N, 3) ``coords``, on their device."""
    return torsion_quadruplets(bonds.long().cpu(), coords.shape[1]).to(coords.device)


def match_handedness(coords: torch.Tensor, targets: torch.Tensor, chains: torch.Tensor) -> torch.Tensor:
    """Reflect each of (B, N, 3) ``coords`` where sum(v * v_target) < 0 over the signed volumes of (Q, 4) ``chains``
    in it and in (B, N, 3) ``targets``."""
    agreement = (signed_volumes(coords, chains) * signed_volumes(targets.to(coords), chains)).sum(dim=1)
    return reflect(coords, agreement < 0)


def stereocentre_moves(bonds: np.ndarray, n_atoms: int, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How the stereocentre layer (:func:`place_stereocentres`) inverts each centre.

    The two bonded neighbours with the most atoms beyond them stay where they are (a peptide CA's N and C: the
    backbone); the other neighbours with everything beyond them (an alanine's CB; its CB and HA with hydrogens)
    turn by 180 degrees about the bisector of the centre's bonds to the two. That moves them to the other side
    of the plane through the centre and the two, rigidly, so the backbone's torsions and every bond stay. A
    centre in a ring (a proline CA) is instead reflected through the plane of its first three neighbours (empty
    branches mark it), which keeps its bonds to them.

    Args:
        bonds: (n_bonds, 2) covalent bonds.
        n_atoms: atoms in the molecule N.
        centres: (S, 4) long, each stereocentre then three of its bonded neighbours.

    Returns:
        axes (S, 2) long, the two neighbours that stay; branches (S, N) bool, the atoms that turn.
    """
    neighbours = neighbour_lists(bonds, n_atoms)
    axes = torch.zeros(len(centres), 2, dtype=torch.long)
    branches = torch.zeros(len(centres), n_atoms, dtype=torch.bool)
    for k, centre in enumerate(centres[:, 0].tolist()):
        beyond = {atom: {atom} | atoms_beyond(neighbours, centre, atom) for atom in neighbours[centre]}
        kept = sorted(beyond, key=lambda atom: len(beyond[atom]), reverse=True)[:2]
        turning = set().union(*(beyond[atom] for atom in beyond if atom not in kept))
        axes[k] = torch.tensor(kept)
        if not any(centre in atoms for atoms in beyond.values()):  # a ring through the centre: reflected instead
            branches[k, sorted(turning)] = True
    return axes, branches


def place_stereocentres(
    coords: torch.Tensor, centres: torch.Tensor, signs: torch.Tensor, axes: torch.Tensor, branches: torch.Tensor
) -> torch.Tensor:
    """Give each stereocentre the configuration that the training data give it, in the hand of most of the
    structure's centres (the last layer of a chiral model's decoder output, ``--decoder-place-stereocentres``).

    The hand h = +1 or -1 is the one in which more of the structure's centres have the data's signs (+1 on a
    tie). Centre by centre, one whose signed volume disagrees with h x its sign is inverted as
    :func:`stereocentre_moves` lays out: its small branches turned about the bisector of its bonds to the two
    large ones (the side of every turned atom flips, exactly, and no distance within a branch or to the centre
    changes; with three neighbours that inverts the centre exactly, with four wherever they are roughly
    tetrahedral), and where the centre is still inverted (in a ring, or four neighbours far from a tetrahedron)
    the centre reflected through its first three neighbours' plane (keeping its distances to them). A centre
    reflected so moves within its bonded neighbours' volumes: two bonded stereocentres (an isoleucine's CA and
    CB) can leave the first one inverted. A structure and its mirror image are placed alike. The hand is read
    off the centres themselves, so it is only as good as most of them.

    Args:
        coords: (B, N, 3) decoded coordinates, Angstrom.
        centres: (S, 4) long, each stereocentre then three of its bonded neighbours.
        signs: (S,) the training data's sign of each centre's signed volume, +1.0 or -1.0.
        axes, branches: (S, 2) and (S, N) from :func:`stereocentre_moves`.

    Returns:
        (B, N, 3) float32.
    """
    coords = coords.float()
    agreement = (torch.sign(signed_volumes(coords, centres)) * signs).sum(dim=1, keepdim=True)
    wanted = torch.where(agreement >= 0, 1.0, -1.0) * signs  # (B, S) each signed volume's wanted sign
    for k in range(len(centres)):
        centre = centres[k]
        wrong = torch.sign(signed_volumes(coords, centre[None]))[:, 0] * wanted[:, k] < 0  # (B,)
        pivot, a, b = coords[:, centre[0]], coords[:, axes[k, 0]], coords[:, axes[k, 1]]  # (B, 3) each
        axis = unit(unit(a - pivot) + unit(b - pivot)).unsqueeze(1)  # (B, 1, 3)
        relative = coords - pivot.unsqueeze(1)
        turned = pivot.unsqueeze(1) + 2 * (relative * axis).sum(dim=-1, keepdim=True) * axis - relative
        coords = torch.where((wrong[:, None] & branches[k])[..., None], turned, coords)
        # still inverted: a centre in a ring (nothing turned), or one whose four neighbours are far from a tetrahedron
        wrong = torch.sign(signed_volumes(coords, centre[None]))[:, 0] * wanted[:, k] < 0
        first, second, third = (coords[:, centre[j]] for j in (1, 2, 3))
        normal = unit(torch.linalg.cross(second - first, third - first))
        reflected = pivot - 2 * ((pivot - first) * normal).sum(dim=-1, keepdim=True) * normal
        coords = coords.index_copy(1, centre[:1], torch.where(wrong[:, None], reflected, pivot).unsqueeze(1))
    return coords


def unit(vectors: torch.Tensor) -> torch.Tensor:
    """(..., 3) vectors scaled to length 1 (a zero vector stays zero)."""
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-6)
