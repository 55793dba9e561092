"""MD throughput of matflow's FastCHGNetCalculator against stock CHGNet, measured on a shared machine.

Timed part. For each cell (random equiatomic fcc CrCoNi, a = 3.57 Å; ``--sizes 3,5`` -> 108 and 500
atoms) and each torch thread count (``--threads 1,2``), two NVT runs (Berendsen, 800 K, taut 100 fs,
2 fs step, the same initial velocities) are driven by the same integrator, chgnet's
``MolecularDynamics``: one with stock ``chgnet.model.dynamics.CHGNetCalculator``, one with matflow's
``FastCHGNetCalculator``. After one untimed warm-up segment of each, they advance in alternating
segments of equal length (stock, matflow, stock, matflow, ...) ``--repeats`` times. Each pair gives
one speed ratio, so a change in the machine's load hits both members of a pair; the median ratio
and its spread (min-max, interquartile range) are reported with every run's atom-steps/s and the
1-min load average before and after it.

Untimed or separately reported parts: single evaluations of the 108-atom cell (interleaved in the
same way), a profile of where the fast path spends its time, the effect of the OpenMP wait policy
on a shared machine (two child processes), and NVE energy drift over ``--nve-steps`` steps with
chgnet's MolecularDynamics and with matflow's ``run_md`` (physics check).

OpenMP threads that busy-wait between parallel regions (libgomp's default) lose their time slices
to other jobs on an oversubscribed machine, and every operator then waits for a descheduled thread;
``--omp-wait-policy passive`` (the default here) sets ``OMP_WAIT_POLICY=PASSIVE`` for both
calculators before torch starts. Writes benchmarks/results/md.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from matflow.atomistic.model import load_chgnet, package_versions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ARMS = ("chgnet", "matflow")


def crconi(n_rep: int, seed: int = 0):
    """Random equiatomic fcc CrCoNi, n_rep³ conventional cells (4 n_rep³ atoms)."""
    from ase.build import bulk

    atoms = bulk("Ni", "fcc", a=3.57, cubic=True).repeat(n_rep)
    n = len(atoms)
    species = np.array([24, 27, 28] * (n // 3 + 1))[:n]
    atoms.numbers = np.random.default_rng(seed).permutation(species)
    return atoms


def drift_meV_per_atom_ps(times_fs: np.ndarray, etot_eV: np.ndarray, n_atoms: int) -> float:
    slope = np.polyfit(times_fs / 1000.0, etot_eV / n_atoms, 1)[0]
    return float(slope * 1000.0)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load1() -> float:
    return float(os.getloadavg()[0])


def make_calculator(arm: str):
    """'chgnet': stock CHGNetCalculator; 'matflow': FastCHGNetCalculator; same model object."""
    model = load_chgnet()
    if arm == "chgnet":
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(model, use_device="cpu")
    from matflow.atomistic.fast import FastCHGNetCalculator

    return FastCHGNetCalculator(model)


def make_md(atoms, calc, *, ensemble: str = "nvt", seed: int = 0, temperature_K: float = 800.0):
    """chgnet's MolecularDynamics (ASE Berendsen NVT or velocity Verlet) around the given calculator."""
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from chgnet.model.dynamics import MolecularDynamics

    atoms = atoms.copy()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    Stationary(atoms)
    with contextlib.redirect_stdout(io.StringIO()):
        return MolecularDynamics(atoms, model=calc, ensemble=ensemble, thermostat="Berendsen",
                                 temperature=temperature_K, timestep=2.0, taut=100.0,
                                 trajectory=None, logfile=None, use_device="cpu")


def spread(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "min": float(v.min()), "max": float(v.max()),
            "q25": float(q25), "q75": float(q75), "n": len(v)}


