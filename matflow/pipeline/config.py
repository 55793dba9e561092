"""The validated configuration of one end-to-end pipeline run, and its named presets.

A config says where candidates come from (CDVAE samples, an HEA element list, structure files),
how they are relaxed, which registered models predict their properties and how short-range order
is simulated for alloy candidates. Its canonical JSON is part of every item's content hash, so two
runs with the same config share finished work and a changed setting recomputes what it affects.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["CDVAESource", "HEASource", "RelaxSettings", "SROSettings", "PipelineConfig",
           "PipelineConfigError", "PRESETS", "preset", "load_config"]


class PipelineConfigError(ValueError):
    """A pipeline config that cannot run; the message names the field and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CDVAESource(_Strict):
    """Crystals sampled from a shipped CDVAE model (``models/<model>/<version>/``)."""

    model: str = "cdvae-perov5"
    version: str = "latest"
    """A shipped version, or "latest" (the highest vN, resolved when the run starts)."""
    num_samples: int = Field(default=4, ge=1, le=10_000)
    seed: int = 0
    n_step_each: int | None = Field(default=None, ge=1)
    """Langevin steps per noise level; None = the model's own setting."""


class HEASource(_Strict):
    """High-entropy alloys screened from an element list; the ``top_k`` best-ranked single-phase
    (FCC or BCC) compositions become alloy candidates (a random solid-solution supercell each)."""

    elements: list[str]
    n_components: int = Field(default=4, ge=2)
    top_k: int = Field(default=2, ge=0)
    step: float = Field(default=0.25, gt=0, le=0.5)
    """Concentration grid of the screening (0.25 with 4 components = the equimolar alloys)."""
    bounds: tuple[float, float] = (0.05, 0.35)
    sources: list[str] = Field(default_factory=lambda: ["rules", "data", "substitutability", "experts"])
    """Evidence sources of the screening (``matflow.screening.screen.SOURCE_CLASSES``)."""
    supercell: int = Field(default=2, ge=1, le=6)
    """Cubic repeats of the conventional cell of the alloy candidate (2 = 32 atoms fcc, 16 bcc)."""
    seed: int = 0

    @field_validator("elements")
    @classmethod
    def _elements(cls, value: list[str]) -> list[str]:
        if len(value) < 2:
            raise ValueError("need at least two elements")
        return [str(e).strip() for e in value]


class RelaxSettings(_Strict):
    """Relaxation of every candidate (``matflow.atomistic.relax.RelaxCalc``)."""

    fmax_eV_per_A: float = Field(default=0.05, gt=0)
    max_steps: int = Field(default=300, ge=1)
    relax_cell: bool = True
    optimizer: Literal["FIRE", "BFGS", "LBFGS"] = "FIRE"


class SROSettings(_Strict):
    """Monte Carlo short-range order of alloy candidates (``matflow.sro.simulate.simulate_sro``),
    small by default: a pair energy model fitted on ``n_train`` cells of ``train_size`` repeats."""

    potential: str | None = None
    """Universal potential labelling the training cells; None = the pipeline's ``potential``."""
    temperatures_K: list[float] = Field(default_factory=lambda: [1200.0, 600.0])
    size: int = Field(default=4, ge=2)
    train_size: int = Field(default=2, ge=2)
    n_train: int = Field(default=12, ge=4)
    sweeps: int = Field(default=40, ge=10)
    seed: int = 0

    @field_validator("temperatures_K")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if not value or min(value) <= 0:
            raise ValueError("need at least one temperature, all > 0 K")
        return [float(t) for t in value]


