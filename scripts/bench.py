"""Benchmark both packages: training and sampling throughput, peak memory, FLOPs and MFU.

    uv run python scripts/bench.py                 # (make bench) default and reference settings
    uv run python scripts/bench.py --json bench.json --device cuda
    uv run python scripts/bench.py --no-compile --source /path/to/other/checkout   # side by side
    uv run python scripts/bench.py --settings reference --original /tmp/orig --original-python /tmp/refvenv/bin/python


For each package and setting it times the full training step (forward, loss, backward,
optimiser step) on batches of the embedded AIB9 data after warm-up steps, and reports the
median over repeats in molecules/s; then prior sampling in conformations/s, as the sampling
commands decode (compiled unless ``--no-compile``, in bf16 where ``--precision`` trains in bf16, as
the commands do by default). Each
measurement runs in a fresh process so that the peak memory (resident set size on the CPU,
``torch.cuda.max_memory_allocated`` on a GPU) belongs to it alone. On CUDA it also counts the
model FLOPs of one training step (``torch.utils.flop_counter``) and reports the achieved
fraction of the GPU's peak dense bf16 throughput (MFU). The step is the one training runs:
the model's forward pass compiled with ``torch.compile`` (unless ``--no-compile``), bf16
autocast as training's ``--precision`` (auto: on CUDA and on CPUs with native bfloat16), fused AdamW. ``--source DIR``
measures the packages of another checkout (an older version, say) instead of this one, so
that versions can be compared on one machine. ``--original DIR`` also times the original
implementation (with ``../shared/reference_bench/original_throughput.py``) at its batch sizes
and prints it beside this project at the original's settings, with the ratio.

This is a benchmark, not a test: numbers depend on the machine, so they are printed, not checked.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"bond_vae": "MolecularVAE", "pairwise_vae": "MolecularVAEMSE"}
# the reference implementation's settings, per package
REFERENCE_SETTINGS = {
    "bond_vae": {"hidden": 256, "encoder_layers": 3, "decoder_layers": 2, "latent_dim": 36, "batch_size": 256},
    "pairwise_vae": {"hidden": 256, "encoder_layers": 3, "decoder_layers": 5, "latent_dim": 128, "batch_size": 128},
}
TINY_SETTINGS = {"hidden": 16, "encoder_layers": 1, "decoder_layers": 1, "latent_dim": 4, "batch_size": 4}
# peak dense bf16 tensor throughput (FLOP/s) of GPUs we know, by a part of their name
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "RTX 4090": 165e12}


@dataclass
class Measurement:
    package: str
    setting: str
    code: str
    compiled: bool
    bf16: bool
    pair_channels: int
    vector_channels: int
    device: str
    batch_size: int
    parameters: int
    train_molecules_per_s: float
    sample_batch: int
    sample_conformations_per_s: float
    peak_memory_mib: float
    flops_per_molecule: float | None
    mfu: float | None


def package_module(package: str, *names: str) -> ModuleType:
    """The first of the modules ``names`` that ``package`` has: a --source checkout may predate the sub-packages."""
    for name in names:
        try:
            module = importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError:
            continue
        return module
    raise ModuleNotFoundError(f"{package} has none of the modules {', '.join(names)}")


def build_model(
    package: str,
    setting: dict | None,
    pair_channels: int | None,
    device: torch.device,
    vector_channels: int | None = None,
) -> tuple[torch.nn.Module, torch.Tensor, int]:
    """The package's model at a setting (None: its defaults), decoder pair channels and encoder
    vector channels (None: the package's default), and a data tensor on ``device``."""
    data_module = package_module(package, "data.dataset", "data")
    model_module = package_module(package, "model.vae", "model")
    dataset = data_module.load_dataset(None)
    config = model_module.ModelConfig()
    batch_size = 64
    if setting is not None:
        config.latent_dim = setting["latent_dim"]
        config.encoder.hidden_channels = config.decoder.hidden_channels = setting["hidden"]
        config.encoder.num_layers = setting["encoder_layers"]
        config.decoder.num_layers = setting["decoder_layers"]
        config.encoder.num_heads = min(config.encoder.num_heads, setting["hidden"])
        batch_size = setting["batch_size"]
    if pair_channels is not None:
        config.decoder.pair_channels = pair_channels
    if vector_channels is not None:
        config.encoder.vector_channels = vector_channels
    coords = torch.from_numpy(dataset.coords)
    model = getattr(model_module, PACKAGES[package])(
        config,
        torch.from_numpy(dataset.topology.atomic_numbers),
        torch.from_numpy(dataset.topology.bonds),
        coords[0],
    )
    return model.to(device), coords.to(device), batch_size


def batch_decoder(package: str) -> Callable[[torch.nn.Module, torch.Tensor, int, bool, bool], object]:
    """The package's ``sample.decode_in_batches(model, latents, batch_size, compile_decoder, bf16)``."""
    decode_in_batches = package_module(package, "sampling.inference", "inference", "sample").decode_in_batches
    parameters = inspect.signature(decode_in_batches).parameters
    if "bf16" in parameters:
        return decode_in_batches
    if "compile_decoder" in parameters:  # a --source checkout from before bf16 sampling decodes in float32
        return lambda model, latents, batch_size, compile_decoder, bf16: decode_in_batches(
            model, latents, batch_size, compile_decoder
        )
    # a --source checkout from before compiled sampling decodes eagerly
    return lambda model, latents, batch_size, compile_decoder, bf16: decode_in_batches(model, latents, batch_size)


def uses_bf16(package: str, precision: str, device: torch.device) -> bool:
    """Whether training's ``--precision`` means bf16 autocast on ``device``, by the package's rule."""
    utils = package_module(package, "runtime", "utils")
    if hasattr(utils, "uses_bf16"):
        return utils.uses_bf16(precision, device)
    # a --source checkout from before the CPU rule: auto was bf16 on CUDA only
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for part, flops in PEAK_BF16_FLOPS.items() if part in name), None)


