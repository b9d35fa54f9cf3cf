"""API tokens: parsing, hashed secrets, roles, and where ``fakescan serve`` binds without any token."""

from __future__ import annotations

import pytest

from fakescan.api.auth import LOCAL, Access, hash_token, load_access, parse_entry
from fakescan.api.cli import LOOPBACK, bind_address
from fakescan.errors import UsageError
from fakescan.settings import load_settings


def test_tokens_from_the_environment_and_a_file(tmp_path, monkeypatch):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# moderators\nreviewer:rex:{hash_token('rex-secret')}\n\nviewer:vic:vic-secret\n")
    monkeypatch.setenv("FAKESCAN_API_TOKENS", "viewer:env:env-secret, reviewer:ops:ops-secret")
    monkeypatch.setenv("FAKESCAN_API_TOKENS_FILE", str(tokens))
    access = load_access(load_settings())
    assert not access.open
    found = map(access.authenticate, ("env-secret", "ops-secret", "rex-secret", "vic-secret"))
    assert [(p.name, p.role) for p in found] == [("env", "viewer"), ("ops", "reviewer"), ("rex", "reviewer"),
                                                  ("vic", "viewer")]
    assert access.authenticate(hash_token("rex-secret")) is None  # the stored digest is not a token
    assert access.authenticate("") is None and access.authenticate(None) is None
    assert access.authenticate("rex-secre") is None


@pytest.mark.parametrize("entry, reason", [
    ("admin:root:secret", "unknown token role 'admin'"),
    ("viewer:secret", "role:name:secret"),
    ("viewer::secret", "role:name:secret"),
    ("viewer:v:sha256:abcd", "64 hex digits"),
])
def test_malformed_entries_are_refused_without_echoing_the_secret(entry, reason):
    with pytest.raises(UsageError) as raised:
        parse_entry("FAKESCAN_API_TOKENS", entry)
    assert reason in str(raised.value) and "secret" not in str(raised.value).replace("role:name:secret", "")


def test_a_missing_tokens_file_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKESCAN_API_TOKENS_FILE", str(tmp_path / "absent"))
    with pytest.raises(UsageError, match="cannot read API tokens file"):
        load_access(load_settings())


def test_without_tokens_everyone_local_reviews_and_the_service_binds_loopback_only():
    access = Access(())
    assert access.open and access.authenticate(None) == LOCAL and LOCAL.may_review
    assert bind_address(None, open_access=True)[0] == LOOPBACK
    host, note = bind_address("0.0.0.0", open_access=True)
    assert host == LOOPBACK and "127.0.0.1 only" in note and "ignoring --host 0.0.0.0" in note
    assert bind_address(None, open_access=False) == ("0.0.0.0", None)
    assert bind_address("10.0.0.5", open_access=False) == ("10.0.0.5", None)
