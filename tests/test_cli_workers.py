"""``kdlib study`` runs its jobs on Ray, one worker per core, unless told otherwise."""

from __future__ import annotations

import pytest

from kdlib import __main__ as cli
from kdlib.study.runner import Study


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], None, "auto"),
        ([], "1", "1"),
        (["--workers", "3"], "1", "3"),
        (["--workers", "0"], None, "0"),
    ],
)
def test_the_study_command_runs_one_worker_per_core_by_default(
    argv: list[str], env: str | None, expected: str, isolated_folders, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = {}

    def fake_run_all(self, force=False, *, methods=None, workers=None, ray_address=None):
        seen["workers"] = workers
        raise SystemExit(0)

    monkeypatch.setattr(Study, "run_all", fake_run_all)
    if env is None:
        monkeypatch.delenv("KDLIB_WORKERS", raising=False)
    else:
        monkeypatch.setenv("KDLIB_WORKERS", env)
    with pytest.raises(SystemExit):
        cli.main(["study", "--dataset", "digits", "--quiet", *argv])
    assert str(seen["workers"]) == expected
