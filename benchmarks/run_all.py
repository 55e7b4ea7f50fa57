"""`make bench`: run every benchmark, each writing JSON to benchmarks/results/."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_augment, bench_cache_epoch, bench_series_loading

if __name__ == "__main__":
    for module in (bench_series_loading, bench_cache_epoch, bench_augment):
        print(f"== {module.__name__}", flush=True)
        module.main()
