"""Generate the embedded AIB9 heavy-atom MD ensemble (``data/aib9.npz``).

Ac-(Aib)9-NH2 is built with RDKit, parametrised with CHARMM36 (OpenMM's ``charmm36.xml``:
residue AIB, patches ACE and CT2) and simulated with Langevin dynamics in OBC2
generalised-Born implicit solvent. Aib is achiral, so the ensemble holds both helix
handednesses: replicas start from right- and left-handed helices at 300 K and 400 K, one
from a helix that changes handedness halfway (300 K) and one from an extended chain (500 K)
for transitions and partly unfolded frames. Every setting and seed is recorded in the file's
``metadata``.

Run with ``make dataset`` (it installs the ``dataset`` dependency group: OpenMM and RDKit).
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

N_RESIDUES = 9
ACETYL_SMILES = "CC(=O)"
AIB_SMILES = "NC(C)(C)C(=O)"
AMIDE_SMILES = "N"
AIB_ATOM_NAMES = ("N", "CA", "CB1", "CB2", "C", "O")
HELIX_DIHEDRALS_DEG = {"right": (-57.0, -47.0), "left": (57.0, 47.0)}
EXTENDED_DIHEDRALS_DEG = (-150.0, 150.0)

# OBC2 generalised-Born parameters (Onufriev, Bashford & Case 2004) with mbondi2-like radii (nm).
GB_RADIUS_NM = {"H": 0.12, "C": 0.17, "N": 0.155, "O": 0.15}
GB_RADIUS_H_ON_N_NM = 0.13
GB_SCALE = {"H": 0.85, "C": 0.72, "N": 0.79, "O": 0.85}


@dataclass
class Replica:
    """One independent trajectory: starting structure, temperature (K) and seed.

    ``start`` is "right" or "left" (an ideal helix), "mixed" (residues 1-4 right-handed,
    5-9 left-handed) or "extended".
    """

    start: str
    temperature_k: float
    seed: int


@dataclass
class DatasetConfig:
    """Settings of the simulation; all of them are written into the dataset's metadata."""

    output: Path = Path("data/aib9.npz")
    replicas: list[Replica] = field(
        default_factory=lambda: [
            Replica("right", 300.0, 11),
            Replica("left", 300.0, 12),
            Replica("right", 400.0, 13),
            Replica("left", 400.0, 14),
            Replica("mixed", 300.0, 15),
            Replica("extended", 500.0, 16),
        ]
    )
    frames_per_replica: int = 1500
    stride_steps: int = 100
    equilibration_steps: int = 5000
    timestep_fs: float = 4.0
    hydrogen_mass_amu: float = 3.0
    friction_per_ps: float = 1.0
    solute_dielectric: float = 1.0
    solvent_dielectric: float = 78.5


