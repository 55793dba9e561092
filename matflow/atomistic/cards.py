"""One-line cards of the universal potentials matflow can load offline (``matflow potentials``).

A result's provenance names its potential; the card says what that potential is: the model, the
installed package version, the training data as the package documents it, the package licence,
and that it loads without network.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, metadata, version

# training data as stated by each package's documentation (CHGNet README / model docstring;
# SevenNet's pretrained_potentials README), with the papers that describe the models
_CARD_TEXT = {
    "chgnet": ("CHGNet 0.3.0 (Deng et al., Nat. Mach. Intell. 5, 1031 (2023))", "chgnet",
               "MPtrj: Materials Project relaxation trajectories, PBE/PBE+U, ~1.58 M frames"),
    "sevenn-0": ("SevenNet-0, 11 Jul 2024 (Park et al., J. Chem. Theory Comput. 20, 4857 (2024))",
                 "sevenn", "MPtrj (PBE/PBE+U)"),
    "sevenn-0-22may2024": ("SevenNet-0, 22 May 2024 (Park et al., J. Chem. Theory Comput. 20, "
                           "4857 (2024))", "sevenn", "MPtrj (PBE/PBE+U)"),
    "sevenn-l3i5": ("SevenNet-l3i5: l_max 3, 5 interaction layers (Park et al., J. Chem. Theory "
                    "Comput. 20, 4857 (2024))", "sevenn", "MPtrj (PBE/PBE+U)"),
}


def _licence(package: str) -> str:
    try:
        meta = metadata(package)
    except PackageNotFoundError:
        return "unknown"
    classifiers = [c.rsplit("::", 1)[-1].strip() for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::")]
    text = meta.get("License-Expression") or (classifiers[0] if classifiers else meta.get("License"))
    return (text or "unknown").splitlines()[0].strip()


def potential_cards() -> list[dict]:
    """A card per potential ``load_potential`` accepts here: name, model, package and version,
    training data, licence, offline."""
    from matflow.atomistic.potentials import available_potentials

    cards = []
    for name in available_potentials():
        model, package, data = _CARD_TEXT.get(name, (name, name.split("-")[0], "see the package"))
        try:
            pkg_version = version(package)
        except PackageNotFoundError:
            pkg_version = "not installed"
        cards.append({"name": name, "model": model, "package": package,
                      "package_version": pkg_version, "training_data": data,
                      "licence": _licence(package), "offline": "yes"})
    return cards


def card_line(card: dict) -> str:
    """``name: model | package version | training data | licence | offline: yes`` on one line."""
    return (f"{card['name']}: {card['model']} | {card['package']} {card['package_version']} | "
            f"trained on {card['training_data']} | licence {card['licence']} | "
            f"offline: {card['offline']}")
