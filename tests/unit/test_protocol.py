"""Every client message is validated by the protocol models; nothing hand-rolled."""

from __future__ import annotations

import json

import pytest

from signaling import protocol as p


def test_join_defaults_to_publishing_both_kinds() -> None:
    message = p.parse_client('{"type": "join", "token": "t"}')
    assert isinstance(message, p.Join)
    assert message.publish == ["audio", "video"] and message.v == 1
    assert message.videoCodecs is None  # an old client: the server assumes every codec


def test_join_names_codecs_the_server_may_not_know() -> None:
    message = p.parse_client('{"type": "join", "token": "t", "videoCodecs": ["VP9", "h264"]}')
    assert isinstance(message, p.Join) and message.videoCodecs == ["VP9", "h264"]


@pytest.mark.parametrize(
    ("raw", "code", "ref"),
    [
        ("not json", "malformed", None),
        ("[]", "malformed", None),
        ('"join"', "malformed", None),
        ("{}", "malformed", None),
        ('{"type": "teleport"}', "unknown_type", None),
        ('{"type": 7}', "unknown_type", None),
        ('{"type": "join"}', "malformed", "join"),
        ('{"type": "join", "token": ""}', "malformed", "join"),
        ('{"type": "join", "token": "t", "v": 2}', "malformed", "join"),
        ('{"type": "join", "token": "t", "publish": ["smell"]}', "malformed", "join"),
        ('{"type": "join", "token": "t", "admin": true}', "malformed", "join"),
        ('{"type": "join", "token": "t", "videoCodecs": "VP8"}', "malformed", "join"),
        ('{"type": "join", "token": "t", "videoCodecs": [""]}', "malformed", "join"),
        (
            json.dumps({"type": "join", "token": "t", "videoCodecs": ["VP8"] * 33}),
            "malformed",
            "join",
        ),
        ('{"type": "answer", "sdp": ""}', "malformed", "answer"),
        ('{"type": "candidate", "sdpMLineIndex": -1}', "malformed", "candidate"),
        ('{"type": "mute", "kind": "audio"}', "malformed", "mute"),
        ('{"type": "mute", "kind": "audio", "muted": "yes please"}', "malformed", "mute"),
        (
            '{"type": "mute", "kind": "video", "muted": true, "source": "camera"}',
            "malformed",
            "mute",
        ),
        ('{"type": "publish_extra"}', "malformed", "publish_extra"),
        ('{"type": "publish_extra", "source": "camera"}', "malformed", "publish_extra"),
        ('{"type": "publish_extra", "source": "screen", "x": 1}', "malformed", "publish_extra"),
        ('{"type": "unpublish_extra", "source": "webcam3"}', "malformed", "unpublish_extra"),
    ],
)
def test_bad_messages_get_precise_codes(raw: str, code: str, ref: str | None) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.parse_client(raw)
    assert info.value.code == code
    assert info.value.ref == ref
    error = info.value.to_message()
    assert json.loads(p.dump(error))["type"] == "error"


def test_size_limit_is_checked_before_parsing() -> None:
    raw = json.dumps({"type": "ping", "ts": 1.0, "pad": "x" * p.MAX_MESSAGE_BYTES})
    with pytest.raises(p.ProtocolError) as info:
        p.parse_client(raw)
    assert info.value.code == "too_large"


def test_sdp_is_bounded() -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_client(json.dumps({"type": "answer", "sdp": "v" * (p.MAX_SDP_CHARS + 1)}))


def test_end_of_candidates_is_a_null_candidate() -> None:
    message = p.parse_client('{"type": "candidate", "candidate": null}')
    assert isinstance(message, p.Candidate) and message.candidate is None


def test_server_messages_round_trip() -> None:
    offer = p.Offer(
        sdp="v=0",
        tracks=[
            p.TrackSlot(mid="0", kind="video", role="consume", participantId="P1", producerId="X")
        ],
    )
    assert p.parse_server(p.dump(offer)) == offer
    assert "null" not in p.dump(p.Error(code="malformed", message="m"))


def test_extra_video_messages_carry_their_source() -> None:
    message = p.parse_client('{"type": "publish_extra", "source": "screen"}')
    assert isinstance(message, p.PublishExtra) and message.source == "screen"
    mute = p.parse_client('{"type": "mute", "kind": "video", "muted": true, "source": "camera2"}')
    assert isinstance(mute, p.Mute) and mute.source == "camera2"
    published = p.parse_server(
        p.dump(
            p.TrackPublished(participantId="P1", producerId="P1-v3", kind="video", source="screen")
        )
    )
    assert isinstance(published, p.TrackPublished) and published.source == "screen"
    # A server message from before sources existed still reads as the camera.
    old = p.parse_server(
        '{"type": "track_published", "participantId": "P1", "producerId": "x", "kind": "video"}'
    )
    assert isinstance(old, p.TrackPublished) and old.source == "camera"