def interleave(arms: dict[str, Callable[[], float]], repeats: int, warmup: int = 1) -> list[dict]:
    """Run each arm's timed callable (returns seconds) in turn, A, B, A, B, ..., after ``warmup``
    untimed rounds; every run records its 1-min load average before and after."""
    for _ in range(warmup):
        for fn in arms.values():
            fn()
    runs = []
    for rep in range(repeats):
        for name, fn in arms.items():
            before = load1()
            seconds = fn()
            runs.append({"repeat": rep, "arm": name, "wall_s": seconds,
                         "load_1min_before": before, "load_1min_after": load1()})
    return runs


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def throughput(rep: int, threads: int, repeats: int, segment_atom_steps: int) -> dict:
    """Interleaved NVT segments, stock vs matflow calculator, at one size and thread count."""
    set_threads(threads)
    atoms = crconi(rep)
    n = len(atoms)
    steps = max(1, round(segment_atom_steps / n))
    mds = {arm: make_md(atoms, make_calculator(arm)) for arm in ARMS}
    temps: dict[str, list[float]] = {arm: [] for arm in ARMS}

    def segment(arm: str) -> Callable[[], float]:
        def run() -> float:
            md = mds[arm]
            t0 = time.perf_counter()
            md.run(steps)
            wall = time.perf_counter() - t0
            temps[arm].append(float(md.atoms.get_temperature()))
            return wall
        return run

    runs = interleave({arm: segment(arm) for arm in ARMS}, repeats)
    for r in runs:
        r["atom_steps_per_s"] = n * steps / r["wall_s"]
    rate = {arm: [r["atom_steps_per_s"] for r in runs if r["arm"] == arm] for arm in ARMS}
    ratios = [m / c for c, m in zip(rate["chgnet"], rate["matflow"], strict=True)]
    return {"n_atoms": n, "formula": atoms.get_chemical_formula(), "threads": threads,
            "segment_steps": steps, "repeats": repeats, "runs": runs,
            "atom_steps_per_s": {arm: spread(rate[arm]) for arm in ARMS},
            "ratio_matflow_over_chgnet": {**spread(ratios), "per_pair": ratios},
            "T_K_end_of_segments": {arm: spread(temps[arm][1:]) for arm in ARMS}}


def single_point(repeats: int, threads: int) -> dict:
    """Seconds per evaluation of the 108-atom cell, interleaved: stock e+f+s+m, fast e+f+s+m, fast
    energy only, fast batch of 4 per structure. Every call moves an atom, so nothing is reused
    from the previous call except the fast path's neighbour candidates."""
    from matflow.atomistic.fast import FastCHGNetCalculator

    set_threads(threads)
    atoms = crconi(3)
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    stock, fast = make_calculator("chgnet"), FastCHGNetCalculator(load_chgnet())
    moved = [0]

    def displaced():
        moved[0] += 1
        a = atoms.copy()
        a.positions[0, 0] += 1e-4 * moved[0]
        return a

    def full(calc):
        def run() -> float:
            a = displaced()
            a.calc = calc
            t0 = time.perf_counter()
            a.get_forces(), a.get_stress(), a.get_magnetic_moments()
            return time.perf_counter() - t0
        return run

    def energy_only() -> float:
        a = displaced()
        t0 = time.perf_counter()
        fast.energy_only([a])
        return time.perf_counter() - t0

    def batch4() -> float:
        batch = [displaced() for _ in range(4)]
        t0 = time.perf_counter()
        fast.calc_many(batch, batch_size=4)
        return (time.perf_counter() - t0) / 4

    runs = interleave({"chgnet_efsm": full(stock), "matflow_efsm": full(fast),
                       "matflow_energy_only": energy_only, "matflow_batch4_per_structure": batch4},
                      repeats)
    out: dict = {"n_atoms": len(atoms), "threads": threads, "repeats": repeats, "runs": runs}
    for name in dict.fromkeys(r["arm"] for r in runs):
        out[f"{name}_s"] = spread([r["wall_s"] for r in runs if r["arm"] == name])
    pairs = zip([r["wall_s"] for r in runs if r["arm"] == "chgnet_efsm"],
                [r["wall_s"] for r in runs if r["arm"] == "matflow_efsm"], strict=True)
    out["ratio_efsm_chgnet_over_matflow"] = spread([c / m for c, m in pairs])
    return out


