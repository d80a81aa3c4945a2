"""The command line: the ``kdlib`` console script, and ``reproduce --set`` checked before any kernel starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdlib.errors import KDConfigError
from kdlib.notebook.reproduce import check_overrides, declared_parameters, study_notebooks
from kdlib.study.results import ResultsStore


def test_the_console_script_is_installed_and_answers_help() -> None:
    beside = Path(sys.executable).parent / "kdlib"  # where pip puts it, whether or not a shim is on the PATH
    script = str(beside) if beside.exists() else shutil.which("kdlib")
    assert script is not None, "pip install -e . installs the kdlib command (pyproject.toml [project.scripts])"
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "reproduce" in done.stdout


@pytest.mark.parametrize("pair", ["n_trian=1", "foo=1"])
def test_an_unknown_set_key_fails_in_one_line_before_any_notebook(pair: str, tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "kdlib", "reproduce", "--output", str(tmp_path / "nb"), "--set", pair],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and pair.split("=")[0] in lines[0] and "notebook parameter" in lines[0]
    assert not (tmp_path / "nb").exists()  # nothing ran


def test_known_keys_pass_the_check_and_a_notebook_parameter_counts_as_known() -> None:
    keys = frozenset().union(*(declared_parameters(p) for p in study_notebooks()))
    assert {"federated", "overrides", "scale"} <= keys
    check_overrides("smoke", {"n_train": 500, "federated": False, "num_clients": 4}, keys)
    with pytest.raises(KDConfigError, match="n_trian"):
        check_overrides("smoke", {"n_trian": 500}, keys)


def test_every_option_of_every_command_has_help_text() -> None:
    import argparse

    from kdlib.__main__ import build_parser

    parser = build_parser()
    assert "``" not in (parser.description or "")  # plain text, not reST markup, in the terminal
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert missing == []


@pytest.mark.slow
def test_kdlib_federated_runs_seeds_and_judges_the_claim_over_them(tmp_path) -> None:
    command = [sys.executable, "-m", "kdlib", "federated", "--dataset", "digits", "--set", "n_train=null",
               "--set", "n_test=null", "--set", "num_clients=3", "--set", "rounds=2", "--set", "model=mlp",
               "--set", "scenarios=iid", "--set", "starts=random,kd_avg", "--seeds", "2", "--quiet",
               "--results", str(tmp_path / "results")]  # fmt: skip
    env = {**os.environ, "KDLIB_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fewer FedAvg rounds from a KD start (kd_avg)" in done.stdout and "(n = 2, smoke scale" in done.stdout
    records = ResultsStore.open("study", tmp_path / "results").records()
    assert {r["config"]["seed"] for r in records} == {0, 1}


def run_findings_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``figures/full/write_findings.sh`` run from the project folder with ``env``."""
    return subprocess.run(["bash", "figures/full/write_findings.sh"], cwd=Path(__file__).parents[1], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_the_findings_script_refuses_while_too_few_seeds_are_complete(tmp_path: Path) -> None:
    from kdlib.study.findings import MIN_SEEDS_TO_QUOTE

    env = {**os.environ, "KDLIB_RESULTS": str(tmp_path / "results"), "KDLIB_FIGURES": str(tmp_path / "figures")}
    done = run_findings_script(env)
    assert done.returncode == 1
    assert "0 seed(s) of the full study (main) are complete" in done.stdout
    assert f"quoted from {MIN_SEEDS_TO_QUOTE}" in done.stdout
    assert not (tmp_path / "figures").exists()  # nothing written


@pytest.mark.parametrize("variant", ["public_teacher", "vit_pair"])
def test_the_findings_script_counts_a_variants_own_seeds(tmp_path: Path, variant: str) -> None:
    """A variant (variants.sh) is counted by its own config: 4 whole seeds of it are 4 for it and 0 for the main
    study, and both are refused below 5."""
    from kdlib.__main__ import parse_overrides
    from kdlib.study.runner import open_study, run_config

    sets = {"public_teacher": ["teacher_model=published:resnet56", "scenarios=iid,dirichlet:0.1"],
            "vit_pair": ["student_model=vit-small"]}[variant]  # fmt: skip
    study = open_study("full", results=str(tmp_path / "results"), progress=False, **parse_overrides(sets))
    for scenario, method, seed in study.jobs():
        if seed < 4:
            config = run_config(study.cfg, scenario, method, seed=seed)
            study.store.append("distill", config, {"acc_before": 0.5, "acc_after": 0.6, "gain": 0.1})
    for name, count in ((variant, 4), ("main", 0)):
        env = {**os.environ, "KDLIB_RESULTS": str(tmp_path / "results"), "VARIANT": name}
        done = run_findings_script(env)
        assert done.returncode == 1, done.stderr
        assert f"{count} seed(s) of the full study ({name}) are complete" in done.stdout


def store_fake_federated_seeds(results: Path, seeds: int, starts: str) -> None:
    """Records (no real metrics) for every (scenario, start) of the first ``seeds`` of the full federated study's
    seeds with ``starts``, and one record of the seed after them."""
    from kdlib.fl.config import KIND
    from kdlib.fl.study import open_federated, run_config

    fed = open_federated("full", results=str(results), progress=False, starts=starts)
    for scenario, start, seed in fed.jobs():
        if seed < seeds or (seed == seeds and start == "random"):
            fed.store.append(KIND, run_config(fed.cfg.replace(seed=seed), scenario, start), {"rounds_to_target": 1})


def test_the_federated_study_counts_its_complete_seeds_for_its_starts(tmp_path: Path) -> None:
    from kdlib.fl.study import open_federated

    store_fake_federated_seeds(tmp_path, 2, "random,kd_avg")
    assert open_federated("full", results=str(tmp_path), progress=False, starts="random,kd_avg").complete_seeds() == 2
    assert open_federated("full", results=str(tmp_path), progress=False, starts="random").complete_seeds() == 3
    assert open_federated("full", results=str(tmp_path), progress=False).complete_seeds() == 0  # kd_dp not stored


def test_the_findings_script_refuses_the_federated_claim_below_five_seeds_of_it(tmp_path: Path) -> None:
    """Five complete seeds of the main study are not enough for FEDERATED=true: 08 would train the missing
    federated runs (hours at full), so the script counts that study's own seeds for the starts it judges."""
    from kdlib.study.runner import open_study, run_config

    results = tmp_path / "results"
    study = open_study("full", results=str(results), progress=False)
    for scenario, method, seed in study.jobs():
        if seed < 5:
            study.store.append("distill", run_config(study.cfg, scenario, method, seed=seed), {"gain": 0.1})
    store_fake_federated_seeds(results, 4, "random,kd_avg")
    env = {**os.environ, "KDLIB_RESULTS": str(results), "KDLIB_FIGURES": str(tmp_path / "figures"),
           "FEDERATED": "true", "FEDERATED_STARTS": "random,kd_avg"}  # fmt: skip
    done = run_findings_script(env)
    assert done.returncode == 1, done.stderr
    assert "4 seed(s) of the federated study (starts: random,kd_avg) are complete" in done.stdout
    assert "08_findings on" not in done.stdout and not (tmp_path / "figures").exists()


def test_the_findings_script_refuses_an_unknown_variant(tmp_path: Path) -> None:
    env = {**os.environ, "KDLIB_RESULTS": str(tmp_path / "results"), "VARIANT": "public"}
    done = run_findings_script(env)
    assert done.returncode == 2
    assert "use main, public_teacher or vit_pair" in done.stderr


def test_the_progress_script_reports_every_part_of_the_queue_from_the_store(tmp_path: Path) -> None:
    """figures/full/progress.sh reads the store as the queue fills it: 2 whole seeds of the federated claim's starts
    (variants.sh, which the queue runs) are 2 of 5 for the claim and 0 for every start; nothing runs."""
    root = Path(__file__).resolve().parent.parent
    starts = subprocess.run(["bash", "-c", "source figures/full/variants.sh; echo $FEDERATED_CLAIM_STARTS"], cwd=root,
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    store_fake_federated_seeds(tmp_path, 2, starts)
    env = {**os.environ, "KDLIB_RESULTS": str(tmp_path)}
    done = subprocess.run(["bash", str(root / "figures/full/progress.sh")], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    parts = {}
    for block in done.stdout.split("== ")[1:]:
        title, first, *seeds = block.strip().splitlines()
        parts[title] = (first, seeds)
    assert list(parts) == ["main study", "union reference rows", "public teacher", "federated claim (first pass)",
                           "federated, every start"]  # fmt: skip
    assert "0 of 10 seed(s) complete" in parts["main study"][0]
    assert "2 of 5 seed(s) complete" in parts["federated claim (first pass)"][0]
    from kdlib.fl.config import federated_scale_config

    scenarios = len(federated_scale_config("full").scenarios)  # the seed after the 2: its random starts alone
    jobs = len(starts.split(",")) * scenarios
    assert parts["federated claim (first pass)"][1][2].startswith(f"seed 2: {scenarios}/{jobs} runs stored")
    assert "0 of 5 seed(s) complete" in parts["federated, every start"][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.jsonl"]  # nothing written beside the store
