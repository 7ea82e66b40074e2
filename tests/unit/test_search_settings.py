"""Search settings are checked in one place (estimate_nfe) and their errors name parameters structurally, so a
node can name its own inputs without rewording messages."""

import pytest
import torch

from noise_search.search import SettingError, estimate_nfe


@pytest.mark.parametrize("algorithm, config, param", [
    ("paths", {"delta_f": 0.3, "delta_b": 0.2}, "delta_b"),
    ("paths", {"sigma_start": 1.5}, "sigma_start"),
    ("paths", {"m": 0}, "m"),
    ("zero_order", {"step_cos": 1.0}, "step_cos"),
    ("zero_order", {"rounds": -1}, "rounds"),
    ("random", {"n": 0}, "n"),
    ("random", {"top_k": 0}, "top_k"),
    ("random", {"budget_nfe": -3}, "budget_nfe"),
])
def test_every_bad_setting_raises_a_setting_error_naming_its_parameter(algorithm, config, param):
    with pytest.raises(SettingError) as caught:
        estimate_nfe(algorithm, torch.linspace(1, 0, 9), **config)
    error = caught.value
    assert error.param == param
    assert param in str(error) and "{" not in str(error)
    rendered = error.render({param: f"node_{param}"})
    assert f"node_{param}" in rendered and "{" not in rendered


def test_render_names_every_parameter_the_message_mentions():
    with pytest.raises(SettingError) as caught:
        estimate_nfe("paths", torch.linspace(1, 0, 9), delta_f=0.3, delta_b=0.2)
    rendered = caught.value.render({"delta_f": "paths_delta_f", "delta_b": "paths_delta_b"})
    assert "paths_delta_b" in rendered and "paths_delta_f" in rendered
    assert " delta_b" not in rendered.replace("paths_delta_b", "")
