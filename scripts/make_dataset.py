"""Generate an MD ensemble of heavy atoms for training or testing: AIB9 (the embedded data) or A4GA4.

The peptide is built with RDKit, parametrised with CHARMM36 (OpenMM's ``charmm36.xml``: residues
AIB, ALA and GLY, patches ACE and CT2) and simulated with Langevin dynamics in OBC2 generalised-Born
implicit solvent, each replica from its own starting structure, temperature and seed.

* ``--system aib9`` (default, the embedded ``aib9.npz``): Ac-(Aib)9-NH2. Aib is achiral, so the
  ensemble holds both helix handednesses: six conditions start from right- and left-handed helices
  at 300 K and 400 K, from a helix that changes handedness halfway (300 K) and from an extended
  chain (500 K) for transitions and partly unfolded frames. Each condition runs as two independent
  replicas (seeds 11-16 and 31-36) of 2 ns with a frame every 2.5 ps: 24 ns of MD in 9,600 frames.
* ``--system a4ga4``: Ac-(Ala)4-Gly-(Ala)4-NH2, a chiral peptide of eight L-alanines (their CA
  atoms are stereocentres) and a glycine, 48 heavy atoms; six conditions from a right-handed helix
  and from an extended chain at 300, 350 and 450 K (seeds 41-46 by default).

Every setting and seed is recorded in the file's ``metadata``. Run with ``make dataset`` (it installs
the ``dataset`` dependency group: OpenMM and RDKit); ``--seeds`` with new seeds writes independent
trajectories of the same conditions, e.g. a test set.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolTransforms

ACETYL = ("CC(=O)", ("CH3", "C", "O"))
AMIDE = ("N", ("N",))
HELIX_DIHEDRALS_DEG = {"right": (-57.0, -47.0), "left": (57.0, 47.0)}
EXTENDED_DIHEDRALS_DEG = (-150.0, 150.0)

# OBC2 generalised-Born parameters (Onufriev, Bashford & Case 2004) with mbondi2-like radii (nm).
GB_RADIUS_NM = {"H": 0.12, "C": 0.17, "N": 0.155, "O": 0.15}
GB_RADIUS_H_ON_N_NM = 0.13
GB_SCALE = {"H": 0.85, "C": 0.72, "N": 0.79, "O": 0.85}
# energy of the CustomNonbondedForce in which charmm36.xml tabulates every Lennard-Jones pair
LENNARD_JONES_TABLE = "acoef(type1, type2)/r^12 - bcoef(type1, type2)/r^6"


@dataclass(frozen=True)
class ResidueKind:
    """A residue as CHARMM36 names it: heavy-atom SMILES from N to the carbonyl O (stereo included)
    and the heavy atoms' PDB names in SMILES order."""

    smiles: str
    atom_names: tuple[str, ...]


RESIDUES = {
    "AIB": ResidueKind("NC(C)(C)C(=O)", ("N", "CA", "CB1", "CB2", "C", "O")),
    "ALA": ResidueKind("N[C@@H](C)C(=O)", ("N", "CA", "CB", "C", "O")),  # L-alanine
    "GLY": ResidueKind("NCC(=O)", ("N", "CA", "C", "O")),
}


@dataclass(frozen=True)
class PeptideSystem:
    """A capped peptide Ac-(residues)-NH2 and the conditions (start, temperature in K) of its replicas."""

    molecule: str
    sequence: tuple[str, ...]
    conditions: tuple[tuple[str, float], ...]
    seeds: tuple[int, ...]
    output: Path


SYSTEMS = {
    "aib9": PeptideSystem(
        "Ac-(Aib)9-NH2 (AIB9), heavy atoms only",
        ("AIB",) * 9,
        (("right", 300.0), ("left", 300.0), ("right", 400.0), ("left", 400.0), ("mixed", 300.0), ("extended", 500.0)),
        (11, 12, 13, 14, 15, 16, 31, 32, 33, 34, 35, 36),
        Path("data/aib9.npz"),
    ),
    "a4ga4": PeptideSystem(
        "Ac-(Ala)4-Gly-(Ala)4-NH2 (A4GA4, L-alanines), heavy atoms only",
        ("ALA",) * 4 + ("GLY",) + ("ALA",) * 4,
        (
            ("right", 300.0),
            ("extended", 300.0),
            ("right", 350.0),
            ("extended", 350.0),
            ("right", 450.0),
            ("extended", 450.0),
        ),
        (41, 42, 43, 44, 45, 46),
        Path("data/a4ga4.npz"),
    ),
}


