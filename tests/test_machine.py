"""Tests for densemtl_lab.machine: the CPU named in reports and study provenance, without torch."""

from __future__ import annotations

import platform
import subprocess
import sys

from densemtl_lab.machine import cpu_model

_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme amx_bf16

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
"""


def test_the_model_name_comes_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(_CPUINFO)
    assert cpu_model(cpuinfo) == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"


def test_without_cpuinfo_the_platform_answers(tmp_path):
    assert cpu_model(tmp_path / "absent") == (platform.processor() or "unknown")
    no_name = tmp_path / "cpuinfo"
    no_name.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n")
    assert cpu_model(no_name) == (platform.processor() or "unknown")


def test_naming_the_cpu_does_not_import_torch():
    code = "import sys; from densemtl_lab.machine import cpu_model; cpu_model(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
