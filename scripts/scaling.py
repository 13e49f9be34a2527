"""How training cost grows with the number of atoms: step time and peak memory of both packages.

    uv run python scripts/scaling.py                      # CPU: 58, 174, 522 and 1,044 atoms
    uv run python scripts/scaling.py --device cuda --atoms 58 522 1044 2088 --json scaling.json

A molecule of N atoms is made of k = N / 58 copies of an AIB9 frame side by side (centroids 40 A
apart, no bonds between them), so every size has the atoms, bonds and local geometry of real data. For each
package and size, each in a fresh process (glibc keeps what a process freed, so a peak is only its own
in a process of its own): three training steps of the default model (eager fp32) on ``--batch``
molecules after one warm-up step, and one decode of ``--decode`` molecules without autograd, as the
validation pass and the evaluation report decode. It prints the median step time, the peak memory of
the step and of the decode (``VmHWM`` less the resident memory before, on the CPU;
``torch.cuda.max_memory_allocated`` on CUDA) beside the memory check's estimates
(``training/memory.py``, with its 64 MiB allowance for parameters, optimiser state and slack), and
the largest molecule whose training step fits in a given memory by those estimates (the passes without
autograd decode as many molecules at once as fit, so they do not limit it).

This is a benchmark, not a test: numbers depend on the machine, so they are printed, not checked.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import torch

PACKAGES = {"bond_vae": "MolecularVAE", "pairwise_vae": "MolecularVAEMSE"}
AIB9_ATOMS = 58
SPACING = 40.0  # Angstrom between the centroids of neighbouring copies of the AIB9 frame
GIB = 2**30


def tiled_molecule(dataset, copies: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(copies x B, N, 3) frames, (N,) atomic numbers and (n_bonds, 2) bonds of ``copies`` AIB9 molecules side by
    side, N = 58 x copies; each copy takes its own frames of the embedded data."""
    coords = torch.from_numpy(dataset.coords)
    coords = coords - coords.mean(dim=1, keepdim=True)
    frames = torch.cat(
        [coords[k::copies][: len(coords) // copies] + torch.tensor([SPACING * k, 0.0, 0.0]) for k in range(copies)],
        dim=1,
    )
    atomic_numbers = torch.from_numpy(np.tile(dataset.topology.atomic_numbers, copies))
    bonds = torch.from_numpy(
        np.concatenate([dataset.topology.bonds + AIB9_ATOMS * k for k in range(copies)]).astype(np.int64)
    )
    return frames, atomic_numbers, bonds


def peak_resident_bytes() -> int:
    """``VmHWM`` of this process (bytes)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def resident_bytes() -> int:
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def reset_peak(device: torch.device) -> int:
    """Start a peak-memory measurement; returns the baseline to subtract (bytes)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    return resident_bytes()


def peak_since(device: torch.device, baseline: int) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - baseline
    return peak_resident_bytes() - baseline


def measure(package: str, n_atoms: int, batch: int, decode: int, device_name: str) -> dict:
    """One package at one size, in the current process: the training steps, or (``decode`` > 0) the peak memory
    of decoding ``decode`` molecules without autograd. Glibc keeps memory a process freed, so each runs in a
    process of its own, its peak measured from before its first operation."""
    data = importlib.import_module(f"{package}.data.dataset")
    vae = importlib.import_module(f"{package}.model.vae")
    memory = importlib.import_module(f"{package}.training.memory")
    device = torch.device(device_name)
    torch.manual_seed(0)
    frames, atomic_numbers, bonds = tiled_molecule(data.load_dataset(None), n_atoms // AIB9_ATOMS)
    config = vae.ModelConfig()
    model = getattr(vae, PACKAGES[package])(config, atomic_numbers, bonds, frames[0]).to(device)
    frames = frames.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        index = torch.randint(0, len(frames), (batch,), device=device, generator=generator)
        terms = model.loss(frames[index], beta=1e-3)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()

    if decode:
        model.eval()
        baseline = reset_peak(device)
        with torch.no_grad():
            model.decode(torch.randn(decode, model.latent_dim, device=device, generator=generator))
        return {"decode_peak_mib": peak_since(device, baseline) / 2**20}
    baseline = reset_peak(device)
    times = []
    for _ in range(4):  # the first one warms up (and allocates the optimiser state): not timed
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    step_peak = peak_since(device, baseline)
    # the estimates as the memory check computes them, with its allowance for parameters, gradients, AdamW moments
    # and the allocator's slack
    estimate = memory.training_step_bytes(n_atoms, batch, config)
    return {
        "package": package,
        "atoms": n_atoms,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "batch": batch,
        "step_s": statistics.median(times[1:]),
        "step_peak_mib": step_peak / 2**20,
        "step_estimate_mib": estimate / 2**20,
        "decode_estimate_mib_per_molecule": memory.no_grad_bytes(n_atoms, config) / 2**20,
        "overhead_mib": memory.OVERHEAD_BYTES / 2**20,
    }


def largest_fitting(package: str, budget_gib: float) -> int:
    """Largest atom count (a multiple of 2) whose batch-1 training step fits in ``budget_gib`` by the memory check's
    estimate at the package's default model (passes without autograd decode fewer molecules at once where needed)."""
    memory = importlib.import_module(f"{package}.training.memory")
    config = importlib.import_module(f"{package}.model.vae").ModelConfig()
    n = 2
    while memory.training_step_bytes(n + 2, 1, config) <= budget_gib * GIB:
        n += 2
    return n


def _child(arguments: tuple) -> dict:
    return measure(*arguments)


def in_fresh_process(job: tuple) -> dict | None:
    """``measure(*job)`` in a new process; None when the process died (the out-of-memory killer)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(_child, job).result()
        except BrokenProcessPool:
            return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atoms", type=int, nargs="+", default=[58, 174, 522, 1044], help="multiples of 58")
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES), choices=list(PACKAGES))
    parser.add_argument("--batch", type=int, default=1, help="molecules per training step")
    parser.add_argument("--decode", type=int, default=4, help="molecules decoded at once without autograd")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory-gib", type=float, nargs="+", default=[24.0, 80.0], help="budgets for the limits")
    parser.add_argument("--json", type=Path, help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    if any(n % AIB9_ATOMS for n in args.atoms):
        parser.error(f"--atoms must be multiples of {AIB9_ATOMS}")
    print("package       atoms  step s  step MiB (est.)   decode MiB (est.)")
    rows = []
    for package in args.packages:
        for n_atoms in args.atoms:
            row = in_fresh_process((package, n_atoms, args.batch, 0, args.device))
            decoded = in_fresh_process((package, n_atoms, args.batch, args.decode, args.device))
            if row is None or decoded is None:
                print(f"{package:13s} {n_atoms:5d}  killed (out of memory)")
                continue
            decode_estimate = args.decode * row["decode_estimate_mib_per_molecule"] + row["overhead_mib"]
            row.update(decoded, decoded=args.decode, decode_estimate_mib=decode_estimate)
            rows.append(row)
            print(
                f"{package:13s} {n_atoms:5d} {row['step_s']:7.2f} {row['step_peak_mib']:8.0f} "
                f"({row['step_estimate_mib']:6.0f}) {row['decode_peak_mib']:10.0f} ({row['decode_estimate_mib']:6.0f})"
            )
    limits = {
        package: {f"{gib:g}": largest_fitting(package, gib) for gib in args.memory_gib} for package in args.packages
    }
    for package, by_budget in limits.items():
        for gib, largest in by_budget.items():
            print(f"{package}: in {gib} GiB a training step of one molecule fits up to {largest} atoms")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "limits": limits}, indent=2) + "\n")


if __name__ == "__main__":
    main()