@dataclass
class Replica:
    """One independent trajectory: starting structure, temperature (K) and seed.

    ``start`` is "right" or "left" (an ideal helix), "mixed" (the first half of the residues
    right-handed, the rest left-handed) or "extended".
    """

    start: str
    temperature_k: float
    seed: int


def replicas_for_seeds(system: PeptideSystem, seeds: list[int] | tuple[int, ...]) -> list[Replica]:
    """Seed i runs condition i mod C (C conditions), so kC seeds give k replicas of every condition."""
    n_conditions = len(system.conditions)
    if not seeds or len(seeds) % n_conditions:
        raise ValueError(f"give a multiple of {n_conditions} seeds (one per condition), got {len(seeds)}")
    return [Replica(*system.conditions[i % n_conditions], seed) for i, seed in enumerate(seeds)]


@dataclass
class DatasetConfig:
    """Settings of the simulation; all of them are written into the dataset's metadata."""

    system: str = "aib9"
    output: Path = SYSTEMS["aib9"].output
    replicas: list[Replica] = field(default_factory=lambda: replicas_for_seeds(SYSTEMS["aib9"], SYSTEMS["aib9"].seeds))
    frames_per_replica: int = 800
    stride_steps: int = 625
    equilibration_steps: int = 5000
    timestep_fs: float = 4.0
    hydrogen_mass_amu: float = 3.0
    friction_per_ps: float = 1.0
    solute_dielectric: float = 1.0
    solvent_dielectric: float = 78.5