class PipelineConfig(_Strict):
    """One end-to-end run: candidates -> relax -> featurize -> predict; alloys -> SRO; screening."""

    name: str = "pipeline"
    cdvae: CDVAESource | None = None
    hea: HEASource | None = None
    structure_files: list[str] = Field(default_factory=list)
    """Extra candidate structures from files (CIF, POSCAR, ...), one candidate per structure."""
    potential: str = "chgnet"
    relax: RelaxSettings = Field(default_factory=RelaxSettings)
    feature_preset: str = "structure"
    models: list[str] = Field(default_factory=lambda: ["matbench_phonons", "alexandria_cv300"])
    """Registered models that must load (a model that does not is a failed run)."""
    optional_models: list[str] = Field(default_factory=lambda: ["svib"])
    """Registered models used when they load, skipped (and noted in the manifest) when they do not."""
    sro: SROSettings = Field(default_factory=SROSettings)
    run_dir: str | None = None
    """Output folder; None = ``<settings.run_dir>/runs/<name>-<inputs hash>``."""

    @model_validator(mode="after")
    def _has_candidates(self) -> PipelineConfig:
        if self.cdvae is None and self.hea is None and not self.structure_files:
            raise ValueError("no candidate source: give cdvae, hea or structure_files")
        return self

    def content(self) -> dict[str, Any]:
        """The settings that decide results (everything but where the output goes)."""
        return self.model_dump(mode="json", exclude={"run_dir"})

    def inputs_hash(self) -> str:
        """sha256 (16 hex digits) of the canonical JSON of ``content()``."""
        text = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def sro_potential(self) -> str:
        return self.sro.potential or self.potential


PRESETS: dict[str, dict[str, Any]] = {
    # A few minutes on 2 cores: 6 CDVAE perovskites and the 2 best-ranked quaternary alloys of
    # Al-Co-Cr-Fe-Ni-Cu (32-atom supercells), SRO labelled by SevenNet-0 (see matflow.sro.simulate).
    "demo": dict(
        name="demo",
        cdvae=dict(num_samples=6, seed=0),
        hea=dict(elements=["Al", "Co", "Cr", "Fe", "Ni", "Cu"], n_components=4, top_k=2, step=0.25,
                 supercell=2),
        relax=dict(fmax_eV_per_A=0.05, max_steps=300),
        sro=dict(potential="sevenn-0", temperatures_K=[1200.0, 600.0], size=4, train_size=2,
                 n_train=32, sweeps=50),
    ),
    # Well under a minute: 2 CDVAE samples, one 4-atom alloy, rules-only screening, a tiny SRO.
    "test": dict(
        name="test",
        cdvae=dict(num_samples=2, seed=0),
        hea=dict(elements=["Co", "Cr", "Fe", "Ni", "Cu"], n_components=4, top_k=1, step=0.25,
                 sources=["rules"], supercell=1),
        relax=dict(fmax_eV_per_A=0.1, max_steps=60),
        models=["alexandria_cv300", "matbench_phonons"],
        optional_models=[],
        sro=dict(temperatures_K=[1000.0], size=3, train_size=2, n_train=6, sweeps=10),
    ),
}


def _validate(data: dict[str, Any], where: str) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise PipelineConfigError(f"{where}: {problems}") from None


def preset(name: str, **overrides: Any) -> PipelineConfig:
    """The named preset (``demo`` or ``test``) with top-level fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise PipelineConfigError(f"preset {name!r}: unknown; choose one of {', '.join(PRESETS)}")
    return _validate({**PRESETS[name], **overrides}, f"preset {name!r}")


def load_config(source: str | Path | dict[str, Any] | PipelineConfig) -> PipelineConfig:
    """A config from a preset name, a JSON/YAML/TOML file, a dict or a config (returned as is)."""
    if isinstance(source, PipelineConfig):
        return source
    if isinstance(source, dict):
        return _validate(source, "config")
    text = str(source)
    if text in PRESETS:
        return preset(text)
    path = Path(text)
    if not path.is_file():
        raise PipelineConfigError(f"config {text!r}: neither a preset ({', '.join(PRESETS)}) "
                                  "nor a file")
    raw = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(raw)
        elif path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(raw)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(raw)
        else:
            raise PipelineConfigError(f"config {path}: unknown format {path.suffix!r} "
                                      "(use .json, .toml, .yaml)")
    except PipelineConfigError:
        raise
    except Exception as exc:
        raise PipelineConfigError(f"config {path}: cannot parse ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise PipelineConfigError(f"config {path}: expected a mapping of settings")
    return _validate(data, f"config {path}")
