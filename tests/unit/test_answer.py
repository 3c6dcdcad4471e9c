"""An answer's m-lines are checked against our offer before aiortc applies any of it."""

from __future__ import annotations

import re

import pytest

from media.answer import AnswerError, check_answer

TRANSPORT = [
    "a=ice-ufrag:abcd",
    "a=ice-pwd:0123456789abcdefghijkl",
    "a=fingerprint:sha-256 AA:BB",
    "a=setup:active",
    "a=rtcp-mux",
]


def _sdp(*sections: tuple[str, str, str], port: int = 9) -> str:
    """(kind, mid, direction) per m-line, each with one codec."""
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    lines.append("a=group:BUNDLE " + " ".join(mid for _, mid, _ in sections))
    for kind, mid, direction in sections:
        pt = 96 if kind == "audio" else 97
        codec = "opus/48000/2" if kind == "audio" else "VP8/90000"
        lines += [f"m={kind} {port} UDP/TLS/RTP/SAVPF {pt}", "c=IN IP4 0.0.0.0"]
        lines += [f"a={direction}", f"a=mid:{mid}", *TRANSPORT, f"a=rtpmap:{pt} {codec}"]
    return "\r\n".join(lines) + "\r\n"


OFFER = _sdp(("audio", "0", "recvonly"), ("video", "1", "sendonly"), ("video", "2", "inactive"))


def test_a_fitting_answer_passes_unchanged() -> None:
    answer = _sdp(
        ("audio", "0", "sendonly"), ("video", "1", "recvonly"), ("video", "2", "inactive")
    )
    assert check_answer(OFFER, answer) == (answer, ())
    check_answer(
        OFFER,
        _sdp(("audio", "0", "sendonly"), ("video", "1", "recvonly"), ("video", "2", "inactive")),
    )
    check_answer(
        OFFER,
        _sdp(("audio", "0", "inactive"), ("video", "1", "inactive"), ("video", "2", "inactive")),
    )


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        # sendrecv on a Consumer slot: the participant would send where nobody listens.
        (
            _sdp(
                ("audio", "0", "sendonly"), ("video", "1", "sendrecv"), ("video", "2", "inactive")
            ),
            "answers sendrecv to our sendonly",
        ),
        (
            _sdp(
                ("audio", "0", "sendrecv"), ("video", "1", "recvonly"), ("video", "2", "inactive")
            ),
            "answers sendrecv to our recvonly",
        ),
        (
            _sdp(
                ("audio", "0", "recvonly"), ("video", "1", "recvonly"), ("video", "2", "inactive")
            ),
            "answers recvonly to our recvonly",
        ),
        (
            _sdp(
                ("audio", "0", "sendonly"), ("video", "1", "recvonly"), ("video", "2", "sendonly")
            ),
            "answers sendonly to our inactive",
        ),
        (_sdp(("audio", "0", "sendonly"), ("video", "1", "recvonly")), "has 2 m-lines"),
        (
            _sdp(
                ("audio", "0", "sendonly"), ("audio", "1", "recvonly"), ("video", "2", "inactive")
            ),
            "m-line 1 is not video",
        ),
        (
            _sdp(
                ("audio", "0", "sendonly"), ("video", "2", "recvonly"), ("video", "1", "inactive")
            ),
            "m-line 1 has mid '2'",
        ),
        (
            _sdp(
                ("audio", "0", "sendonly"),
                ("video", "\x1b[31m", "recvonly"),
                ("video", "2", "inactive"),
            ),
            "malformed mid",
        ),
        ("v=0\r\nm=nonsense\r\n", "has 1 m-lines"),
    ],
)
def test_an_answer_that_does_not_fit_is_refused(answer: str, reason: str) -> None:
    with pytest.raises(AnswerError, match=reason) as caught:
        check_answer(OFFER, answer)
    assert "\x1b" not in str(caught.value)


def test_a_missing_direction_is_refused() -> None:
    answer = _sdp(
        ("audio", "0", "sendonly"), ("video", "1", "recvonly"), ("video", "2", "inactive")
    )
    with pytest.raises(AnswerError, match=r"m-line 1 .* states no direction"):
        check_answer(OFFER, answer.replace("a=recvonly\r\n", ""))


@pytest.mark.parametrize("extra", ["a=sendrecv", "a=sendrecv:x", "a=sendonly"])
def test_the_direction_checked_is_the_one_aiortc_applies(extra: str) -> None:
    """aiortc keeps the last direction attribute of an m-line (and reads "a=sendrecv:x" as
    one): a second one must not slip past the check."""
    answer = _sdp(
        ("audio", "0", "sendonly"), ("video", "1", "recvonly"), ("video", "2", "inactive")
    )
    answer = answer.replace("a=recvonly\r\n", f"a=recvonly\r\n{extra}\r\n")
    with pytest.raises(AnswerError, match=r"m-line 1 .* to our sendonly"):
        check_answer(OFFER, answer)


def _reject(sdp: str, mid: str, *, keep_mid: bool = True) -> str:
    """Reject one m-line the way Firefox does: port 0, no transport, a codec of its own."""
    head, *sections = sdp.split("m=")
    out = [head]
    for section in sections:
        if f"a=mid:{mid}\r\n" in section:
            kind = section.split(" ", 1)[0]
            section = f"{kind} 0 UDP/TLS/RTP/SAVPF 120\r\nc=IN IP4 0.0.0.0\r\na=inactive\r\n"
            section += f"a=mid:{mid}\r\n" if keep_mid else ""
            section += "a=rtpmap:120 VP8/90000\r\n"
        out.append(section)
    # ... and leaves the bundle group.
    return re.sub(rf"(a=group:BUNDLE[^\r]*) {mid}\b", r"\1", "m=".join(out))


@pytest.mark.parametrize("keep_mid", [True, False])
def test_a_rejected_m_line_becomes_an_inactive_one_on_the_bundle(keep_mid: bool) -> None:
    h264 = "a=rtpmap:97 H264/90000\r\na=fmtp:97 profile-level-id=42e01f\r\n"
    offer = OFFER.replace("a=rtpmap:97 VP8/90000\r\n", h264)
    accepted = _sdp(
        ("audio", "0", "sendonly"), ("video", "1", "recvonly"), ("video", "2", "inactive")
    )
    answer = _reject(_reject(accepted, "1", keep_mid=keep_mid), "2", keep_mid=keep_mid)
    sdp, rejected = check_answer(offer, answer)
    assert rejected == ("1", "2")
    assert "a=group:BUNDLE 0\r\n" in answer
    assert "a=group:BUNDLE 0 1 2\r\n" in sdp
    video = sdp.split("m=video")[1]
    assert video.startswith(" 9 UDP/TLS/RTP/SAVPF 97\r\n")
    for line in (*TRANSPORT[:4], "a=mid:1", "a=inactive", "a=rtcp-mux", "a=rtpmap:97 H264/90000"):
        assert f"{line}\r\n" in video, line
    assert "a=fmtp:97 profile-level-id=42e01f" in video and "VP8" not in video


def test_an_answer_rejecting_everything_is_refused() -> None:
    answer = _sdp(
        ("audio", "0", "sendonly"), ("video", "1", "recvonly"), ("video", "2", "inactive")
    )
    for mid in ("0", "1", "2"):
        answer = _reject(answer, mid)
    with pytest.raises(AnswerError, match="every m-line"):
        check_answer(OFFER, answer)