def backbone_dihedrals(start: str, residue: int, n_residues: int) -> tuple[float, float]:
    """(phi, psi) in degrees of one residue (0-based) for a starting structure."""
    if start == "extended":
        return EXTENDED_DIHEDRALS_DEG
    if start == "mixed":
        return HELIX_DIHEDRALS_DEG["right" if residue < n_residues // 2 else "left"]
    return HELIX_DIHEDRALS_DEG[start]


def build_molecule(system: PeptideSystem, start: str, seed: int) -> tuple[Chem.Mol, list[dict]]:
    """Build the capped peptide with hydrogens in a starting structure (see :class:`Replica`).

    Returns the RDKit molecule (one conformer, Angstrom) and, for each heavy atom in SMILES order (RDKit
    atoms 0 to H - 1), its PDB-style name, residue name and residue id (ACE 1, the residues 2 to R + 1,
    NH2 R + 2) and ``residue``, the 0-based residue whose CHARMM template holds it (caps belong to the
    first and last residue, as the ACE and CT2 patches expect).
    """
    n_residues = len(system.sequence)
    pieces = [(ACETYL[0], ACETYL[1], "ACE", 0)]
    pieces += [(RESIDUES[name].smiles, RESIDUES[name].atom_names, name, k) for k, name in enumerate(system.sequence)]
    pieces.append((AMIDE[0], AMIDE[1], "NH2", n_residues - 1))
    mol = Chem.AddHs(Chem.MolFromSmiles("".join(piece[0] for piece in pieces)))
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise RuntimeError(f"RDKit could not embed {system.molecule}")
    heavy = [
        {"name": name, "residue_name": residue_name, "residue_id": piece_index + 1, "residue": residue}
        for piece_index, (_, names, residue_name, residue) in enumerate(pieces)
        for name in names
    ]

    def index_of(name: str, residue_id: int) -> int:
        return next(i for i, atom in enumerate(heavy) if atom["name"] == name and atom["residue_id"] == residue_id)

    conformer = mol.GetConformer()
    for residue in range(n_residues):
        phi, psi = backbone_dihedrals(start, residue, n_residues)
        n, ca, c = (index_of(name, residue + 2) for name in ("N", "CA", "C"))
        previous_c, next_n = index_of("C", residue + 1), index_of("N", residue + 3)
        rdMolTransforms.SetDihedralDeg(conformer, previous_c, n, ca, c, phi)
        rdMolTransforms.SetDihedralDeg(conformer, n, ca, c, next_n, psi)
    return mol, heavy


def openmm_topology(mol: Chem.Mol, heavy: list[dict], sequence: tuple[str, ...]) -> tuple[app.Topology, list[int]]:
    """An OpenMM topology matching CHARMM36's residue templates with the ACE and CT2 patches.

    Each hydrogen belongs to the residue of its heavy atom; templates are matched by element and
    bond graph. OpenMM needs the atoms of a residue to be contiguous, so they are reordered.

    Returns:
        The topology and ``order``: topology atom k is RDKit atom ``order[k]``.
    """

    def residue_of(atom: Chem.Atom) -> int:
        heavy_atom = atom.GetNeighbors()[0] if atom.GetAtomicNum() == 1 else atom
        return heavy[heavy_atom.GetIdx()]["residue"]

    order = sorted(range(mol.GetNumAtoms()), key=lambda i: (residue_of(mol.GetAtomWithIdx(i)), i))
    topology = app.Topology()
    chain = topology.addChain("A")
    residues = [topology.addResidue(name, chain) for name in sequence]
    atoms = {}
    for index in order:
        atom = mol.GetAtomWithIdx(index)
        element = app.Element.getByAtomicNumber(atom.GetAtomicNum())
        atoms[index] = topology.addAtom(f"{atom.GetSymbol()}{index}", element, residues[residue_of(atom)])
    for bond in mol.GetBonds():
        topology.addBond(atoms[bond.GetBeginAtomIdx()], atoms[bond.GetEndAtomIdx()])
    return topology, order


def add_implicit_solvent(system: openmm.System, mol: Chem.Mol, order: list[int], config: DatasetConfig) -> None:
    """Add an OBC2 GBSA force using the CHARMM36 partial charges (particle k is RDKit atom order[k])."""
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    gb = openmm.GBSAOBCForce()
    gb.setNonbondedMethod(openmm.GBSAOBCForce.NoCutoff)
    gb.setSoluteDielectric(config.solute_dielectric)
    gb.setSolventDielectric(config.solvent_dielectric)
    for particle, index in enumerate(order):
        atom = mol.GetAtomWithIdx(index)
        charge, _, _ = nonbonded.getParticleParameters(particle)
        symbol = atom.GetSymbol()
        radius = GB_RADIUS_NM[symbol]
        if symbol == "H" and atom.GetNeighbors()[0].GetSymbol() == "N":
            radius = GB_RADIUS_H_ON_N_NM
        gb.addParticle(charge, radius, GB_SCALE[symbol])
    system.addForce(gb)


def lennard_jones_into_nonbonded(system: openmm.System) -> None:
    """Move CHARMM36's Lennard-Jones terms from its CustomNonbondedForce into the NonbondedForce.

    OpenMM's ``charmm36.xml`` puts every Lennard-Jones pair in a tabulated CustomNonbondedForce (for
    NBFIX pairs), which takes two thirds of a step on the CPU. The peptides here have no NBFIX
    pair: every table entry is the Lorentz-Berthelot combination of its diagonal (checked here, to
    1e-10), so per-particle sigma and epsilon in the NonbondedForce give the same energy (its 1-4
    exceptions already hold the 1-4 terms and the custom force excludes the same pairs) at a third
    of the cost. Raises ValueError where a table is not Lorentz-Berthelot.
    """
    customs = [i for i, f in enumerate(system.getForces()) if isinstance(f, openmm.CustomNonbondedForce)]
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    custom = system.getForce(customs[0]) if len(customs) == 1 else None
    if custom is None or custom.getEnergyFunction().rstrip("; ") != LENNARD_JONES_TABLE:
        raise ValueError("expected CHARMM36's one tabulated Lennard-Jones CustomNonbondedForce")
    n_types, _, a_values = custom.getTabulatedFunction(0).getFunctionParameters()
    b_values = custom.getTabulatedFunction(1).getFunctionParameters()[2]
    a = np.asarray(a_values).reshape(n_types, n_types)
    b = np.asarray(b_values).reshape(n_types, n_types)
    sigma = (np.diag(a) / np.diag(b)) ** (1 / 6)  # nm
    epsilon = np.diag(b) ** 2 / (4 * np.diag(a))  # kJ/mol
    pair_sigma = (sigma[:, None] + sigma[None]) / 2
    pair_epsilon = np.sqrt(epsilon[:, None] * epsilon[None])
    if not (
        np.allclose(4 * pair_epsilon * pair_sigma**12, a, rtol=1e-10, atol=0)
        and np.allclose(4 * pair_epsilon * pair_sigma**6, b, rtol=1e-10, atol=0)
    ):
        raise ValueError("the Lennard-Jones tables hold NBFIX pairs")
    for particle in range(nonbonded.getNumParticles()):
        charge = nonbonded.getParticleParameters(particle)[0]
        atom_type = int(custom.getParticleParameters(particle)[0])
        nonbonded.setParticleParameters(particle, charge, sigma[atom_type], epsilon[atom_type])
    system.removeForce(customs[0])


def simulate(
    replica: Replica, config: DatasetConfig, forcefield: app.ForceField
) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """Run one replica; return heavy-atom frames (frames, H, 3) in Angstrom, atom table, bonds."""
    peptide = SYSTEMS[config.system]
    mol, heavy_atoms = build_molecule(peptide, replica.start, replica.seed)
    topology, order = openmm_topology(mol, heavy_atoms, peptide.sequence)
    system = forcefield.createSystem(
        topology,
        nonbondedMethod=app.NoCutoff,
        constraints=app.HBonds,
        hydrogenMass=config.hydrogen_mass_amu * unit.amu,
    )
    add_implicit_solvent(system, mol, order, config)
    lennard_jones_into_nonbonded(system)
    integrator = openmm.LangevinMiddleIntegrator(
        replica.temperature_k * unit.kelvin,
        config.friction_per_ps / unit.picosecond,
        config.timestep_fs * unit.femtosecond,
    )
    integrator.setRandomNumberSeed(replica.seed)
    platform_cpu = openmm.Platform.getPlatformByName("CPU")
    simulation = app.Simulation(topology, system, integrator, platform_cpu, {"Threads": "1"})
    positions = mol.GetConformer().GetPositions()[order] * 0.1
    simulation.context.setPositions(positions * unit.nanometer)
    simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(replica.temperature_k * unit.kelvin, replica.seed)
    simulation.step(config.equilibration_steps)

    heavy_indices = [order.index(atom.GetIdx()) for atom in mol.GetAtoms() if atom.GetAtomicNum() > 1]
    frames = np.empty((config.frames_per_replica, len(heavy_indices), 3), dtype=np.float32)
    for frame in range(config.frames_per_replica):
        simulation.step(config.stride_steps)
        state = simulation.context.getState(getPositions=True)
        frames[frame] = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[heavy_indices]
    heavy_set = {atom.GetIdx() for atom in mol.GetAtoms() if atom.GetAtomicNum() > 1}
    bonds = np.array(
        [
            (b.GetBeginAtomIdx(), b.GetEndAtomIdx())
            for b in mol.GetBonds()
            if b.GetBeginAtomIdx() in heavy_set and b.GetEndAtomIdx() in heavy_set
        ],
        dtype=np.int64,
    )
    return frames, heavy_atoms, bonds


def parse_args(argv: list[str] | None) -> tuple[DatasetConfig, int]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = DatasetConfig()
    parser.add_argument("--system", choices=sorted(SYSTEMS), default=defaults.system, help="the peptide")
    parser.add_argument("--output", type=Path, help="where to write the .npz (default: data/<system>.npz)")
    parser.add_argument(
        "--frames-per-replica", type=int, default=defaults.frames_per_replica, help="frames saved per replica"
    )
    parser.add_argument("--stride-steps", type=int, default=defaults.stride_steps, help="MD steps between saved frames")
    parser.add_argument("--workers", type=int, default=1, help="replicas simulated in parallel (one CPU thread each)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="one replica per seed (starting structure and velocities, Langevin noise); seed i runs condition "
        "i mod 6, so give a multiple of 6; new seeds give independent trajectories of the same conditions, "
        "e.g. a test set (default: the system's seeds)",
    )
    args = parser.parse_args(argv)
    peptide = SYSTEMS[args.system]
    try:
        replicas = replicas_for_seeds(peptide, args.seeds or peptide.seeds)
    except ValueError as error:
        parser.error(str(error))
    config = DatasetConfig(
        system=args.system,
        output=args.output or peptide.output,
        replicas=replicas,
        frames_per_replica=args.frames_per_replica,
        stride_steps=args.stride_steps,
    )
    return config, args.workers


def simulate_replica(job: tuple[int, Replica, DatasetConfig]) -> tuple[np.ndarray, list[dict], np.ndarray]:
    index, replica, config = job
    started = time.perf_counter()
    result = simulate(replica, config, app.ForceField("charmm36.xml"))
    print(
        f"replica {index} ({replica.start}, {replica.temperature_k:g} K): {len(result[0])} frames "
        f"in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    config, workers = parse_args(argv)
    if config.output.exists():
        sys.exit(f"error: {config.output} exists; remove it or pass --output to write elsewhere")
    started = time.perf_counter()
    jobs = [(index, replica, config) for index, replica in enumerate(config.replicas)]
    with multiprocessing.Pool(workers) as pool:
        results = pool.map(simulate_replica, jobs, chunksize=1)
    all_frames = [frames for frames, _, _ in results]
    heavy_atoms, bonds = results[0][1], results[0][2]
    replica_of_frame = [np.full(len(f), index, dtype=np.int16) for index, f in enumerate(all_frames)]
    temperature_of_frame = [
        np.full(len(f), r.temperature_k, dtype=np.float32) for f, r in zip(all_frames, config.replicas, strict=True)
    ]

    ns_per_frame = config.stride_steps * config.timestep_fs * 1e-6
    residues = " ".join(sorted(set(SYSTEMS[config.system].sequence)))
    metadata = {
        "molecule": SYSTEMS[config.system].molecule,
        "units": "Angstrom",
        "force_field": f"CHARMM36 (OpenMM charmm36.xml: residues {residues}, patches ACE and CT2)",
        "solvent": "implicit, OpenMM GBSAOBCForce (OBC2) with mbondi2-like per-element radii, no cutoff",
        "lennard_jones": "CHARMM36's tables as per-particle NonbondedForce terms (Lorentz-Berthelot, no NBFIX pair)",
        "integrator": "LangevinMiddleIntegrator",
        "constraints": "HBonds, hydrogen mass repartitioned",
        "time_between_frames_ns": ns_per_frame,
        "simulated_ns_per_replica": ns_per_frame * config.frames_per_replica,
        "config": {k: v for k, v in asdict(config).items() if k not in ("system", "output")},
        "openmm_version": openmm.__version__,
        "rdkit_version": Chem.rdBase.rdkitVersion,
        "python": platform.python_version(),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "command": "scripts/make_dataset.py " + " ".join(sys.argv[1:]),
    }
    config.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        config.output,
        coords=np.concatenate(all_frames),
        atomic_numbers=np.array([{"C": 6, "N": 7, "O": 8}[a["name"][0]] for a in heavy_atoms], dtype=np.int64),
        atom_names=np.array([a["name"] for a in heavy_atoms]),
        residue_ids=np.array([a["residue_id"] for a in heavy_atoms], dtype=np.int64),
        residue_names=np.array([a["residue_name"] for a in heavy_atoms]),
        bonds=bonds,
        replica=np.concatenate(replica_of_frame),
        temperature_k=np.concatenate(temperature_of_frame),
        metadata=np.array(json.dumps(metadata, indent=1)),
    )
    print(f"wrote {config.output}: {sum(len(f) for f in all_frames)} frames", flush=True)


if __name__ == "__main__":
    main()
