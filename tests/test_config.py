"""Scale configs and how a run that departs from its named scale is labelled."""

from __future__ import annotations

import pytest

from kdlib.errors import KDConfigError
from kdlib.fl.config import FederatedConfig, federated_scale_config
from kdlib.study.config import SCALE_SETTINGS, SCALES, StudyConfig, scale_config, scale_departures


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
    from kdlib.notebook.figure_layout import caption
    from kdlib.study.runner import open_study

    study = open_study("smoke", device="cpu", results=str(tmp_path), dataset="digits", n_train=500, n_test=200,
                       distill={"epochs": 2})  # fmt: skip
    text = caption(study)
    assert "smoke scale: 500 train / 200 test images" in text
    assert "changed: dataset=digits (smoke: cifar10), n_train=500 (smoke: 2000), n_test=200 (smoke: 1000), " in text
    assert text.endswith("distill.epochs=2 (smoke: 3)")
    assert "changed" not in caption(open_study("smoke", device="cpu", results=str(tmp_path)))


def test_one_caption_function_serves_both_studies(tmp_path):
    from kdlib.fl.study import open_federated
    from kdlib.notebook import figure_layout
    from kdlib.study.runner import open_study

    fed = open_federated("smoke", device="cpu", results=str(tmp_path), dataset="digits", n_train=500, n_test=200,
                         progress=False)  # fmt: skip
    text = figure_layout.caption(fed, "target: 95%")
    assert text.startswith(f"{fed.dataset.description}, smoke scale: 500 train / 200 test images; ")
    assert text.endswith(f"{fed.cfg.num_clients} clients, {fed.cfg.model}, {fed.cfg.rounds} rounds x 1 local "
                         "epoch(s); 1 seed; target: 95%")  # fmt: skip
    study = open_study("smoke", device="cpu", results=str(tmp_path), dataset="digits", n_train=500, n_test=200)
    assert figure_layout.caption(study, "x") == figure_layout.caption(study) + "; x"


@pytest.mark.parametrize("make", [StudyConfig, FederatedConfig])
def test_both_configs_share_the_common_checks_and_replace(make) -> None:
    cfg = make()
    for field, bad, words in (("seed", 2**32, "< 2**32"), ("seed", True, ">= 0"), ("n_train", 5, ">= 20"),
                              ("scale", "huge", "smoke, full, paper")):  # fmt: skip
        with pytest.raises(KDConfigError, match=field) as error:
            cfg.replace(**{field: bad})
        assert words in str(error.value)
    with pytest.raises(KDConfigError, match=f"a field of {make.__name__}"):
        cfg.replace(no_such_field=1)
    train = cfg.TRAIN_FIELDS[-1]
    with pytest.raises(KDConfigError, match=f"{train}.epochz"):
        cfg.replace(**{train: {"epochz": 2}})
    assert getattr(cfg.replace(**{train: {"epochs": 2}}), train).epochs == 2
    assert cfg.replace(scenarios="iid, disjoint").scenarios == ("iid", "disjoint")
    with pytest.raises(KDConfigError, match="scenarios"):
        cfg.replace(scenarios=5)
    assert cfg.as_dict()["seed"] == cfg.seed


@pytest.mark.parametrize("scale", SCALES)
def test_one_scale_table_holds_both_studies(scale: str) -> None:
    study, federated = scale_config(scale), federated_scale_config(scale)
    assert study.scale == federated.scale == scale
    for name, cfg in (("study", study), ("federated", federated)):
        for key, value in SCALE_SETTINGS[scale][name].items():
            got = getattr(cfg, key)
            if isinstance(value, dict):
                assert all(getattr(got, k) == v for k, v in value.items()), (scale, name, key)
            else:
                assert got == value, (scale, name, key)


def test_each_study_drops_the_other_studys_fields_with_a_warning_and_keeps_unknown_names(tmp_path) -> None:
    """08 hands one overrides mapping to both studies (e.g. ``starts`` to judge FL on a subset of its starts)."""
    from kdlib.fl.study import open_federated
    from kdlib.notebook import lesson

    small = {"dataset": "digits", "n_train": 500, "n_test": 200}
    both = {**small, "starts": "random,kd_avg"}
    with pytest.warns(UserWarning, match=r"distillation study \(FederatedConfig fields\): starts$"):
        study = lesson.setup("smoke", device="cpu", results=str(tmp_path), overrides=both)
    assert study.cfg.n_train == 500
    with pytest.warns(UserWarning, match=r"federated study \(StudyConfig fields\): grid_alphas$"):
        fed = open_federated("smoke", device="cpu", results=str(tmp_path), progress=False, grid_alphas=[0.5],
                             starts="random,kd_avg", **small)  # fmt: skip
    assert fed.cfg.starts == ("random", "kd_avg")
    with pytest.raises(KDConfigError, match=r"^n_trian="):
        lesson.setup("smoke", device="cpu", results=str(tmp_path), overrides={**small, "n_trian": 5})


def test_overrides_win_over_a_notebooks_parameters_with_a_warning_on_a_clash() -> None:
    import warnings

    from kdlib.study.config import over_parameters

    parameters = {"device": "cpu", "seed": 0, "dataset": None}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no clash: a parameter left at None, or set to the same value
        assert over_parameters(parameters, {"dataset": "digits", "seed": 0}) == {**parameters, "dataset": "digits"}
    with pytest.warns(UserWarning, match=r"overrides win over the notebook's parameters: seed=3 \(not 0\)$"):
        assert over_parameters(parameters, {"seed": 3})["seed"] == 3
    assert parameters["seed"] == 0  # the caller's mapping is left as it was


def test_a_notebook_field_named_in_overrides_too_opens_the_study_instead_of_a_type_error(tmp_path) -> None:
    """Notebooks pass ``seed``/``dataset``/``scenarios`` as keywords; the same name in ``overrides`` used to reach
    ``open_study`` twice (Python's "got multiple values for keyword argument")."""
    from kdlib.notebook import lesson

    small = {"n_train": 500, "n_test": 200}
    with pytest.warns(UserWarning, match=r"seed=2 \(not 0\)"):
        study = lesson.setup("smoke", device="cpu", results=str(tmp_path), dataset="digits", seed=0,
                             overrides={**small, "seed": 2, "scenarios": "iid"})  # fmt: skip
    assert (study.cfg.seed, study.cfg.scenarios) == (2, ("iid",))
    fed = lesson.setup_federated("smoke", device="cpu", results=str(tmp_path), progress=False, dataset="digits",
                                 overrides={**small, "dataset": "digits", "rounds": 2})  # fmt: skip
    assert (fed.cfg.dataset, fed.cfg.rounds) == ("digits", 2)
