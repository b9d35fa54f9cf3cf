"""Transient database faults are retried with doubling delays; other errors are not."""

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from scheduler.retry import with_db_retries


class FlakyStep:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "committed"


@pytest.fixture
def session():
    engine = create_engine("sqlite://")
    with Session(engine) as session:
        yield session
    engine.dispose()


def test_transient_fault_retried_with_backoff(session):
    step, delays = FlakyStep(2, OperationalError("commit", {}, Exception("server closed the connection"))), []
    assert with_db_retries(session, step, sleep=delays.append, first_delay=0.5) == "committed"
    assert step.calls == 3
    assert delays == [0.5, 1.0]


def test_gives_up_after_the_last_attempt(session):
    step, delays = FlakyStep(10, OperationalError("commit", {}, Exception("database is locked"))), []
    with pytest.raises(OperationalError):
        with_db_retries(session, step, attempts=3, sleep=delays.append)
    assert step.calls == 3
    assert len(delays) == 2


def test_constraint_violation_is_not_retried(session):
    step, delays = FlakyStep(1, IntegrityError("insert", {}, Exception("duplicate key"))), []
    with pytest.raises(IntegrityError):
        with_db_retries(session, step, sleep=delays.append)
    assert step.calls == 1
    assert delays == []
