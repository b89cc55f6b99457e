"""The ray node runner's pure parts: which cluster it attaches to, where that address listens, and the one line
kept of a child's error output. No Ray needed (the module imports it only when the runner is used)."""

from __future__ import annotations

import pytest

from pytest_glm.cluster import _host_port, _one_line, cluster_address
from pytest_glm.exceptions import ConfigError


def test_the_address_comes_from_the_argument_then_ray_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert cluster_address() == "10.0.0.1:6379"
    assert cluster_address("10.0.0.2:6380") == "10.0.0.2:6380"


@pytest.mark.parametrize(("value", "problem"), [("", "RAY_ADDRESS is not set"), ("local", "would start a Ray")])
def test_no_cluster_to_attach_to_is_a_usage_error_naming_ray_address(monkeypatch: pytest.MonkeyPatch, value: str,
                                                                    problem: str) -> None:
    monkeypatch.setenv("RAY_ADDRESS", value)
    with pytest.raises(ConfigError) as info:
        cluster_address()
    assert info.value.option == "RAY_ADDRESS"
    assert problem in info.value.problem


@pytest.mark.parametrize(("address", "where"), [
    ("10.0.0.1:6379", ("10.0.0.1", 6379)),
    ("head.cluster", ("head.cluster", 6379)),
    ("ray://head:10001", ("head", 10001)),
    ("ray://head", ("head", 10001)),
    ("[fd00::2]:6380", ("fd00::2", 6380)),
    ("auto", None),
])
def test_where_an_address_listens(address: str, where: tuple[str, int] | None) -> None:
    assert _host_port(address) == where


def test_a_port_that_is_no_number_names_the_form() -> None:
    with pytest.raises(ConfigError, match="expected HOST:PORT or ray://HOST:PORT, got 'head:port'"):
        _host_port("head:port")


def test_the_line_kept_of_an_error_is_the_exception_not_the_log_noise() -> None:
    stderr = ("[2026-12-04 21:18:41,575 W 5301 5301] rpc_client.h:638: Failed to connect within 5 seconds.\n"
              "Traceback (most recent call last):\n  File \"<string>\", line 3, in <module>\n"
              "RuntimeError: Version mismatch: The cluster was started with Ray 2.59.0, this process has 2.60.0\n"
              "[2026-12-04 21:18:46,577 E 5301 5311] rpc_client.h:204: The program will terminate.\n")
    assert _one_line(stderr) == ("RuntimeError: Version mismatch: The cluster was started with Ray 2.59.0, this "
                                 "process has 2.60.0")
    assert _one_line("only noise\n") == "only noise"
    assert _one_line("x" * 500).endswith("...") and len(_one_line("x" * 500)) == 240
