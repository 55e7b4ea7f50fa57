"""`make bench`: run every benchmark, each writing JSON to benchmarks/results/."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import (
    bench_augment,
    bench_cache_epoch,
    bench_classification,
    bench_equalise,
    bench_explain,
    bench_explain_phantoms,
    bench_inference_latency,
    bench_operating_point,
    bench_parallel_read,
    bench_predict,
    bench_resize,
    bench_series_loading,
    bench_serving,
    bench_training_throughput,
    bench_transfer,
    bench_typicality,
    bench_unseen_brats,
)

if __name__ == "__main__":
    quick = (
        bench_series_loading,
        bench_resize,
        bench_cache_epoch,
        bench_augment,
        bench_equalise,
        bench_inference_latency,
        bench_explain_phantoms,
        bench_serving,
        bench_predict,
        bench_parallel_read,
        bench_operating_point,  # re-scores the logits bench_protocol.py saved (run by hand)
        bench_typicality,
    )
    # the training benchmarks last: classification quality is 3 seeds x 2 datasets x 10 minutes
    for module in (
        *quick,
        bench_explain,
        bench_training_throughput,
        bench_transfer,
        bench_unseen_brats,
        bench_classification,
    ):
        print(f"== {module.__name__}", flush=True)
        module.main()
