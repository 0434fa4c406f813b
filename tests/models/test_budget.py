"""param_budget: the same parameter count at different depths; max_params: refuse before training."""

import pytest

from nnlab.errors import NnlabError
from nnlab.models import build_model, solve_param_budget


@pytest.mark.parametrize("depth", [2, 3, 5, 10])
def test_mlp_depth_variants_land_within_five_percent_of_the_budget(depth):
    cfg = {"name": "mlp", "depth": depth, "width": 8, "param_budget": 100_000}
    solved = solve_param_budget(cfg, (28, 28, 1), "classification", 10)
    model = build_model(cfg, (28, 28, 1), "classification", 10)
    assert abs(model.count_params() - 100_000) <= 5_000
    assert [l.units for l in model.layers if l.name.endswith("_dense")] == [solved["width"]] * depth
    assert "param_budget" not in solved


def test_deeper_nets_get_narrower_at_the_same_budget():
    widths = [solve_param_budget({"name": "mlp", "depth": d, "width": 8, "param_budget": 100_000},
                                 (28, 28, 1), "classification", 10)["width"] for d in (2, 10)]
    assert widths[0] > widths[1]


def test_float_width_multiplier_for_convolutional_builders():
    cfg = {"name": "alexnet", "param_budget": 150_000}
    solved = solve_param_budget(cfg, (28, 28, 1), "classification", 10)
    assert isinstance(solved["width"], float)
    assert abs(build_model(solved, (28, 28, 1), "classification", 10).count_params() - 150_000) <= 7_500


def test_budgets_that_cannot_be_met_or_models_without_a_width():
    with pytest.raises(NnlabError, match="cannot be met within 5%"):
        build_model({"name": "mlp", "depth": 3, "param_budget": 50}, (28, 28, 1), "classification", 10)
    with pytest.raises(NnlabError, match="has explicit widths"):
        build_model({"name": "mlp", "widths": [8, 8], "param_budget": 10_000}, (8,), "classification", 3)
    with pytest.raises(NnlabError, match="'lstm' has none"):
        build_model({"name": "lstm", "param_budget": 10_000}, (12, 1), "regression", 0)


def test_max_params_names_the_count_and_the_limit():
    with pytest.raises(NnlabError, match=r"'mlp' has 1,482 parameters, over model.max_params=1,000"):
        build_model({"name": "mlp", "depth": 2, "width": 16, "max_params": 1000}, (8, 8, 1), "classification", 10)
    assert build_model({"name": "mlp", "depth": 2, "width": 16, "max_params": 1482}, (8, 8, 1),
                       "classification", 10).count_params() == 1482
