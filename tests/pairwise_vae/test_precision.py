"""--precision auto: bfloat16 on CUDA and on CPUs that compute in it natively, read from /proc/cpuinfo."""

from __future__ import annotations

import pytest
import torch
from pairwise_vae import runtime
from pairwise_vae.runtime import cpu_has_native_bf16, uses_bf16

CPUINFO = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f avx512bw {extra}\n\n"


@pytest.mark.parametrize(("extra", "native"), [("avx512_bf16", True), ("amx_bf16 amx_tile", True), ("", False)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, extra, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=extra))
    assert cpu_has_native_bf16(cpuinfo) is native


def test_no_cpuinfo_means_no_native_bf16(tmp_path):
    assert cpu_has_native_bf16(tmp_path / "absent") is False


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_device_and_the_cpu(monkeypatch, capsys, native):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    assert uses_bf16("auto", torch.device("cpu")) is native
    assert uses_bf16("auto", torch.device("cuda")) is True
    assert uses_bf16("fp32", torch.device("cuda")) is False
    assert capsys.readouterr().err == ""
    assert uses_bf16("bf16", torch.device("cpu")) is True
    warning = capsys.readouterr().err
    if native:
        assert warning == ""
    else:
        assert warning.startswith("warning: --precision bf16 on a CPU without native bfloat16") and "auto" in warning
