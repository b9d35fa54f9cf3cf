"""The dispatcher's own failure handling: bad settings and a closed stdout pipe."""

import subprocess
import sys

import pytest


def run_fakescan(*args: str, env_extra: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "fakescan.cli", *args], env=env, capture_output=True,
                          text=True, **kwargs)


def test_invalid_setting_is_one_line_usage_error():
    done = run_fakescan("status", env_extra={"FAKESCAN_DEVICE": "gpu"})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "FAKESCAN_DEVICE" in lines[0] and "Traceback" not in done.stderr


def test_closed_stdout_pipe_ends_quietly():
    reader = subprocess.Popen([sys.executable, "-m", "fakescan.cli", "detectors", "list"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.close()  # the reader is gone before fakescan writes a byte
    _, stderr = reader.communicate(timeout=60)
    assert reader.returncode == 141
    assert b"Traceback" not in stderr and b"internal error" not in stderr


@pytest.mark.parametrize("url", ["not a url", "postgresql+psycopg://app:s3cret-pw@db:notaport/scans",
                                 "nosuchdb://app:s3cret-pw@db/scans"])
@pytest.mark.parametrize("command", [["status"], ["db", "upgrade"]])
def test_a_malformed_database_url_is_one_line_naming_the_variable(url, command, monkeypatch, capsys):
    from fakescan.cli import main

    monkeypatch.setenv("FAKESCAN_DATABASE_URL", url)
    assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fakescan: error: FAKESCAN_DATABASE_URL is not a database URL")
    assert "s3cret-pw" not in err[0]
