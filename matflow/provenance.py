"""Installed package versions for manifests, model cards and benchmark records."""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version


def installed_versions(packages: Iterable[str], *, python: bool = False,
                       missing: str | None = "not installed") -> dict[str, str]:
    """``{package: version}`` of installed distributions, after ``python`` when asked.

    One lookup behind every record of what produced a result. An absent package reads ``missing``,
    or is left out when ``missing`` is None.
    """
    out = {"python": platform.python_version()} if python else {}
    for package in packages:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            if missing is not None:
                out[package] = missing
    return out


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (weights and datasets can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