OP_GROUPS = {
    "matmul (mm, addmm, linear)": ("aten::mm", "aten::addmm", "aten::bmm"),
    "gather/scatter (index_select, index_add_, scatter_add_, embedding)": (
        "aten::index_select", "aten::index_add_", "aten::scatter_add_", "aten::embedding",
        "aten::embedding_dense_backward", "aten::index", "aten::_index_put_impl_"),
    "element-wise (mul, add, silu, sigmoid and their backward)": (
        "aten::mul", "aten::add", "aten::add_", "aten::mul_", "aten::silu", "aten::silu_backward",
        "aten::sigmoid", "aten::sigmoid_backward", "aten::div", "aten::sub", "aten::neg",
        "aten::sin", "aten::cos", "aten::acos", "aten::pow", "aten::abs", "aten::sum",
        "aten::where"),
    "layer norm (forward + backward)": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
    "memory (copy_, fill_, cat, zeros)": ("aten::copy_", "aten::fill_", "aten::cat", "aten::zero_"),
}


def profile_fast(n_calls: int = 10, threads: int = 1) -> dict:
    """Where the fast path's time goes on the 108-atom cell along an MD-like sequence of small moves:
    Python-level phases (cProfile cumulative times), torch operator groups (torch.profiler self
    times), and the effect of flushing subnormals (interleaved with and without)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    import matflow.atomistic.fast as fast_mod

    set_threads(threads)
    atoms = crconi(3)
    rng = np.random.default_rng(0)
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    calc = fast_mod.FastCHGNetCalculator(load_chgnet())
    atoms.calc = calc

    def step() -> float:
        atoms.positions += rng.normal(0, 0.003, atoms.positions.shape)
        t0 = time.perf_counter()
        atoms.get_forces()
        return time.perf_counter() - t0

    for _ in range(2):
        step()
    prof = cProfile.Profile()
    prof.enable()
    t0 = time.perf_counter()
    for _ in range(n_calls):
        step()
    wall = time.perf_counter() - t0
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)

    def cum(name: str, file_part: str) -> float:
        return sum(v[3] for k, v in stats.items() if k[2] == name and file_part in k[0])

    graph = cum("graph", "fast.py")
    batch = cum("from_graphs", "model.py")
    fused_fwd = cum("__call__", "fast.py")
    stock_fwd = cum("_compute", "model.py")
    backward = cum("grad", "autograd")
    phases = {"neighbour list + crystal graph (numpy)": graph,
              "BatchedGraph.from_graphs (bond/angle bases)": batch,
              "model forward": fused_fwd + stock_fwd,
              "backward (forces + stress)": backward}
    phases["rest (ASE, composition model, result conversion)"] = wall - sum(phases.values())
    phases = {k: {"s_per_call": v / n_calls, "share": v / wall} for k, v in phases.items()}

    with profile(activities=[ProfilerActivity.CPU]) as tprof:
        for _ in range(n_calls // 2):
            step()
    events = tprof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    groups = {g: 0.0 for g in OP_GROUPS}
    other = 0.0
    for e in events:
        for g, names in OP_GROUPS.items():
            if e.key in names:
                groups[g] += e.self_cpu_time_total
                break
        else:
            other += e.self_cpu_time_total
    op_share = {g: v / total for g, v in groups.items()}
    op_share["other operators and autograd bookkeeping"] = other / total

    plain = contextlib.nullcontext
    flushing = fast_mod.flush_denormals

    def with_ftz(flag: bool) -> Callable[[], float]:
        def run() -> float:
            fast_mod.flush_denormals = flushing if flag else plain
            try:
                return step()
            finally:
                fast_mod.flush_denormals = flushing
        return run

    ftz = interleave({"flush_on": with_ftz(True), "flush_off": with_ftz(False)}, repeats=6)
    pairs = zip([r["wall_s"] for r in ftz if r["arm"] == "flush_off"],
                [r["wall_s"] for r in ftz if r["arm"] == "flush_on"], strict=True)
    return {"n_atoms": len(atoms), "threads": threads, "n_calls": n_calls,
            "s_per_call": wall / n_calls, "torch_version": torch.__version__,
            "phases": phases, "operator_self_time_share": op_share,
            "subnormals_slowdown_without_flush": spread([off / on for off, on in pairs])}


def probe_single_eval(threads: int, repeats: int) -> dict:
    """Interleaved single e+f+s evaluations of the 108-atom cell, stock vs fast (child-process mode)."""
    set_threads(threads)
    atoms = crconi(3)
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    moved = [0]

    def full(calc):
        def run() -> float:
            moved[0] += 1
            a = atoms.copy()
            a.positions[0, 0] += 1e-4 * moved[0]
            a.calc = calc
            t0 = time.perf_counter()
            a.get_forces(), a.get_stress()
            return time.perf_counter() - t0
        return run

    runs = interleave({arm: full(make_calculator(arm)) for arm in ARMS}, repeats)
    out = {f"{arm}_s": spread([r["wall_s"] for r in runs if r["arm"] == arm]) for arm in ARMS}
    pairs = zip(*([r["wall_s"] for r in runs if r["arm"] == arm] for arm in ARMS), strict=True)
    out["ratio_chgnet_over_matflow"] = spread([c / m for c, m in pairs])
    return out


def wait_policy_check(threads: int = 2, repeats: int = 2) -> dict:
    """The same interleaved single evaluations in two child processes, one per OMP_WAIT_POLICY
    (PASSIVE, then ACTIVE); the policy is read once, when torch's OpenMP runtime starts."""
    import subprocess

    out: dict = {"threads": threads, "repeats": repeats, "n_atoms": 108,
                 "how": "separate child processes run one after the other (not interleaved "
                        "with each other); within each, stock and fast alternate"}
    for policy in ("PASSIVE", "ACTIVE"):
        env = {**os.environ, "OMP_WAIT_POLICY": policy}
        before = load1()
        res = subprocess.run([sys.executable, __file__, "--probe", str(threads), str(repeats)],
                             env=env, capture_output=True, text=True, check=True)
        out[policy.lower()] = {**json.loads(res.stdout.strip().splitlines()[-1]),
                               "load_1min_before": before, "load_1min_after": load1()}
    return out


