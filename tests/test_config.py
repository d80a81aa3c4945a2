"""Scale configs and how a run that departs from its named scale is labelled."""

from __future__ import annotations

import pytest

from kdlib.config import SCALES, scale_config, scale_departures


@pytest.mark.parametrize("scale", SCALES)
def test_a_named_scale_departs_from_nothing_even_with_other_scenarios(scale):
    assert scale_departures(scale_config(scale)) == []
    assert scale_departures(scale_config(scale, scenarios="iid,disjoint")) == []


def test_a_shortened_budget_is_named_field_by_field_with_the_scale_value():
    cfg = scale_config("paper", pretrain={"epochs": 10}, distill={"epochs": 4})
    assert scale_departures(cfg) == ["pretrain.epochs=10 (paper: 60)", "distill.epochs=4 (paper: 20)"]


def test_sizes_data_set_and_grids_are_named_too():
    cfg = scale_config("smoke", dataset="digits", n_train=500, grid_alphas="0.5")
    assert scale_departures(cfg) == [
        "dataset=digits (smoke: cifar10)",
        "n_train=500 (smoke: 2000)",
        "grid_alphas=0.5 (smoke: 0.25,0.5,0.9)",
    ]


def test_the_figure_caption_names_the_departures(tmp_path):
    from kdlib.study import caption, open_study

    study = open_study("smoke", device="cpu", results=str(tmp_path), dataset="digits", n_train=500, n_test=200,
                       distill={"epochs": 2})  # fmt: skip
    text = caption(study)
    assert "smoke scale: 500 train / 200 test images" in text
    assert "changed: dataset=digits (smoke: cifar10), n_train=500 (smoke: 2000), n_test=200 (smoke: 1000), " in text
    assert text.endswith("distill.epochs=2 (smoke: 3)")
    assert "changed" not in caption(open_study("smoke", device="cpu", results=str(tmp_path)))
