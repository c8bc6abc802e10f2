"""densemtl-lab: learn, reproduce and explore dense multi-task learning with DenseMTL."""

__version__ = "0.1.0"