def run_stock_nve(atoms, n_steps: int, seed: int, temperature_K: float) -> dict:
    md = make_md(atoms, make_calculator("chgnet"), ensemble="nve", seed=seed,
                 temperature_K=temperature_K)
    rec = []
    md.dyn.attach(lambda: rec.append((md.dyn.get_time() / md.dyn.dt * 2.0,
                                      md.atoms.get_potential_energy() + md.atoms.get_kinetic_energy())),
                  interval=1)
    md.run(n_steps)
    rec = np.array(rec)
    return {"times_fs": rec[:, 0], "etot_eV": rec[:, 1]}


def run_matflow_nve(atoms, n_steps: int, seed: int, temperature_K: float) -> dict:
    from ase.io import read

    from matflow.atomistic.md import MDSettings, run_md

    settings = MDSettings(ensemble="nve", temperature_K=temperature_K, n_steps=n_steps,
                          timestep_fs=2.0, seed=seed, traj_every=1, checkpoint_every=10)
    with tempfile.TemporaryDirectory() as tmp:
        res = run_md(atoms, tmp, settings)
        frames = read(res.trajectory, ":")
    times = np.array([f.info["time_fs"] for f in frames])
    etot = np.array([f.get_potential_energy() + f.info["kinetic_energy_eV"] for f in frames])
    return {"times_fs": times, "etot_eV": etot}


def nve(n_steps: int, threads: int) -> dict:
    set_threads(threads)
    atoms = crconi(3)
    out = {}
    for name, fn in (("chgnet", run_stock_nve), ("matflow", run_matflow_nve)):
        r = fn(atoms, n_steps, 1, 800.0)
        out[name] = {
            "n_atoms": len(atoms), "n_steps": n_steps, "timestep_fs": 2.0, "initial_T_K": 800.0,
            "drift_meV_per_atom_per_ps": drift_meV_per_atom_ps(r["times_fs"], r["etot_eV"], len(atoms)),
            "max_abs_dE_meV_per_atom": float(np.abs(r["etot_eV"] - r["etot_eV"][0]).max()
                                             / len(atoms) * 1000)}
        print("nve", name, out[name], flush=True)
    return out


