"""Training infrastructure shared by the systems: atomic files, metrics, progress, checkpoints."""

from jaxsys.train.checkpoint import Checkpointer
from jaxsys.train.io import atomic_write_bytes, atomic_write_json, atomic_write_text, make_run_dir
from jaxsys.train.metrics import MetricsWriter, read_metrics
from jaxsys.train.progress import Progress

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "make_run_dir",
    "MetricsWriter",
    "read_metrics",
    "Progress",
    "Checkpointer",
]
