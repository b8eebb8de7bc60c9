"""Device and dtype settings: syntax, ``auto`` on every kind of host, and the record."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer import devices
from trainer.contract import TrialSpec
from trainer.errors import ConfigError

AMX = frozenset({"avx512f", "amx_tile", "amx_bf16", "avx512_bf16"})
ZEN4 = frozenset({"avx512f", "avx512_bf16"})
AVX2 = frozenset({"avx2", "fma"})


@pytest.mark.parametrize(("flags", "expected"), [(AMX, "bfloat16"), (ZEN4, "bfloat16"),
                                                 (AVX2, "float32"), (frozenset(), "float32")])
def test_auto_dtype_on_a_cpu_is_bf16_only_with_native_bf16(flags: frozenset[str],
                                                            expected: str) -> None:
    assert devices.resolve_dtype("auto", "cpu", flags=flags) == expected


def test_auto_dtype_on_cuda_is_bf16_and_explicit_dtypes_are_kept() -> None:
    assert devices.resolve_dtype("auto", "cuda:3", flags=AVX2) == "bfloat16"
    for name in ("float32", "bfloat16"):
        assert devices.resolve_dtype(name, "cpu", flags=AVX2) == name
        assert devices.resolve_dtype(name, "cuda:0", flags=AMX) == name


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx512f amx_bf16\n\n")
    devices.cpu_flags.cache_clear()
    try:
        assert devices.cpu_flags(info) == frozenset({"fpu", "avx512f", "amx_bf16"})
        assert devices.cpu_flags(tmp_path / "missing") == frozenset()
    finally:
        devices.cpu_flags.cache_clear()


def test_devices_resolve_here_and_a_missing_gpu_is_refused_by_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cuda_count", lambda: 0)
    assert devices.resolve_device("auto") == "cpu"
    assert devices.resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="device: cuda:1 is not available.*no CUDA device"):
        devices.resolve_device("cuda:1")
    monkeypatch.setattr(devices, "cuda_count", lambda: 2)
    assert devices.resolve_device("auto") == "cuda:0"
    assert devices.resolve_device("cuda") == "cuda:0"
    assert devices.resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ConfigError, match="accepted: cpu or cuda:0..cuda:1"):
        devices.resolve_device("cuda:2")


def test_resolve_names_both_settings_once_for_the_record(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cuda_count", lambda: 1)
    placement = devices.resolve(device="auto", dtype="auto")
    assert placement.to_record() == {"device": "cuda:0", "dtype": "bfloat16",
                                     "requested_device": "auto", "requested_dtype": "auto"}


@pytest.mark.parametrize(("field", "value", "accepted"), [
    ("dtype", "fp16", "float32, bfloat16, auto"),
    ("dtype", "", "float32, bfloat16, auto"),
    ("device", "gpu", "cpu, cuda, cuda:N or auto"),
    ("device", "cuda:x", "cpu, cuda, cuda:N or auto"),
    ("device", "x" * 500, "at most 16 characters"),
])
def test_bad_settings_name_the_field_and_the_accepted_values(field: str, value: str,
                                                              accepted: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrialSpec(**{field: value})
    assert info.value.field == field and accepted in str(info.value)


def test_the_spec_defaults_to_auto_and_host_capabilities_name_the_cpu() -> None:
    spec = TrialSpec()
    assert (spec.dtype, spec.device) == ("auto", "auto")
    caps = devices.host_capabilities()
    assert caps["auto_dtype_cpu"] in ("float32", "bfloat16")
    assert caps["auto_dtype_cpu"] == ("bfloat16" if caps["amx_bf16"] or caps["avx512_bf16"]
                                      else "float32")
    rates = devices.gemm_rates(rows=16, shape=(32, 32), seconds=0.01)
    assert set(rates) == {"float32", "bfloat16"} and min(rates.values()) > 0
