"""One redaction function for every secret kind."""

from __future__ import annotations

import pytest

from pirus_bridge.redact import redact_url, register_secret, scrub


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
    ("rediss://alice:s3cret@h:6380", "rediss://alice:***@h:6380"),
    ("redis://h/0?password=s3cret&db=1", "redis://h/0?password=***&db=1"),
    ("https://u:p4ss@tracker.example.org/counter/", "https://u:***@tracker.example.org/counter/"),
    ("https://t.example.org/piwik.php?idsite=1&token_auth=abcdef0123",
     "https://t.example.org/piwik.php?idsite=1&token_auth=***"),
    ("https://t.example.org/c?api_key=k3y", "https://t.example.org/c?api_key=***"),
    ("https://plain.example.org/counter/?a=1", "https://plain.example.org/counter/?a=1"),
])
def test_redact_url_hides_each_credential_kind(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_hides_urls_inside_text_and_registered_secrets() -> None:
    register_secret("0123456789abcdef0123456789abcdef")
    text = ("cannot reach redis://:pw@db:6379 (token 0123456789abcdef0123456789abcdef, "
            "see https://x/?token_auth=zzz)")
    out = scrub(text)
    assert "pw@" not in out and "0123456789abcdef" not in out and "zzz" not in out
    assert out.count("***") == 3
