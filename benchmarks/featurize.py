"""Featurization throughput on the 1,265 Matbench phonons structures with the ``structure`` preset.

Compares, side by side on the same machine and structures:
  (a) matminer's MultipleFeaturizer over the same featurizers, run serially — the baseline;
  (b) matflow n_jobs=1; (c) matflow n_jobs=2; (d) matflow cached rerun.
Each mode runs in its own subprocess so peak memory (max RSS, including worker processes) is its own.
Writes benchmarks/results/featurize.json and prints a table. Not a timed test.

Usage: python benchmarks/featurize.py [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "featurize.json"


class TreeMemorySampler:
    """Peak resident memory of this process plus its worker processes, sampled every 0.1 s."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except Exception:  # a worker may exit between listing and reading
                pass
        self.peak_mb = max(self.peak_mb, total / 2**20)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.1)

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        self.peak_mb = max(self.peak_mb, own_peak)


def run_mode(mode: str, limit: int | None, cache_dir: str) -> dict:
    os.environ["MATFLOW_CACHE_DIR"] = cache_dir
    warnings.filterwarnings("ignore")
    from matflow.datasets import load_matbench_phonons
    from matflow.featurize import featurize_structures, get_preset

    frame = load_matbench_phonons()
    if limit:
        frame = frame.iloc[:limit]
    structures = list(frame["structure"])
    if mode == "matminer":
        from matminer.featurizers.base import MultipleFeaturizer
        from matminer.featurizers.structure import StructureComposition

        built = get_preset("structure").build()
        featurizers = [f if spec.on == "structure" else StructureComposition(f) for spec, f in built]
        mf = MultipleFeaturizer(featurizers)
        mf.set_n_jobs(1)
        with TreeMemorySampler() as memory:
            start = time.perf_counter()
            rows = mf.featurize_many(structures, ignore_errors=True, pbar=False)
            elapsed = time.perf_counter() - start
        n_features = len(rows[0])
    else:
        preset = get_preset("structure")
        preset.feature_labels()  # import matminer's modules outside the timer, as for the anchor
        n_jobs = {"matflow_n1": 1, "matflow_n2": 2, "matflow_cached": 1}[mode]
        # (b) runs without cache; (c) starts from an empty cache and fills it (cache writes are timed);
        # (d) reruns on the cache that (c) filled.
        use_cache = mode in ("matflow_n2", "matflow_cached")
        with TreeMemorySampler() as memory:
            start = time.perf_counter()
            result = featurize_structures(structures, "structure", n_jobs=n_jobs, use_cache=use_cache)
            elapsed = time.perf_counter() - start
        n_features = result.n_features
        if mode == "matflow_cached":
            assert result.n_computed == 0, "cached rerun recomputed features"
    return {"mode": mode, "n_structures": len(structures), "seconds": elapsed,
            "structures_per_second": len(structures) / elapsed, "n_features": n_features,
            "peak_rss_mb": memory.peak_mb,
            "cpu_seconds": sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
                               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="use only the first N structures")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.limit, args.cache_dir)))
        return

    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for mode in ["matminer", "matflow_n1", "matflow_n2", "matflow_cached"]:
            cmd = [sys.executable, __file__, "--mode", mode, "--cache-dir", cache_dir]
            if args.limit:
                cmd += ["--limit", str(args.limit)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"{mode}: {rows[-1]['structures_per_second']:.2f} structures/s", flush=True)
    base = rows[0]["structures_per_second"]
    for row in rows:
        row["speedup_vs_matminer"] = row["structures_per_second"] / base
    import matminer
    import pymatgen.core

    report = {
        "benchmark": "featurize",
        "dataset": "matbench_phonons",
        "preset": "structure",
        "anchor": "matminer MultipleFeaturizer, same featurizers, serial (n_jobs=1)",
        "goals": {"matflow_n2_vs_matminer": 1.8, "matflow_cached_vs_matminer": 50.0},
        "results": rows,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg()},
        "versions": {"matminer": matminer.__version__, "pymatgen": pymatgen.core.__version__},
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(markdown_table(report))


def markdown_table(report: dict) -> str:
    lines = ["| mode | structures/s | time (s) | speed-up vs matminer | peak memory, all processes (MB) |",
             "|---|---|---|---|---|"]
    names = {"matminer": "(a) matminer MultipleFeaturizer, serial (anchor)",
             "matflow_n1": "(b) matflow n_jobs=1", "matflow_n2": "(c) matflow n_jobs=2",
             "matflow_cached": "(d) matflow cached rerun"}
    for r in report["results"]:
        lines.append(f"| {names[r['mode']]} | {r['structures_per_second']:.2f} | {r['seconds']:.1f} | "
                     f"{r['speedup_vs_matminer']:.2f}x | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
