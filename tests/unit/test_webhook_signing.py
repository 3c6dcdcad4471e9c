"""Webhook signatures as the server makes them and the published receiver checks them; the
back-off; which endpoints are accepted."""

from __future__ import annotations

import pytest

from signaling.webhooks import signing
from signaling.webhooks.sender import backoff_s
from signaling.webhooks.settings import WebhookConfigError, WebhookEndpoint, WebhookSettings
from tests.webhook_receiver import load_receiver_example

SECRET = "kP4-wQ8rT2yU6iO0pA3sD7fG1hJ5kL9z"
BODY = b'{"id": "evt_1", "type": "participant_joined", "consultation": "cons_abcdef"}'
receiver = load_receiver_example()


def _headers(timestamp: int, body: bytes = BODY, secret: str = SECRET) -> dict[str, str]:
    return {
        signing.TIMESTAMP: str(timestamp),
        signing.SIGNATURE: signing.signature(secret.encode(), timestamp, body),
        signing.EVENT_ID: "evt_1",
    }


def test_the_published_receiver_takes_what_the_server_signs() -> None:
    event = receiver.verify(SECRET.encode(), _headers(1_800_000_000), BODY, now=1_800_000_100)
    assert event["type"] == "participant_joined"


@pytest.mark.parametrize(
    ("headers", "body", "now", "why"),
    [
        (_headers(1_800_000_000), BODY, 1_800_000_301, "stale timestamp"),
        (_headers(1_800_000_000), BODY, 1_799_999_699, "stale timestamp"),
        (_headers(1_800_000_000), BODY.replace(b"joined", b"left__"), 1_800_000_000, "bad"),
        (_headers(1_800_000_000, secret="x" * 32), BODY, 1_800_000_000, "bad signature"),
        # A replay with a fresh timestamp but the old signature.
        ({**_headers(1_800_000_000), signing.TIMESTAMP: "1800000300"}, BODY, 1_800_000_300, "bad"),
        ({**_headers(1_800_000_000), signing.EVENT_ID: "evt_2"}, BODY, 1_800_000_000, "mismatch"),
    ],
)
def test_the_receiver_refuses_stale_forged_and_replayed_posts(
    headers: dict[str, str], body: bytes, now: int, why: str
) -> None:
    with pytest.raises(receiver.Refused, match=why):
        receiver.verify(SECRET.encode(), headers, body, now=now)


def test_the_signature_covers_timestamp_and_body() -> None:
    assert signing.signature(b"k", 1, b"body") == (
        "v1=" + __import__("hmac").new(b"k", b"1.body", "sha256").hexdigest()
    )


def test_back_off_doubles_from_a_second_up_to_the_cap_with_jitter() -> None:
    assert [backoff_s(n, 600, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff_s(30, 600, rand=lambda: 1.0) == 600
    assert backoff_s(4, 600, rand=lambda: 0.0) == 4  # half of 8: never less
    assert backoff_s(1, 0.5, rand=lambda: 1.0) == 0.5


@pytest.mark.parametrize(
    ("url", "secret", "why"),
    [
        ("file:///etc/passwd", SECRET, "http"),
        ("ftp://his.example.org/x", SECRET, "http"),
        ("gopher://his.example.org/x", SECRET, "http"),
        ("https:///no-host", SECRET, "http"),
        ("https://user:pw@his.example.org/x", SECRET, "credentials"),
        ("https://his.example.org/x", "short", "32"),
        ("https://his.example.org/x", "a" * 40, "different characters"),
    ],
)
def test_only_http_endpoints_with_a_strong_secret(url: str, secret: str, why: str) -> None:
    with pytest.raises(WebhookConfigError, match=why) as exc:
        WebhookEndpoint.parse(url, secret)
    assert secret not in str(exc.value) or secret == SECRET


def test_an_endpoint_never_shows_its_secret_and_is_keyed_without_its_url() -> None:
    endpoint = WebhookEndpoint.parse("https://his.example.org/x?token=abc", SECRET)
    assert SECRET not in repr(endpoint)
    assert "abc" not in endpoint.key and endpoint.key.startswith("wh_")
    with pytest.raises(WebhookConfigError, match="twice"):
        WebhookSettings(endpoints=(endpoint, endpoint))