DEVELOPMENT_NOTES = [
    "Fast-path changes, each measured as interleaved A/B single e+f+s evaluations of the 108-atom "
    "cell against the version before it (load average about 4 on the 2 shared cores): "
    "(1) first linear layer of every gated MLP split by input block and applied before the gather, "
    "last (unread) angle update skipped: 1.40x at 1 thread, 1.31x at 2 threads; "
    "(2) an angle's first-bond and centre shares summed once per (centre, bond) pair, the angle's "
    "own share added inside addmm, split() instead of slices: 1.14x more (1.56x / 1.49x over the "
    "previous fast path at 1 / 2 threads); (3) one SiLU over both hidden paths of a gated MLP: "
    "1.07x / 1.08x more. Forces, stress and magmoms stay within 2.5e-6 eV/Å, 5e-8 eV/Å³ and "
    "1.5e-6 μB of stock CHGNet on rattled 32- and 108-atom CrCoNi cells.",
    "Tried and not adopted: torch.inference_mode for the energy-only path (0.91x, no gain); "
    "F.embedding_bag for the gathered sums with a block-diagonal second layer and one LayerNorm "
    "call (0.9-1.14x at 1 thread, within noise); torch.compile (inductor, dynamic shapes) of one "
    "gated-MLP block: 1.6x faster, but 84 s to compile that block alone and a recompile when "
    "shapes change, too slow to start for an ASE calculator; caching per-species embeddings or "
    "the composition energy: below 1% of a call in the profile; the neighbour list is already "
    "reused within the skin and graph building is about 1-2% of a call.",
    "Thread settings: with 2 threads on the loaded machine, libgomp's default busy-waiting made "
    "every parallel operator wait for a descheduled thread; the omp_wait_policy_check section "
    "measures both policies in this run. Inter-op threads are not used by these eager passes.",
]


def profile_note(p: dict) -> str:
    ph, op = p["phases"], p["operator_self_time_share"]
    pct = lambda x: f"{100 * x:.0f}%"  # noqa: E731
    return (f"Profile of the fast path ({p['n_atoms']} atoms, {p['threads']} thread, "
            f"{p['s_per_call']:.2f} s per e+f+s+m call under this run's load): model forward "
            f"{pct(ph['model forward']['share'])}, backward {pct(ph['backward (forces + stress)']['share'])}, "
            f"neighbour list + graph {pct(ph['neighbour list + crystal graph (numpy)']['share'])}, "
            f"BatchedGraph bases {pct(ph['BatchedGraph.from_graphs (bond/angle bases)']['share'])}, "
            f"ASE/composition/conversion {pct(ph['rest (ASE, composition model, result conversion)']['share'])}. "
            "Operator self time: " + ", ".join(f"{k} {pct(v)}" for k, v in op.items()) + ". "
            f"Without flushing subnormals a call takes "
            f"{p['subnormals_slowdown_without_flush']['median']:.2f}x as long (median of 6 pairs). "
            "Python overhead is small; the time is in memory-bound element-wise, gather and "
            "scatter operators over the 14,256 angle and 8,426 edge rows, not in matrix products.")


