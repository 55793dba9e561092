from __future__ import annotations

import numpy as np
import pytest

from matflow.generate.config import CDVAEConfig, CDVAEConfigError


def test_paper_preset_matches_the_paper():
    config = CDVAEConfig.paper()
    assert (config.hidden_dim, config.latent_dim, config.num_noise_levels) == (256, 256, 50)
    assert config.sigmas[0] == pytest.approx(10.0) and config.sigmas[-1] == pytest.approx(0.01)
    ratios = config.sigmas[1:] / config.sigmas[:-1]
    assert np.allclose(ratios, ratios[0])  # geometric
    assert config.type_sigmas[0] == pytest.approx(5.0)


def test_json_round_trip(tmp_path):
    config = CDVAEConfig.small_cpu()
    path = tmp_path / "config.json"
    config.to_json(path)
    assert CDVAEConfig.from_json(path) == config
    assert CDVAEConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(("change", "message"), [
    ({"latent_dim": 0}, "latent_dim=0"),
    ({"cutoff": float("nan")}, "cutoff=nan"),
    ({"sigma_end": 20.0}, "must descend"),
    ({"beta_kl": -1.0}, "beta_kl=-1.0"),
])
def test_bad_values_are_named(change, message):
    with pytest.raises(CDVAEConfigError, match=message):
        CDVAEConfig(**change)


def test_unknown_key_is_rejected():
    with pytest.raises(CDVAEConfigError, match="latnet_dim"):
        CDVAEConfig.from_dict({"latnet_dim": 3})


def test_both_presets_build_a_model():
    from matflow.generate.model import CDVAE

    sizes = [sum(p.numel() for p in CDVAE(c).parameters())
             for c in (CDVAEConfig.small_cpu(), CDVAEConfig.paper())]
    assert sizes[0] < sizes[1]