def measure(
    package: str,
    setting_name: str,
    device_name: str,
    warmup: int,
    repeats: int,
    steps: int,
    sample_batch: int,
    compile_model: bool,
    precision: str,
    pair_channels: int | None,
    batch_size: int | None,
    source: str | None,
    vector_channels: int | None = None,
) -> Measurement:
    """One package at one setting, in the current process (importing it from ``source`` if given)."""
    if source is not None:
        sys.path.insert(0, str(Path(source) / "packages" / package / "src"))
    device = torch.device(device_name)
    setting = {"default": None, "reference": REFERENCE_SETTINGS[package], "tiny": TINY_SETTINGS}[setting_name]
    torch.manual_seed(0)
    model, coords, setting_batch_size = build_model(package, setting, pair_channels, device, vector_channels)
    batch_size = batch_size or setting_batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    eager_forward = model.forward
    if compile_model:
        model.forward = torch.compile(eager_forward)  # what the loss calls
    amp = uses_bf16(package, precision, device)
    generator = torch.Generator(device=device).manual_seed(0)

    def train_step() -> None:
        index = torch.randint(0, len(coords), (batch_size,), device=device, generator=generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            terms = model.loss(coords[index], beta=1e-3)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        train_step()
    rates = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            train_step()
        synchronize(device)
        rates.append(steps * batch_size / (time.perf_counter() - start))

    flops_per_molecule = mfu = None
    if device.type == "cuda":
        from torch.utils.flop_counter import FlopCounterMode

        model.forward = eager_forward  # the counter sees aten operations, not compiled kernels
        with FlopCounterMode(display=False) as counter:
            train_step()
        flops_per_molecule = counter.get_total_flops() / batch_size
        peak = peak_flops(device)
        mfu = statistics.median(rates) * flops_per_molecule / peak if peak else None

    # prior sampling as bond-vae-sample / pairwise-vae-sample decode: batches of sample_batch through the
    # package's decode_in_batches (compiled as --compile says, in the precision --precision gives training,
    # as the commands' own --precision does), after a first call that compiles
    decode_in_batches = batch_decoder(package)
    # at least two batches, so that the commands' rule (compile when more than one batch) applies
    latents = torch.randn(max(2, repeats) * sample_batch, model.latent_dim, device=device, generator=generator)
    decode_in_batches(model, latents[: 2 * sample_batch], sample_batch, compile_model, amp)
    synchronize(device)
    start = time.perf_counter()
    decode_in_batches(model, latents, sample_batch, compile_model, amp)
    synchronize(device)
    sample_rate = len(latents) / (time.perf_counter() - start)

    if device.type == "cuda":
        peak_memory = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Measurement(
        package=package,
        setting=setting_name,
        code=source or "this checkout",
        compiled=compile_model,
        bf16=amp,
        pair_channels=model.decoder.layers[0].source_proj.out_features,
        vector_channels=model.encoder.vec_out_norm.weight.numel(),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        batch_size=batch_size,
        parameters=sum(p.numel() for p in model.parameters()),
        train_molecules_per_s=statistics.median(rates),
        sample_batch=sample_batch,
        sample_conformations_per_s=sample_rate,
        peak_memory_mib=peak_memory,
        flops_per_molecule=flops_per_molecule,
        mfu=mfu,
    )


def _measure_in_child(arguments: tuple) -> dict:
    return asdict(measure(*arguments))


def measure_in_fresh_process(job: tuple) -> Measurement:
    """Run ``measure(*job)`` in a new process, so that its peak memory is its own.

    Raises:
        BrokenProcessPool: the process died (on Linux usually the out-of-memory killer).
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return Measurement(**pool.submit(_measure_in_child, job).result())


ORIGINAL_MODELS = {"bond_vae": "bond", "pairwise_vae": "pairwise"}
# batch sizes at which the original is timed: its pairwise loss spans the whole batch (pdist of
# B * 58 atoms), so batch 128 does not fit in 24 GB
ORIGINAL_BATCHES = {"bond": [32, 128], "pairwise": [32]}
TIMING_SCRIPT = ROOT.parent / "shared" / "reference_bench" / "original_throughput.py"


def measure_original(source: Path, python: str, packages: list[str], steps: int, warmup: int) -> list[dict]:
    """Time the original implementation with the team's timing script (one JSON line per model and batch).

    ``source`` is an extract of the original repository (see ../shared/reference_bench/README.md);
    ``python`` an interpreter with torch and torch_geometric.
    """
    if not TIMING_SCRIPT.is_file():
        sys.exit(f"error: {TIMING_SCRIPT}: the timing script of the original is not there")
    environment = os.environ | {"PYTHONPATH": str(TIMING_SCRIPT.parent / "shims")}
    rows = []
    for package in packages:
        model = ORIGINAL_MODELS[package]
        batches = [str(batch) for batch in ORIGINAL_BATCHES[model]]
        print(f"measuring the original {model} model at batch {', '.join(batches)}...", file=sys.stderr, flush=True)
        command = [python, str(TIMING_SCRIPT), str(source), "--models", model, "--batch", *batches]
        command += ["--steps", str(steps), "--warmup", str(warmup), "--threads", str(torch.get_num_threads())]
        completed = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
        lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
        if completed.returncode != 0 or not lines:
            sys.exit(f"error: timing the original {model} model failed: {completed.stderr.strip()[-300:]}")
        rows += [json.loads(line) | {"package": package} for line in lines]
    return rows


def format_comparison(rows: list[Measurement], original: list[dict]) -> str:
    """Side by side: the original at its best batch against this project at the original's settings, at
    its best batch (of those measured)."""
    header = (
        f"{'package':<13} {'original mol/s':>15} {'at batch':>8} {'peak MiB':>9} | {'this mol/s':>10} {'at batch':>8} "
        f"{'peak MiB':>9} {'ratio':>6} | {'sample conf/s':>13} {'sample/train':>12}"
    )
    lines = [header, "-" * len(header)]
    for package in dict.fromkeys(row.package for row in rows):
        timings = [timing for timing in original if timing["package"] == package]
        ours = [row for row in rows if row.package == package and row.setting == "reference"]
        if not timings or not ours:
            continue
        best = max(timings, key=lambda timing: timing["mol_per_s"])
        row = max(ours, key=lambda measurement: measurement.train_molecules_per_s)
        lines.append(
            f"{row.package:<13} {best['mol_per_s']:>15.2f} {best['batch']:>8} {best['peak_rss_mib']:>9.0f} | "
            f"{row.train_molecules_per_s:>10.2f} {row.batch_size:>8} {row.peak_memory_mib:>9.0f} "
            f"{row.train_molecules_per_s / best['mol_per_s']:>5.1f}x | {row.sample_conformations_per_s:>13.1f} "
            f"{row.sample_conformations_per_s / row.train_molecules_per_s:>11.1f}x"
        )
    return "\n".join(lines)


def format_table(rows: list[Measurement]) -> str:
    header = (
        f"{'package':<13} {'setting':<10} {'compiled':<8} {'bf16':<4} {'pair':>4} {'vec':>4} {'batch':>5} "
        f"{'params':>10} {'train mol/s':>12} {'sample conf/s':>14} {'sample/train':>12} {'peak MiB':>9} "
        f"{'GFLOP/mol':>10} {'MFU':>6}  device"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        flops = f"{r.flops_per_molecule / 1e9:10.2f}" if r.flops_per_molecule else f"{'-':>10}"
        mfu = f"{100 * r.mfu:5.1f}%" if r.mfu is not None else f"{'-':>6}"
        lines.append(
            f"{r.package:<13} {r.setting:<10} {'yes' if r.compiled else 'no':<8} {'yes' if r.bf16 else 'no':<4} "
            f"{r.pair_channels:>4} {r.vector_channels:>4} {r.batch_size:>5} {r.parameters:>10,} "
            f"{r.train_molecules_per_s:>12.1f} "
            f"{r.sample_conformations_per_s:>14.1f} {r.sample_conformations_per_s / r.train_molecules_per_s:>11.1f}x "
            f"{r.peak_memory_mib:>9.0f} {flops} {mfu}  {r.device}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES), choices=list(PACKAGES))
    parser.add_argument(
        "--settings", nargs="+", default=["default", "reference"], choices=["default", "reference", "tiny"]
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed training steps first; keep it at 2 or more when compiling: the pairwise model compiles "
        "a second time at its second step (its radius graph changes size)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (the median is reported)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed repeat")
    parser.add_argument("--sample-batch", type=int, default=1024, help="conformations decoded per sampling call")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="torch.compile the forward pass, as training does (default: on)",
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="as training's --precision: auto is bf16 on CUDA and on CPUs with native bfloat16, else fp32",
    )
    parser.add_argument(
        "--pair-channels",
        type=int,
        help="the decoder's pair channels at every setting (default: each package's default)",
    )
    parser.add_argument(
        "--vector-channels",
        type=int,
        help="the encoder's vector channels at every setting (default: each package's default)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        nargs="+",
        help="training batch(es) at every setting, each measured in turn (default: each setting's own: 64 at "
        "default, bond 256 and pairwise 128 at reference); the side-by-side takes this project's fastest",
    )
    parser.add_argument(
        "--source", help="measure the packages of this checkout (its root folder) instead of this one's"
    )
    parser.add_argument(
        "--original",
        type=Path,
        metavar="DIR",
        help="also time the original implementation extracted in DIR (see ../shared/reference_bench/README.md) "
        "and print it side by side with this project at the original's settings",
    )
    parser.add_argument(
        "--original-python",
        default=sys.executable,
        metavar="PYTHON",
        help="interpreter with torch and torch_geometric for --original (default: this one)",
    )
    parser.add_argument("--json", type=Path, help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"error: --device {args.device} requested but CUDA is not available")
    if args.original is not None and (not args.original.is_dir() or "reference" not in args.settings):
        sys.exit(f"error: --original {args.original} needs an existing folder and the reference settings")
    jobs = [
        (
            p,
            s,
            args.device,
            args.warmup,
            args.repeats,
            args.steps,
            args.sample_batch,
            args.compile,
            args.precision,
            args.pair_channels,
            batch_size,
            args.source,
            args.vector_channels,
        )
        for p in args.packages
        for s in args.settings
        for batch_size in args.batch_size or [None]
    ]
    rows, failures = [], []
    for job in jobs:
        print(f"measuring {job[0]} at {job[1]} settings on {job[2]}...", file=sys.stderr, flush=True)
        try:
            rows.append(measure_in_fresh_process(job))
            print(format_table(rows[-1:]), file=sys.stderr, flush=True)  # so far, in case a later one hangs
            if args.json:
                args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
        except (BrokenProcessPool, RuntimeError) as error:  # killed (out of host memory) or e.g. CUDA out of memory
            reason = (
                "the measuring process died (out of memory?)"
                if isinstance(error, BrokenProcessPool)
                else str(error).splitlines()[0]
            )
            failures.append(f"{job[0]} at {job[1]} settings: {reason}")
            print(f"error: {failures[-1]}", file=sys.stderr, flush=True)
    original = []
    if args.original is not None:
        original = measure_original(args.original, args.original_python, args.packages, args.steps, args.warmup)
    if rows:
        print(format_table(rows))
    if original:
        print("\nThe original implementation and this project at the original's settings, each at its best batch:")
        print(format_comparison(rows, original))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows] + original, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if failures:
        sys.exit(f"error: {len(failures)} of {len(jobs)} measurements failed: " + "; ".join(failures))


if __name__ == "__main__":
    main()
