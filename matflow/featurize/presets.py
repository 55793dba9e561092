"""Named presets of matminer featurizers.

A preset is a list of (name, factory, input kind) entries; factories build fresh featurizer objects so
each worker process constructs its own. ``composition`` entries run on ``structure.composition``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version

from matminer.featurizers.base import BaseFeaturizer
from pymatgen.core import Composition

__all__ = ["FeaturizerSpec", "Preset", "PRESETS", "get_preset"]


@dataclass(frozen=True)
class FeaturizerSpec:
    """One featurizer of a preset.

    on: ``structure`` or ``composition`` (composition featurizers also run on a structure's composition).
    metals_only: the featurizer only has a meaning for metallic alloys (Miedema, Yang, Wen); on other
    compositions its columns are NaN ("not applicable") instead of a misleading number.
    depends_on: what else decides the values besides the featurizer's settings and matminer/pymatgen,
    as ``{name: version}`` (a pretrained model and the packages that run it); part of the cache key.
    """

    name: str
    factory: Callable[[], BaseFeaturizer]
    on: str = "composition"
    metals_only: bool = False
    depends_on: Callable[[], dict[str, str]] | None = None


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    specs: tuple[FeaturizerSpec, ...]
    needs_structure: bool
    handles_disorder: bool
    parts: tuple[str, ...] = ()
    """Names of other presets this one concatenates; each part keeps its own cache entries, so a
    composite preset reuses what its parts already computed."""
    _labels: list[str] = field(default_factory=list, compare=False, repr=False)
    _key: list[str] = field(default_factory=list, compare=False, repr=False)

    def build(self) -> list[tuple[FeaturizerSpec, BaseFeaturizer]]:
        if self.parts:
            return [pair for part in self.parts for pair in get_preset(part).build()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [(spec, spec.factory()) for spec in self.specs]

    def feature_labels(self) -> list[str]:
        """Column names, prefixed by featurizer name so two featurizers never collide."""
        if not self._labels:  # built whole, then swapped in: safe when threads ask at once
            labels = [f"{spec.name}|{label}" for spec, feat in self.build()
                      for label in feat.feature_labels()]
            self._labels[:] = labels
        return list(self._labels)

    def key(self) -> str:
        """Cache key: changes when anything that changes a feature value changes: the featurizers and
        their settings, matminer's and pymatgen's versions and, for featurizers that run a pretrained
        model (the CHGNet presets), the model's name and the versions of the packages that run it."""
        if not self._key:
            self._key.append(self._compute_key())
        return self._key[0]

    def versions(self) -> dict[str, str]:
        """The package (and pretrained model) versions the key includes, e.g. ``{"chgnet": "0.4.2"}``."""
        if self.parts:
            return {k: v for part in self.parts for k, v in get_preset(part).versions().items()}
        import matminer
        import pymatgen.core

        out = {"matminer": matminer.__version__, "pymatgen": getattr(pymatgen.core, "__version__", "")}
        for spec in self.specs:
            if spec.depends_on is not None:
                out.update(spec.depends_on())
        return out

    def _compute_key(self) -> str:
        import matminer
        import pymatgen.core

        if self.parts:
            joined = json.dumps([self.name, *(get_preset(p).key() for p in self.parts)])
            return hashlib.sha256(joined.encode()).hexdigest()[:16]
        parts = [self.name, matminer.__version__, getattr(pymatgen.core, "__version__", "")]
        for spec, feat in self.build():
            parts.append(f"{spec.name}:{spec.on}:{spec.metals_only}:{type(feat).__name__}:{_describe(feat)}")
            if spec.depends_on is not None:  # only such specs add an entry: other presets keep their keys
                parts.append(f"{spec.name} depends on {json.dumps(spec.depends_on(), sort_keys=True)}")
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _describe(feat: BaseFeaturizer) -> str:
    try:
        return json.dumps(feat.__dict__, default=lambda o: type(o).__name__, sort_keys=True)[:4000]
    except Exception:  # pragma: no cover - defensive: repr of exotic attributes
        return repr(sorted(feat.__dict__))


def _magpie():
    from matminer.featurizers.composition import ElementProperty

    return ElementProperty.from_preset("magpie", impute_nan=False)


def _stoichiometry():
    from matminer.featurizers.composition import Stoichiometry

    return Stoichiometry()


def _valence():
    from matminer.featurizers.composition import ValenceOrbital

    return ValenceOrbital()


def _miedema():
    from matminer.featurizers.composition import Miedema

    return Miedema()


def _yang():
    from matminer.featurizers.composition import YangSolidSolution

    return YangSolidSolution()


def _wen():
    from matminer.featurizers.composition import WenAlloys

    return WenAlloys()


def _density():
    from matminer.featurizers.structure import DensityFeatures

    return DensityFeatures()


def _symmetry():
    from matminer.featurizers.structure import GlobalSymmetryFeatures

    # crystal_system is a string; its integer twin crystal_system_int carries the same information.
    return GlobalSymmetryFeatures(
        desired_features=["spacegroup_num", "crystal_system_int", "is_centrosymmetric", "n_symmetry_ops"]
    )


def _crystalnn_stats():
    from matminer.featurizers.site import CrystalNNFingerprint
    from matminer.featurizers.structure import SiteStatsFingerprint

    return SiteStatsFingerprint(
        CrystalNNFingerprint.from_preset("ops", distance_cutoffs=None, x_diff_weight=0),
        stats=("mean", "std_dev", "minimum", "maximum"),
    )


def _agni_stats():
    from matminer.featurizers.site import AGNIFingerprints
    from matminer.featurizers.structure import SiteStatsFingerprint

    return SiteStatsFingerprint(AGNIFingerprints(directions=(None,)), stats=("mean", "std_dev"))


def _heterogeneity():
    from matminer.featurizers.structure import StructuralHeterogeneity

    return StructuralHeterogeneity()


def _packing():
    from matminer.featurizers.structure import MaximumPackingEfficiency

    return MaximumPackingEfficiency()


def _ordering():
    from matminer.featurizers.structure import ChemicalOrdering

    return ChemicalOrdering()


_COMPOSITION_CORE = (
    FeaturizerSpec("magpie", _magpie),
    FeaturizerSpec("stoichiometry", _stoichiometry),
    FeaturizerSpec("valence", _valence),
)
_ALLOY = (
    FeaturizerSpec("miedema", _miedema, metals_only=True),
    FeaturizerSpec("yang", _yang, metals_only=True),
    FeaturizerSpec("wen", _wen, metals_only=True),
)
_STRUCTURE_CORE = (
    FeaturizerSpec("density", _density, on="structure"),
    FeaturizerSpec("symmetry", _symmetry, on="structure"),
    FeaturizerSpec("crystalnn", _crystalnn_stats, on="structure"),
    FeaturizerSpec("agni", _agni_stats, on="structure"),
    FeaturizerSpec("heterogeneity", _heterogeneity, on="structure"),
)

def _package_version(name: str) -> str:
    try:
        return _installed_version(name)
    except PackageNotFoundError:
        return "not installed"


def _chgnet_model() -> dict[str, str]:
    """The pretrained CHGNet the featurizers load (the name ``CHGNet.version`` reports for it) and the
    packages that evaluate it: a new chgnet release may ship different weights under the same name."""
    from matflow.atomistic.model import DEFAULT_MODEL

    return {"chgnet_model": DEFAULT_MODEL, "chgnet": _package_version("chgnet"),
            "torch": _package_version("torch")}


def _chgnet_phonopy() -> dict[str, str]:
    """CHGNet plus phonopy, which generates the displacements and solves the dynamical matrix."""
    return {**_chgnet_model(), "phonopy": _package_version("phonopy")}


def _chgnet_gamma():
    from matflow.featurize.chgnet_phonons import CHGNetGammaPhonons

    return CHGNetGammaPhonons()


def _chgnet_embedding():
    from matflow.featurize.chgnet_phonons import CHGNetEmbedding

    return CHGNetEmbedding()


def _chgnet_supercell():
    from matflow.featurize.chgnet_phonons import CHGNetSupercellPhonons

    return CHGNetSupercellPhonons()


def _single_structure_featurizer(name: str, description: str, spec: FeaturizerSpec) -> Preset:
    """A preset of one structure featurizer: usable alone and as a cached part of composites."""
    return Preset(name, description, (spec,), needs_structure=True, handles_disorder=False)


def _composite(name: str, description: str, parts: tuple[str, ...]) -> Preset:
    """A preset that joins other structure presets, each cached as its own part."""
    return Preset(name, description, (), needs_structure=True, handles_disorder=False, parts=parts)


PRESETS: dict[str, Preset] = {
    "composition": Preset(
        "composition",
        "Magpie element statistics, stoichiometry, valence orbitals; Miedema, Yang and Wen alloy "
        "descriptors for all-metal compositions.",
        _COMPOSITION_CORE + _ALLOY,
        needs_structure=False,
        handles_disorder=True,
    ),
    "structure": Preset(
        "structure",
        "MODNet-style structure features: density, global symmetry, CrystalNN order-parameter and "
        "AGNI site statistics, bond heterogeneity, plus the composition features of the structure.",
        _STRUCTURE_CORE + _COMPOSITION_CORE,
        needs_structure=True,
        handles_disorder=False,
    ),
    "structure-full": Preset(
        "structure-full",
        "The structure preset plus maximum packing efficiency and chemical ordering (about 3x slower).",
        _STRUCTURE_CORE
        + (FeaturizerSpec("packing", _packing, on="structure"),
           FeaturizerSpec("ordering", _ordering, on="structure"))
        + _COMPOSITION_CORE,
        needs_structure=True,
        handles_disorder=False,
    ),
    "chgnet-gamma": _single_structure_featurizer(
        "chgnet-gamma",
        "Γ-point phonon frequencies, energy, residual force and pressure from pretrained CHGNet "
        "(finite displacements in the primitive cell; about 0.1-1 s per structure).",
        FeaturizerSpec("chgnet_gamma", _chgnet_gamma, on="structure", depends_on=_chgnet_phonopy),
    ),
    "chgnet-embedding": _single_structure_featurizer(
        "chgnet-embedding",
        "CHGNet's 64-dimensional pooled crystal feature vector (a learned representation).",
        FeaturizerSpec("chgnet_embedding", _chgnet_embedding, on="structure", depends_on=_chgnet_model),
    ),
    "chgnet-supercell": _single_structure_featurizer(
        "chgnet-supercell",
        "CHGNet phonon frequencies at the commensurate q-points of a >= 6 Å supercell (top band "
        "statistics; about 1.5 s per structure on one core).",
        FeaturizerSpec("chgnet_supercell", _chgnet_supercell, on="structure",
                       depends_on=_chgnet_phonopy),
    ),
    "structure-chgnet": _composite(
        "structure-chgnet",
        "The structure preset plus CHGNet Γ-point phonon descriptors (chgnet-gamma).",
        ("structure", "chgnet-gamma"),
    ),
    "structure-chgnet-emb": _composite(
        "structure-chgnet-emb",
        "structure-chgnet plus CHGNet's learned crystal feature vector.",
        ("structure", "chgnet-gamma", "chgnet-embedding"),
    ),
    "structure-chgnet-full": _composite(
        "structure-chgnet-full",
        "structure-chgnet-emb plus CHGNet supercell phonon frequencies; the preset for vibrational "
        "properties.",
        ("structure", "chgnet-gamma", "chgnet-embedding", "chgnet-supercell"),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown featurizer preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def is_all_metal(composition: Composition) -> bool:
    return all(el.is_metal for el in composition.elements)