def table(rows: list[dict]) -> str:
    lines = ["atoms threads  chgnet atom-steps/s  matflow atom-steps/s  ratio median [min-max] (IQR)"
             "  load 1-min"]
    for r in rows:
        c, m = r["atom_steps_per_s"]["chgnet"], r["atom_steps_per_s"]["matflow"]
        q = r["ratio_matflow_over_chgnet"]
        loads = [x for run in r["runs"] for x in (run["load_1min_before"], run["load_1min_after"])]
        lines.append(f"{r['n_atoms']:5d} {r['threads']:7d}  {c['median']:19.1f}  {m['median']:20.1f}"
                     f"  {q['median']:.2f}x [{q['min']:.2f}-{q['max']:.2f}] ({q['q25']:.2f}-{q['q75']:.2f})"
                     f"  {min(loads):.1f}-{max(loads):.1f}")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        load_chgnet()
        print(json.dumps(probe_single_eval(int(sys.argv[2]), int(sys.argv[3]))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="3,5", help="fcc repeats: 3 -> 108 atoms, 5 -> 500 atoms")
    ap.add_argument("--threads", default="1,2", help="torch intra-op thread counts to compare at")
    ap.add_argument("--repeats", type=int, default=5, help="timed stock/matflow pairs per case")
    ap.add_argument("--segment-atom-steps", type=int, default=500,
                    help="length of each timed segment in atom-steps (108 atoms: 5 steps, 500: 1)")
    ap.add_argument("--nve-steps", type=int, default=100)
    ap.add_argument("--no-nve", action="store_true",
                    help="skip the NVE drift check and keep the one already in md.json")
    ap.add_argument("--no-profile", action="store_true", help="skip the fast-path profile")
    ap.add_argument("--no-single-point", action="store_true", help="skip single evaluations")
    ap.add_argument("--no-wait-policy-check", action="store_true",
                    help="skip the PASSIVE vs ACTIVE OpenMP wait-policy comparison")
    ap.add_argument("--omp-wait-policy", choices=("passive", "active", "inherit"), default="passive",
                    help="OMP_WAIT_POLICY for this process (inherit: leave the environment as is)")
    args = ap.parse_args()
    if args.omp_wait_policy != "inherit":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    import torch
    sizes = [int(x) for x in args.sizes.split(",")]
    thread_counts = [int(x) for x in args.threads.split(",")]
    path = RESULTS / "md.json"
    previous = json.loads(path.read_text()) if path.exists() else {}

    load_chgnet()
    t_start = time.perf_counter()
    out = {
        "benchmark": "CHGNet MD throughput: matflow FastCHGNetCalculator vs stock CHGNetCalculator, "
                     "same integrator, interleaved segments",
        "command": " ".join(["python benchmarks/md.py", *sys.argv[1:]]),
        "settings": {"ensemble": "NVT Berendsen", "temperature_K": 800.0, "timestep_fs": 2.0,
                     "taut_fs": 100.0, "seed": 0, "repeats": args.repeats,
                     "segment_atom_steps": args.segment_atom_steps, "threads": thread_counts,
                     "warm_up": "one untimed segment of each calculator before the timed pairs"},
        "machine": {"cpu_model": cpu_model(), "arch": platform.machine(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "torch_interop_threads": torch.get_num_interop_threads(),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (libgomp: spin, then sleep)"),
                    "gpu": "not used (device cpu)",
                    "load_average_1_5_15min_at_start": list(os.getloadavg())},
        "versions": package_versions(),
        "notes": [
            "Both calculators run inside chgnet's MolecularDynamics (ASE NVTBerendsen) with nothing "
            "written to disk, so the ratio is the calculators' alone; matflow's run_md adds "
            "trajectory and checkpoint writing on top (used only for the untimed NVE check).",
            "The machine's 2 cores were shared with other jobs during the run (see load averages); "
            "absolute atom-steps/s therefore vary between pairs, the ratio within a pair much less.",
        ],
        "throughput": [],
    }
    if "history" in previous:
        out["history"] = previous["history"]
    for rep in sizes:
        for threads in thread_counts:
            row = throughput(rep, threads, args.repeats, args.segment_atom_steps)
            out["throughput"].append(row)
            q = row["ratio_matflow_over_chgnet"]
            print(f"{row['n_atoms']} atoms, {threads} thread(s): ratio {q['median']:.2f} "
                  f"[{q['min']:.2f}-{q['max']:.2f}]", flush=True)
            path.write_text(json.dumps(out, indent=1))
    if not args.no_single_point:
        out["single_point"] = single_point(3, thread_counts[0])
    out["notes"] += DEVELOPMENT_NOTES
    if not args.no_profile:
        out["profile"] = profile_fast()
        out["notes"].append(profile_note(out["profile"]))
    if not args.no_wait_policy_check:
        out["omp_wait_policy_check"] = wait_policy_check()
    if args.no_nve:
        if "nve" in previous:
            out["nve"] = previous["nve"]
    else:
        out["nve"] = nve(args.nve_steps, 1)
    set_threads(thread_counts[0])
    out["machine"]["load_average_1_5_15min_at_end"] = list(os.getloadavg())
    out["wall_s_total"] = time.perf_counter() - t_start
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(table(out["throughput"]))


if __name__ == "__main__":
    main()