def backbone_dihedrals(start: str, residue: int) -> tuple[float, float]:
    """(phi, psi) in degrees of one residue for a starting structure."""
    if start == "extended":
        return EXTENDED_DIHEDRALS_DEG
    if start == "mixed":
        return HELIX_DIHEDRALS_DEG["right" if residue < N_RESIDUES // 2 else "left"]
    return HELIX_DIHEDRALS_DEG[start]


def build_molecule(start: str, seed: int) -> tuple[Chem.Mol, list[dict]]:
    """Build Ac-(Aib)9-NH2 with hydrogens in a starting structure (see :class:`Replica`).

    Returns the RDKit molecule (one conformer, Angstrom) and, for each heavy atom in SMILES
    order, its PDB-style name, residue name and residue id (ACE 1, AIB 2-10, NH2 11).
    """
    smiles = ACETYL_SMILES + AIB_SMILES * N_RESIDUES + AMIDE_SMILES
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise RuntimeError("RDKit could not embed AIB9")
    heavy = [{"name": name, "residue_name": "ACE", "residue_id": 1} for name in ("CH3", "C", "O")]
    for residue in range(N_RESIDUES):
        heavy += [{"name": name, "residue_name": "AIB", "residue_id": residue + 2} for name in AIB_ATOM_NAMES]
    heavy.append({"name": "N", "residue_name": "NH2", "residue_id": N_RESIDUES + 2})

    conformer = mol.GetConformer()
    for residue in range(N_RESIDUES):
        phi, psi = backbone_dihedrals(start, residue)
        n, ca, c = 3 + 6 * residue, 4 + 6 * residue, 7 + 6 * residue
        previous_c = 1 if residue == 0 else c - 6
        next_n = n + 6
        rdMolTransforms.SetDihedralDeg(conformer, previous_c, n, ca, c, phi)
        rdMolTransforms.SetDihedralDeg(conformer, n, ca, c, next_n, psi)
    return mol, heavy


def openmm_topology(mol: Chem.Mol) -> tuple[app.Topology, list[int]]:
    """An OpenMM topology of nine AIB residues matching CHARMM36's AIB + ACE/CT2 templates.

    The acetyl cap belongs to residue 1 and the terminal amide to residue 9, as the
    CHARMM patches expect; templates are matched by element and bond graph. OpenMM needs the
    atoms of a residue to be contiguous, so they are reordered.

    Returns:
        The topology and ``order``: topology atom k is RDKit atom ``order[k]``.
    """

    def residue_of(atom: Chem.Atom) -> int:
        heavy = atom.GetNeighbors()[0] if atom.GetAtomicNum() == 1 else atom
        return min(max((heavy.GetIdx() - 3) // 6, 0), N_RESIDUES - 1)

    order = sorted(range(mol.GetNumAtoms()), key=lambda i: (residue_of(mol.GetAtomWithIdx(i)), i))
    topology = app.Topology()
    chain = topology.addChain("A")
    residues = [topology.addResidue("AIB", chain) for _ in range(N_RESIDUES)]
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


def simulate(
    replica: Replica, config: DatasetConfig, forcefield: app.ForceField
) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """Run one replica; return heavy-atom frames (frames, 58, 3) in Angstrom, atom table, bonds."""
    mol, heavy_atoms = build_molecule(replica.start, replica.seed)
    topology, order = openmm_topology(mol)
    system = forcefield.createSystem(
        topology,
        nonbondedMethod=app.NoCutoff,
        constraints=app.HBonds,
        hydrogenMass=config.hydrogen_mass_amu * unit.amu,
    )
    add_implicit_solvent(system, mol, order, config)
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
    parser.add_argument("--output", type=Path, default=defaults.output, help="where to write the .npz")
    parser.add_argument(
        "--frames-per-replica", type=int, default=defaults.frames_per_replica, help="frames saved per replica"
    )
    parser.add_argument("--stride-steps", type=int, default=defaults.stride_steps, help="MD steps between saved frames")
    parser.add_argument("--workers", type=int, default=1, help="replicas simulated in parallel (one CPU thread each)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs=len(defaults.replicas),
        default=[replica.seed for replica in defaults.replicas],
        metavar="SEED",
        help="one seed per replica condition (starting structure and velocities, Langevin noise); "
        "new seeds give independent trajectories of the same conditions, e.g. a test set",
    )
    args = parser.parse_args(argv)
    replicas = [
        Replica(replica.start, replica.temperature_k, seed)
        for replica, seed in zip(defaults.replicas, args.seeds, strict=True)
    ]
    config = DatasetConfig(
        output=args.output,
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
    metadata = {
        "molecule": "Ac-(Aib)9-NH2 (AIB9), heavy atoms only",
        "units": "Angstrom",
        "force_field": "CHARMM36 (OpenMM charmm36.xml: residue AIB, patches ACE and CT2)",
        "solvent": "implicit, OpenMM GBSAOBCForce (OBC2) with mbondi2-like per-element radii, no cutoff",
        "integrator": "LangevinMiddleIntegrator",
        "constraints": "HBonds, hydrogen mass repartitioned",
        "time_between_frames_ns": ns_per_frame,
        "simulated_ns_per_replica": ns_per_frame * config.frames_per_replica,
        "config": {k: v for k, v in asdict(config).items() if k != "output"},
        "openmm_version": openmm.__version__,
        "rdkit_version": Chem.rdBase.rdkitVersion,
        "python": platform.python_version(),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "command": "scripts/make_aib9_dataset.py " + " ".join(sys.argv[1:]),
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
