"""Inputs that used to be taken on trust fail in one line naming them: a boolean given as "no" or "yes", a
``KDLIB_THREADS`` far above the cores, a Ray cluster address where nothing listens (within seconds, not minutes)."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import time

import numpy as np
import pytest
import torch

from kdlib.__main__ import main
from kdlib.core.train import set_cpu_threads
from kdlib.errors import KDConfigError
from kdlib.study.parallel import check_address
from kdlib.validation import env_bool, strict_bool

TINY_STUDY = (
    "study", "--dataset", "digits", "--quiet", "--workers", "1", "--set", "teacher_model=mlp",
    "--set", "student_model=mlp", "--set", "scenarios=iid", "--set", "methods=finetune", "--set", "n_train=null",
    "--set", "n_test=null", "--set", 'pretrain={"epochs": 1}', "--set", 'distill={"epochs": 1}', "--set", "seeds=1",
)  # fmt: skip


def cli(*argv: str) -> tuple[int, list[str]]:
    """Run the command line in-process: its exit status and the non-empty lines it wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ booleans


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("False", False), ("TRUE", True), (np.bool_(False), False)],
)
def test_a_boolean_is_true_false_or_its_word(value: object, expected: bool) -> None:
    assert strict_bool("federated", value) is expected


@pytest.mark.parametrize("value", ["no", "yes", "False ", " true", "", "0", "1", 0, 1, 2, 1.0, None, "on"])
def test_any_other_boolean_is_refused_in_one_line_naming_the_parameter(value: object) -> None:
    with pytest.raises(KDConfigError, match=r"^federated=.* is not valid: true or false \(") as info:
        strict_bool("federated", value)
    assert info.value.field == "federated" and "\n" not in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("0", False), (1, True), (np.int64(0), False)])
def test_one_and_zero_are_booleans_only_where_allowed(value: object, expected: bool) -> None:
    assert strict_bool("KDLIB_SOLUTIONS", value, digits=True) is expected
    with pytest.raises(KDConfigError, match="KDLIB_SOLUTIONS"):
        strict_bool("KDLIB_SOLUTIONS", value)
    for bad in ("2", 2, "no", "01", " 1"):
        with pytest.raises(KDConfigError, match=r"true or false, 1 or 0"):
            strict_bool("KDLIB_SOLUTIONS", bad, digits=True)


def test_an_environment_boolean_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KDLIB_SOME_FLAG", raising=False)
    assert env_bool("KDLIB_SOME_FLAG") is False and env_bool("KDLIB_SOME_FLAG", default=True) is True
    for text, expected in (("1", True), ("true", True), ("0", False), ("False", False)):
        monkeypatch.setenv("KDLIB_SOME_FLAG", text)
        assert env_bool("KDLIB_SOME_FLAG") is expected
    monkeypatch.setenv("KDLIB_SOME_FLAG", "yes")
    with pytest.raises(KDConfigError, match=r"^KDLIB_SOME_FLAG='yes' is not valid"):
        env_bool("KDLIB_SOME_FLAG")


@pytest.mark.parametrize(
    "flag", ['pretrain={"augment": "no"}', 'distill={"augment": "yes"}', 'pretrain={"augment": 1}']
)
def test_a_string_or_number_boolean_from_set_is_refused(flag: str, isolated_folders) -> None:
    code, lines = cli(*TINY_STUDY, "--set", flag)
    section = flag.split("=", 1)[0]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {section}.augment=")
    assert "true or false" in lines[0]
    assert not isolated_folders["cache"].exists()  # refused before any training


# ------------------------------------------------------------------------------------------------ threads


def test_kdlib_threads_has_an_upper_bound(monkeypatch: pytest.MonkeyPatch, isolated_folders) -> None:
    limit = 4 * (os.cpu_count() or 1)
    previous = torch.get_num_threads()
    try:
        monkeypatch.setenv("KDLIB_THREADS", str(limit))
        assert set_cpu_threads() == limit == torch.get_num_threads()
        for value in (str(limit + 1), "100000", "9" * 5000):
            monkeypatch.setenv("KDLIB_THREADS", value)
            with pytest.raises(KDConfigError, match=rf"^KDLIB_THREADS='9*\d*' is not valid: .*<= {limit}"):
                set_cpu_threads()
        with pytest.raises(KDConfigError, match=rf"^threads={limit + 1} is not valid"):
            set_cpu_threads(limit + 1)
        monkeypatch.setenv("KDLIB_THREADS", "100000")
        code, lines = cli(*TINY_STUDY)
    finally:
        torch.set_num_threads(previous)
    assert code == 2 and lines == [f"error: KDLIB_THREADS='100000' is not valid: an integer >= 1 and <= {limit} "
                                   f"(4 per core of this machine's {limit // 4}), e.g. KDLIB_THREADS=1"]  # fmt: skip
    assert torch.get_num_threads() == previous


# ------------------------------------------------------------------------------------------------ Ray address


def closed_port() -> int:
    """A local TCP port where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:{port}", "localhost:{port}"])
def test_a_ray_address_where_nothing_listens_fails_at_once(address: str) -> None:
    address = address.format(port=closed_port())
    started = time.monotonic()
    with pytest.raises(KDConfigError, match=r"^RAY_ADDRESS='.*' is not valid: the address of a running Ray cluster"):
        check_address(address, "RAY_ADDRESS")
    assert time.monotonic() - started < 10


def test_a_ray_address_is_probed_only_when_it_has_a_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_address(f"127.0.0.1:{server.getsockname()[1]}")  # something listens: left to Ray
    check_address("auto")
    check_address("local")
    with pytest.raises(KDConfigError, match="not a TCP port"):
        check_address("127.0.0.1:99999")


@pytest.mark.parametrize("via", ["env", "flag"])
def test_a_bad_ray_address_fails_the_study_in_one_line_within_seconds(
    via: str, monkeypatch: pytest.MonkeyPatch, isolated_folders
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    extra = ("--ray-address", "127.0.0.1:1") if via == "flag" else ()
    if via == "flag":
        monkeypatch.delenv("RAY_ADDRESS")
    started = time.monotonic()
    code, lines = cli(*TINY_STUDY, *extra)
    assert time.monotonic() - started < 30
    name = "RAY_ADDRESS" if via == "env" else "ray_address"
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {name}='127.0.0.1:1' is not valid: ")
    assert "did not answer" in lines[0] and not isolated_folders["cache"].exists()
