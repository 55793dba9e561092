"""One place that chooses the universal interatomic potential for every atomistic step.

Relaxation, MD, phonons, Monte-Carlo energy labels and vibrational features all ask
``load_potential(name)`` for the same object, so a run states once which potential it used and its
provenance (package, model version, sha256 of the weights file) travels with every result.

Names:

* ``"chgnet"`` (default): CHGNet 0.3.0 (Deng et al., Nat. Mach. Intell. 5, 1031 (2023)) through
  matflow's ``FastCHGNetCalculator``; energies are batched without an autograd graph.
* ``"sevenn-0"``, ``"sevenn-0-22may2024"``, ``"sevenn-l3i5"``: SevenNet models (Park et al.,
  J. Chem. Theory Comput. 20, 4857 (2024)) whose checkpoints ship inside the ``sevenn`` wheel.
  ``"sevenn:<model>"`` (e.g. ``"sevenn:7net-0"``) is accepted as an alias. The checkpoint is opened
  by its file path, so loading never reaches for the network; models that sevenn would download
  (omat, omni, mf-ompa) are not offered.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from ase import Atoms

from matflow.atomistic.model import DEFAULT_MODEL, resolve_device
from matflow.provenance import file_sha256

DEFAULT_POTENTIAL = "chgnet"

# canonical name -> attribute of ``sevenn._const`` holding the shipped checkpoint path
_SEVENN_CHECKPOINTS = {
    "sevenn-0": "SEVENNET_0_11Jul2024",
    "sevenn-0-22may2024": "SEVENNET_0_22May2024",
    "sevenn-l3i5": "SEVENNET_l3i5",
}
_ALIASES = {
    "chgnet-0.3.0": "chgnet",
    "sevenn:7net-0": "sevenn-0",
    "sevenn:sevennet-0": "sevenn-0",
    "sevenn:7net-0_11jul2024": "sevenn-0",
    "sevenn:7net-0_22may2024": "sevenn-0-22may2024",
    "sevenn:7net-l3i5": "sevenn-l3i5",
    "7net-0": "sevenn-0",
    "sevennet-0": "sevenn-0",
}


class UnknownPotentialError(ValueError):
    """A potential name that matflow cannot load offline."""


def _version(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


@lru_cache(maxsize=8)
def _sevenn_checkpoint(name: str) -> Path | None:
    """Path of a shipped SevenNet checkpoint, or None when the wheel lacks it."""
    try:
        from sevenn import _const
    except ImportError:
        return None
    path = Path(getattr(_const, _SEVENN_CHECKPOINTS[name]))
    return path if path.is_file() else None


def available_potentials() -> list[str]:
    """Names ``load_potential`` accepts on this installation (all usable without network)."""
    names = ["chgnet"]
    names += [n for n in _SEVENN_CHECKPOINTS if _sevenn_checkpoint(n) is not None]
    return names


def canonical_name(name: str) -> str:
    """The canonical potential name for ``name`` (aliases resolved), or UnknownPotentialError."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key.startswith("sevenn:"):
        key = "sevenn-" + key.split(":", 1)[1].removeprefix("7net-").removeprefix("sevennet-")
    if key not in available_potentials():
        raise UnknownPotentialError(
            f"potential {name!r}: unknown or not installed; available: "
            f"{', '.join(available_potentials())} (aliases: sevenn:<model>, e.g. sevenn:7net-0)")
    return key


class Potential:
    """A universal potential: an ASE calculator, batched energies and provenance."""

    name: str

    def calculator(self):
        """An ASE calculator (energy, forces, stress) for relaxation, MD and phonons."""
        raise NotImplementedError

    def energies(self, atoms_list: Sequence[Atoms], batch_size: int = 16) -> np.ndarray:
        """Total energies (eV per cell) of many structures."""
        raise NotImplementedError

    def provenance(self) -> dict:
        """Package and model versions and the weights file's sha256."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class CHGNetPotential(Potential):
    """CHGNet through ``FastCHGNetCalculator`` (the same numbers as stock CHGNet, fewer operations)."""

    def __init__(self, device: str | None = None, model_name: str = DEFAULT_MODEL) -> None:
        from matflow.atomistic.fast import FastCHGNetCalculator
        from matflow.atomistic.model import load_chgnet

        self.name = "chgnet"
        self.model_name = model_name
        self._model = load_chgnet(model_name, device)
        self._fast = FastCHGNetCalculator(self._model)

    def calculator(self):
        from matflow.atomistic.fast import FastCHGNetCalculator

        return FastCHGNetCalculator(self._model)

    def energies(self, atoms_list: Sequence[Atoms], batch_size: int = 16) -> np.ndarray:
        return self._fast.energy_only(list(atoms_list), batch_size=batch_size)

    def provenance(self) -> dict:
        import chgnet

        weights = sorted((Path(chgnet.__file__).parent / "pretrained" / self.model_name)
                         .glob("*.pth.tar"))
        return {"name": self.name, "model": f"CHGNet {self.model_name}",
                "package": "chgnet", "package_version": _version("chgnet"),
                "torch": _version("torch"),
                "weights_file": weights[0].name if weights else None,
                "weights_sha256": file_sha256(str(weights[0])) if weights else None}


class SevenNetPotential(Potential):
    """A SevenNet checkpoint shipped in the sevenn wheel, opened by path (no download)."""

    def __init__(self, name: str, device: str | None = None) -> None:
        import contextlib
        import io
        import warnings

        from sevenn.calculator import SevenNetCalculator

        self.name = name
        self.checkpoint = _sevenn_checkpoint(name)
        if self.checkpoint is None:  # pragma: no cover - canonical_name checked it
            raise UnknownPotentialError(f"potential {name!r}: checkpoint missing from sevenn")
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            self._calc = SevenNetCalculator(str(self.checkpoint), device=resolve_device(device))

    def calculator(self):
        return self._calc

    def energies(self, atoms_list: Sequence[Atoms], batch_size: int = 16) -> np.ndarray:
        # SevenNet's e3nn convolutions dominate; an energy-only batched pass measured no faster
        # than the calculator on 108-atom cells, so structures go one by one.
        out = []
        for atoms in atoms_list:
            work = atoms.copy()
            work.calc = self._calc
            out.append(float(work.get_potential_energy()))
        return np.asarray(out)

    def provenance(self) -> dict:
        return {"name": self.name, "model": self.checkpoint.parent.name,
                "package": "sevenn", "package_version": _version("sevenn"),
                "torch": _version("torch"), "weights_file": self.checkpoint.name,
                "weights_sha256": file_sha256(str(self.checkpoint))}


@lru_cache(maxsize=8)
def _load(name: str, device: str | None) -> Potential:
    if name == "chgnet":
        return CHGNetPotential(device)
    return SevenNetPotential(name, device)


def load_potential(name: str = DEFAULT_POTENTIAL, *, device: str | None = None) -> Potential:
    """The named potential, loaded once per process; UnknownPotentialError lists the valid names."""
    return _load(canonical_name(name), device)
