"""A participant's SDP answer, checked against our offer before aiortc applies any of it.

aiortc applies whatever direction an answer states: an observer answering ``sendrecv`` on
a sendonly Consumer slot makes it start a receiver and a decoder for media nobody asked
for. So every m-line's direction must be one RFC 3264 (6.1) allows in answer to ours, and
the m-lines must be ours, in our order. The check reads the answer with aiortc's own
parser, and the text it checked is the text aiortc gets: two parsers that disagree on a
repeated or odd attribute would be a way around it.

A rejected m-line (port 0: e.g. Firefox without H.264 refusing a video m-line) carries no
ICE or DTLS attributes and a codec we did not offer, and aiortc refuses the whole answer
for it. We rewrite it into the ``inactive`` m-line aiortc understands (the bundle's ICE and
DTLS attributes, the one codec we offered there) and report its mid, so the rest of the
call goes on.
"""

from __future__ import annotations

import re

from aiortc.sdp import SessionDescription, grouplines, parse_attr

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

# What an answer may say to each direction we offer (RFC 3264 6.1).
_ALLOWED: dict[str, frozenset[str]] = {
    "sendonly": frozenset({"recvonly", "inactive"}),
    "recvonly": frozenset({"sendonly", "inactive"}),
    "inactive": frozenset({"inactive"}),
    "sendrecv": frozenset(DIRECTIONS),
}

# aiortc's own reading of an m= line.
_M_LINE = re.compile("^m=([^ ]+) ([0-9]+) ([A-Z/]+) (.+)$")
# Attributes a rejected m-line borrows from an accepted one to join the bundle's transport.
# Candidates too: aiortc takes a bundled transport's remote candidates from its last m-line.
_TRANSPORT_ATTRIBUTES = (
    "a=ice-ufrag:",
    "a=ice-pwd:",
    "a=ice-options:",
    "a=fingerprint:",
    "a=setup:",
    "a=candidate:",
    "a=end-of-candidates",
)
_MID_TEXT = re.compile(r"^[A-Za-z0-9_.~-]{1,32}$")


class AnswerError(ValueError):
    """The answer does not fit our offer; the message is safe to log and to send back."""


def direction_allowed(offered: str | None, answered: str | None) -> bool:
    return answered in _ALLOWED.get(offered or "", frozenset())


def _describe(mid: str | None) -> str:
    """A client-chosen mid, quoted only when it is plain text (it ends up in logs)."""
    if mid is None:
        return "no mid"
    return f"mid {mid!r}" if _MID_TEXT.match(mid) else "a malformed mid"


def _attributes(lines: list[str], name: str) -> list[str | None]:
    """Every value of attribute ``name`` in ``lines``, as aiortc reads them."""
    return [parse_attr(x)[1] for x in lines if x.startswith("a=") and parse_attr(x)[0] == name]


def check_answer(offer: str, answer: str) -> tuple[str, tuple[str, ...]]:
    """The answer to hand aiortc, and the mids of the m-lines the participant rejected.

    Raises AnswerError unless the answer fits the offer: m-lines missing, added, reordered
    or of another kind, a direction we did not offer, or none; aiortc's parser may raise
    too. Either way nothing has been applied.
    """
    offer_session, offer_sections = grouplines(offer)
    ours = SessionDescription.parse(offer).media
    session, sections = grouplines(answer)
    if len(sections) != len(ours):
        raise AnswerError(f"the answer has {len(sections)} m-lines, the offer {len(ours)}")
    rejected: list[int] = []
    for index, lines in enumerate(sections):
        m_line = _M_LINE.match(lines[0])
        if m_line is None:
            raise AnswerError(f"m-line {index} is malformed")
        if m_line.group(1) != ours[index].kind:
            raise AnswerError(f"m-line {index} is not {ours[index].kind}")
        if int(m_line.group(2)) == 0:
            # A rejected m-line may leave its mid out; it still answers ours.
            if any(mid != ours[index].rtp.muxId for mid in _attributes(lines, "mid")):
                raise AnswerError(f"rejected m-line {index} has another mid")
            rejected.append(index)
    if rejected:
        donor = next((s for i, s in enumerate(sections) if i not in rejected), None)
        if donor is None:
            raise AnswerError("every m-line of the answer is rejected")
        for index in rejected:
            sections[index] = _as_inactive(offer_sections[index], ours[index].rtp.muxId, donor)
        # A rejected mid leaves the answer's group, and aiortc takes the group's first mid
        # as the owner of the bundle's transport: give it the offer's group back.
        bundle = [x for x in offer_session if x.startswith("a=group:BUNDLE")]
        session = [x for x in session if not x.startswith("a=group:BUNDLE")] + bundle
        answer = "\r\n".join(session + [line for s in sections for line in s]) + "\r\n"

    for index, (offered, answered) in enumerate(
        zip(ours, SessionDescription.parse(answer).media, strict=True)
    ):
        mid = offered.rtp.muxId
        if answered.rtp.muxId != mid:
            raise AnswerError(
                f"m-line {index} has {_describe(answered.rtp.muxId)}, the offer's is {mid}"
            )
        if answered.direction is None:
            raise AnswerError(f"m-line {mid} ({offered.kind}) states no direction")
        if not direction_allowed(offered.direction, answered.direction):
            raise AnswerError(
                f"m-line {mid} ({offered.kind}) answers {answered.direction} "
                f"to our {offered.direction}"
            )
    return answer, tuple(str(ours[i].rtp.muxId) for i in rejected)


def _as_inactive(offered: list[str], mid: str | None, donor: list[str]) -> list[str]:
    """The inactive m-line aiortc accepts in place of a rejected one."""
    kind, _, proto, fmt = offered[0][2:].split(" ")[:4]
    lines = [f"m={kind} 9 {proto} {fmt}", "c=IN IP4 0.0.0.0"]
    lines += [x for x in donor if x.startswith(_TRANSPORT_ATTRIBUTES)]
    lines += [f"a=mid:{mid}", "a=inactive", "a=rtcp-mux"]
    codec = (f"a=rtpmap:{fmt} ", f"a=fmtp:{fmt} ", f"a=rtcp-fb:{fmt} ")
    return lines + [x for x in offered if x.startswith(codec)]
