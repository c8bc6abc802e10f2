"""Pytest set-up shared by the unit tests and nbval's run of the committed notebooks.

Kernels started by nbval and papermill inherit this environment: the notebooks run in the `smoke`
profile, write into a throw-away folder, draw static figures instead of widgets, and use a
non-interactive matplotlib backend.
"""

import os
import shutil
import tempfile

_SCRATCH = tempfile.mkdtemp(prefix="densemtl-tests-")

os.environ.setdefault("DENSEMTL_PROFILE", "smoke")
os.environ.setdefault("DENSEMTL_OUTPUT_DIR", os.path.join(_SCRATCH, "nbval-outputs"))
os.environ.setdefault("DENSEMTL_WIDGETS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_unconfigure(config) -> None:
    """Delete the notebooks' scratch folder: a full run leaves about 3 GB of checkpoints there."""
    shutil.rmtree(_SCRATCH, ignore_errors=True)
