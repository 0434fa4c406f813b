"""benchmarks/image_pipeline.py's arithmetic: ratios paired within a round, medians, the Markdown table."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import image_pipeline  # noqa: E402


def run(first, later, n=1000, rerun=None, cache_wait=0.0):
    return {"epochs": [first, later, later], "first_epoch_cpu": 2 * first, "images": n, "cache_wait": cache_wait,
            **({"rerun_first_epoch": rerun} if rerun else {})}


def test_ratios_are_taken_within_each_round_then_the_median():
    runs = {  # round 2 ran on a busy machine: every pipeline twice as slow
        "nnlab": [run(1.0, 0.01, rerun=0.1, cache_wait=1.0), run(2.0, 0.02, rerun=0.2), run(1.1, 0.01, rerun=0.1)],
        "nnlab_1p": [run(2.0, 0.01), run(4.0, 0.02), run(2.0, 0.01)],
        "flow": [run(2.0, 1.0), run(4.0, 2.0), run(2.0, 1.0)],
        "dataset": [run(0.5, 0.5, n=None), run(1.0, 1.0, n=None), run(0.5, 0.5, n=None)],
    }
    summary = image_pipeline.summarize(runs, (32, 32), 32)
    assert summary["first_epoch_vs_flow"] == {"nnlab": 2.0, "nnlab_1p": 1.0, "dataset": 4.0}
    assert summary["later_epochs_vs_flow"]["nnlab"] == 100.0 and summary["first_epoch_nnlab_vs_nnlab_1p"] == 2.0
    assert summary["first_epoch_images_per_s"]["nnlab"] == round(1000 / 1.1)
    assert summary["nnlab_rerun_first_epoch_images_per_s"] == 10000
    table = image_pipeline.markdown({"tree": summary})
    assert summary["first_epoch_cpu_seconds"]["flow"] == 4.0
    assert "| tree | nnlab | 1.10 s, 909 img/s (2.20 CPU-s) | 100,000 img/s | 2.0× (100.0×); with the cache written: 1.82×" in table
    # round 1's cache write ended 1 s after its epoch: 2.0/2.0, 4.0/2.0, 2.0/1.1 → median 1.82
    assert summary["first_epoch_and_cache_written_vs_flow"] == {"nnlab": 1.82, "nnlab_1p": 1.0}
