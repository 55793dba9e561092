"""Load the pretrained CHGNet once per process and describe it for provenance records.

Every atomistic step (relax, MD, phonons) asks this module for the model so a batch of structures
never pays the ~1 s load more than once. Nothing here touches the network: CHGNet ships its weights.
"""

from __future__ import annotations

from functools import lru_cache

from matflow.provenance import installed_versions
from matflow.settings import get_settings

DEFAULT_MODEL = "0.3.0"


def resolve_device(device: str | None = None) -> str:
    """Torch device to use: the argument, else MATFLOW_DEVICE, 'auto' meaning CUDA when present."""
    import torch

    device = device or get_settings().device or "auto"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def set_torch_threads(n: int | None = None) -> int:
    """Limit torch intra-op threads (n, else the torch_threads setting: MATFLOW_TORCH_THREADS or the
    config file); small cells gain nothing from more."""
    import torch

    n = n or (get_settings().torch_threads or 0)
    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


@lru_cache(maxsize=4)
def load_chgnet(model_name: str = DEFAULT_MODEL, device: str | None = None):
    """The pretrained CHGNet (cached per process, eval mode, gradients of weights switched off)."""
    import contextlib
    import io

    from chgnet.model import CHGNet

    set_torch_threads()
    with contextlib.redirect_stdout(io.StringIO()):  # keep CLI stdout for results only
        model = CHGNet.load(model_name=model_name, use_device=resolve_device(device), verbose=False)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def chgnet_elements(model_name: str = DEFAULT_MODEL) -> int:
    """Highest atomic number CHGNet has an embedding for (elements Z > this are refused)."""
    model = load_chgnet(model_name)
    return int(model.atom_embedding.embedding.num_embeddings)


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour decides an atomistic result."""
    return installed_versions(("matflow", "chgnet", "torch", "ase", "phonopy", "pymatgen", "numpy"))
