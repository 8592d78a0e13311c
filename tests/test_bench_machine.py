"""benchmarks/machine.py: the CPU line printed with every benchmark figure (model and matrix features)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location("machine", Path(__file__).parents[1] / "benchmarks" / "machine.py")
machine = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(machine)

INTEL = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 fma avx512f avx512_bf16 amx_tile amx_bf16 amx_int8\n\nprocessor\t: 1\nmodel name\t: other\n"  # noqa: E501
AMD = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 fma avx512f avx512_bf16\n"


def test_describes_the_model_and_which_matrix_features_it_has(tmp_path):
    for text, model, has, lacks in (
        (INTEL, "Intel(R) Xeon(R) Processor", "avx512f avx512_bf16 amx_tile amx_bf16 amx_int8 avx2 fma", "avx512_fp16"),
        (AMD, "AMD EPYC 9R14", "avx512f avx512_bf16 avx2 fma", "avx512_fp16 amx_tile amx_bf16 amx_int8"),
    ):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        line = machine.describe_machine(str(path))
        assert line.startswith(f"CPU: {model}, "), line
        assert f"matrix features: {has} (no {lacks})" in line, line


def test_unreadable_cpuinfo_still_gives_a_line(tmp_path):
    line = machine.describe_machine(str(tmp_path / "missing"))
    assert line.startswith("CPU: ") and "matrix features: unknown" in line
