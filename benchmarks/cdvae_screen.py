"""Wall time and outcome of screening CDVAE samples: sample → relax → de-duplicate → hull proxy → predict.

Writes benchmarks/results/cdvae_screen.json. Samples ``-n`` crystals from the shipped
``cdvae-perov5`` model with its own Langevin settings, then runs ``matflow.generate.screen.
screen_generated`` (CHGNet relaxation, novelty against the bundled Perov-5 val/test crystals, the
potential-based energy above the hull, predictions of the registered models). The elemental
references are relaxed in a fresh cache, so their cost is in the timing; ``--hull-dataset`` adds the
Perov-5 crystals of the candidates' chemical systems, relaxed with the same potential, to the hull.
The energy above the hull is a CHGNet-based proxy, not a DFT hull.

Threads: torch runs with one thread, the machine being shared.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def _plain(value: object) -> object:
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="number of samples")
    parser.add_argument("--max-steps", type=int, default=300, help="relaxation steps per sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hull-dataset", action="store_true",
                        help="add the relaxed Perov-5 crystals of the candidates' systems to the hull")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="reuse relaxed references from this cache (default: a fresh one, so "
                             "their relaxation is inside the timing)")
    parser.add_argument("--out", type=Path, default=RESULTS / "cdvae_screen.json")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from matflow.generate.sample import generate_from_model
    from matflow.generate.screen import DEFAULT_MODELS, screen_generated
    from matflow.generate.train import resolve_version

    t0 = time.perf_counter()
    version = resolve_version("cdvae-perov5")
    samples = generate_from_model("cdvae-perov5", version, args.n, seed=args.seed, device="cpu",
                                  show_progress=False)
    t_sample = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp) / "cache"
        n_cached = len(list(cache.rglob("*.json"))) if cache.is_dir() else 0
        t1 = time.perf_counter()
        table = screen_generated(samples, outdir=Path(tmp) / "out", max_steps=args.max_steps,
                                 novelty_dataset="perov_5", cache_dir=cache,
                                 hull_dataset="perov_5" if args.hull_dataset else None)
        t_screen = time.perf_counter() - t1
    ok = table[table["status"] == "ok"]
    unique = ok[ok["duplicate_of"].isna()]
    ehull = unique["e_above_hull_eV_per_atom"].dropna()
    result = {
        "description": f"CDVAE (cdvae-perov5 {version}) samples screened by matflow.generate.screen: CHGNet "
                       "relaxation, de-duplication, novelty vs bundled Perov-5 val+test, CHGNet "
                       "energy above the hull (a potential-based proxy, not DFT), predictions.",
        "settings": {"n_samples": args.n, "max_steps": args.max_steps, "fmax_eV_per_A": 0.05,
                     "potential": "chgnet", "models": list(DEFAULT_MODELS), "seed": args.seed,
                     "hull_dataset": "perov_5" if args.hull_dataset else None,
                     "reference_cache": ("fresh: reference relaxations inside the timing"
                                         if args.cache_dir is None else
                                         f"warm: {n_cached} relaxed references loaded from cache, "
                                         "their relaxation is not inside the timing")},
        "timing_s": {"sampling": round(t_sample, 2), "screen": round(t_screen, 2),
                     "screen_per_sample": round(t_screen / args.n, 2)},
        "counts": {"samples": len(table), "relaxed_ok": len(ok), "failed": len(table) - len(ok),
                   "unique": len(unique), "novel_unique": int(unique["novel"].eq(True).sum()),
                   "converged": int(ok["converged"].eq(True).sum()),
                   "structurally_valid": int(table["structurally_valid"].sum()),
                   "compositionally_valid": int(table["compositionally_valid"].sum()),
                   "on_hull_proxy": int((ehull <= 1e-6).sum()),
                   "within_0.1_eV_of_hull_proxy": int((ehull <= 0.1).sum())},
        "e_above_hull_proxy_eV_per_atom": {"median": _plain(ehull.median()) if len(ehull) else None,
                                           "max": _plain(ehull.max()) if len(ehull) else None},
        "failure_reasons": table["reason"].dropna().tolist(),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "platform": platform.platform(),
                    "note": "2-core CPU machine shared with other jobs"},
        "rows": [{k: _plain(v) for k, v in row.items() if k in (
            "id", "formula", "status", "duplicate_of", "novel", "energy_eV_per_atom",
            "e_above_hull_eV_per_atom", "converged")} for row in table.to_dict("records")],
    }
    # one entry per configuration, so cold and warm runs sit side by side in one file
    label = (f"n{args.n}_steps{args.max_steps}_{'hull-dataset' if args.hull_dataset else 'elements'}"
             f"_{'warm' if args.cache_dir else 'fresh'}-cache")
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    runs = record.get("runs", {})
    runs[label] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"description": result.pop("description"), "runs": runs},
                                   indent=1, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("timing_s", "counts")}, indent=1))


if __name__ == "__main__":
    main()
