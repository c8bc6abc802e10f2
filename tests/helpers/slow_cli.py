"""Run `densemtl-lab` with every training step slowed down and reported, for kill and Ctrl-C tests.

Usage: python tests/helpers/slow_cli.py DELAY MARKER CLI-ARGS...
After each optimiser step it writes the number of finished steps to MARKER, then sleeps DELAY seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from densemtl_lab import cli, train

delay, marker = float(sys.argv[1]), Path(sys.argv[2])
original_step = train.Trainer.train_step


def slow_step(self: train.Trainer, batch: dict) -> list[float]:
    values = original_step(self, batch)
    marker.write_text(str(self.step + 1))
    time.sleep(delay)
    return values


train.Trainer.train_step = slow_step
raise SystemExit(cli.main(sys.argv[3:]))
