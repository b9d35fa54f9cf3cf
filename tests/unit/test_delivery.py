"""Start-up checks of the worker's delivery settings (no broker needed)."""

from __future__ import annotations

import pytest

from fakescan.errors import UsageError
from fakescan.settings import load_settings
from worker.delivery import check_visibility_timeout
from worker.tasks import retry_delay


def test_a_visibility_timeout_below_retry_wait_plus_budget_is_refused_with_the_numbers() -> None:
    with pytest.raises(UsageError) as refused:
        check_visibility_timeout(load_settings(visibility_timeout=20, retry_backoff_max=300, batch_budget=60))
    message = str(refused.value)
    assert "FAKESCAN_VISIBILITY_TIMEOUT=20s" in message and "= 360s" in message
    check_visibility_timeout(load_settings(visibility_timeout=361, retry_backoff_max=300, batch_budget=60))
    check_visibility_timeout(load_settings())  # the defaults are consistent


def test_the_fleet_refuses_it_at_start(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from fakescan.cli import main

    monkeypatch.setenv("FAKESCAN_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("FAKESCAN_VISIBILITY_TIMEOUT", "60")
    assert main(["worker", "--pool", "solo"]) == UsageError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "FAKESCAN_VISIBILITY_TIMEOUT=60s is not above" in err[0]


def test_retry_waits_never_pass_the_cap() -> None:
    settings = load_settings(retry_backoff_max=5)
    assert all(0 <= retry_delay(retries, settings) <= 5 for retries in range(12) for _ in range(20))
