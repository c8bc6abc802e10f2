"""Toy-scene speed: images/s rendered with all labels per domain, and images/s written to disk.

    python bench/bench_toy.py [--images 1000] [--size 128 256] [--workers 2]

Prints one JSON object. Rendering goes through a DataLoader with `--workers` processes (how the
lessons load on the fly); writing goes through toy_store.write_toy_dataset with as many processes.
The 1-minute load average before the run is reported: figures taken on a busy CPU are pessimistic.
CPU seconds per image (this process and its finished workers) are reported too: on a busy machine
they give a fairer estimate of the rate on idle cores, `cores / cpu_s_per_image`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from typing import Callable

import torch
from torch.utils.data import DataLoader

from densemtl_lab.data import ToyScenes
from densemtl_lab.data.toy_store import write_toy_dataset
from densemtl_lab.machine import cpu_model
from densemtl_lab.runtime import tune_cpu_allocator


def cpu_seconds() -> float:
    """CPU time of this process plus its finished (joined) child processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(images: int, workers: int, run: Callable[[], None]) -> dict[str, float]:
    """Wall and CPU time of `run()`, which handles `images` images with `workers` processes."""
    cpu_before, started = cpu_seconds(), time.perf_counter()
    run()
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    return {"images": images, "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 1),
            "cpu_ms_per_image": round(cpu / images * 1000, 2),
            "images_per_s_on_idle_cores": round(workers * images / cpu, 1)}


def render_rate(dataset: ToyScenes, workers: int) -> dict[str, float]:
    """Images/s through a DataLoader that returns every label (batches of 50)."""
    loader = DataLoader(dataset, batch_size=50, num_workers=workers)
    return timed(len(dataset), workers, lambda: sum(len(batch["name"]) for batch in loader))


def single_process_ms(dataset: ToyScenes, count: int = 100) -> float:
    """Milliseconds per sample in this process (one thread), the cost of __getitem__."""
    started = time.perf_counter()
    for index in range(count):
        dataset[index]
    return round((time.perf_counter() - started) / count * 1000, 2)


def write_rate(length: int, size: tuple[int, int], workers: int) -> dict[str, float]:
    """Images/s written by write_toy_dataset (source domain), and the bytes per image on disk."""
    with tempfile.TemporaryDirectory() as folder:
        result = timed(length, workers, lambda: write_toy_dataset(folder, ToyScenes(length, size), workers=workers,
                                                                  progress=False))
        size_on_disk = sum(entry.stat().st_size for entry in os.scandir(folder))
    return result | {"bytes_per_image": size_on_disk // length}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images per domain")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    size = tuple(args.size)
    load_before = os.getloadavg()[0]
    torch.set_num_threads(1)
    tune_cpu_allocator()  # as the Trainer does; forked DataLoader workers inherit it
    results: dict[str, object] = {
        "size": list(size), "workers": args.workers, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "load_average_1min_before": round(load_before, 2),
    }
    total_seconds = 0.0
    for domain in ("source", "target"):
        dataset = ToyScenes(args.images, size, domain=domain, severity=0.5)
        rate = render_rate(dataset, args.workers)
        total_seconds += rate["seconds"]
        results[f"render_{domain}"] = rate | {"single_process_ms_per_image": single_process_ms(dataset)}
    results["render_both_domains_seconds"] = round(total_seconds, 2)
    results["render_both_domains_images_per_s"] = round(2 * args.images / total_seconds, 1)
    results["write"] = write_rate(args.images, size, args.workers)
    results["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
