"""The machine a result was measured on, named without importing torch (for reports and provenance)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name: Linux's /proc/cpuinfo, else what `platform` knows, else "unknown".

    `platform.processor()` alone is empty on Linux, which left the benches' reports without a CPU.
    """
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
