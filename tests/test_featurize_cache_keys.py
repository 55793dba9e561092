"""Feature cache keys change with everything that changes a feature value, and only with that."""

from __future__ import annotations

import pytest

import matflow.atomistic.model
from matflow.featurize import PRESETS, get_preset
from matflow.featurize import presets as presets_module

CHGNET_PRESETS = ["chgnet-gamma", "chgnet-embedding", "chgnet-supercell", "structure-chgnet",
                  "structure-chgnet-emb", "structure-chgnet-full"]


@pytest.fixture
def fresh_keys():
    """Forget the keys each preset memoises, before and after, so a patched version is seen and undone."""
    for preset in PRESETS.values():
        preset._key.clear()
    yield
    for preset in PRESETS.values():
        preset._key.clear()


def _keys() -> dict[str, str]:
    return {name: get_preset(name).key() for name in ["structure", "composition", *CHGNET_PRESETS]}


def _patched_version(monkeypatch, package: str, value: str) -> None:
    real = presets_module._package_version
    monkeypatch.setattr(presets_module, "_package_version", lambda name: value if name == package else real(name))


@pytest.mark.parametrize("package", ["chgnet", "torch", "phonopy"])
def test_chgnet_preset_keys_follow_the_packages_that_compute_them(package, fresh_keys, monkeypatch):
    before = _keys()
    _patched_version(monkeypatch, package, "99.0.0")
    for preset in PRESETS.values():
        preset._key.clear()
    after = _keys()
    assert after["structure"] == before["structure"] and after["composition"] == before["composition"]
    changed = {name for name in CHGNET_PRESETS if after[name] != before[name]}
    # the embedding runs no phonopy; every preset with a phonon part depends on it
    expected = set(CHGNET_PRESETS) - ({"chgnet-embedding"} if package == "phonopy" else set())
    assert changed == expected
    assert get_preset("structure-chgnet-full").versions()[package] == "99.0.0"
    assert package not in get_preset("structure").versions()


def test_chgnet_preset_keys_follow_the_pretrained_model(fresh_keys, monkeypatch):
    before = _keys()
    monkeypatch.setattr(matflow.atomistic.model, "DEFAULT_MODEL", "r2scan")
    for preset in PRESETS.values():
        preset._key.clear()
    after = _keys()
    assert all(after[name] != before[name] for name in CHGNET_PRESETS)
    assert after["structure"] == before["structure"]
    assert get_preset("chgnet-embedding").versions()["chgnet_model"] == "r2scan"
