"""Hypothesis strategies for the signaling protocol: what a hostile client can put on /ws.

Two families, drawn together:

* every client message type of signaling/protocol.py, shaped right but with hostile values:
  huge and odd strings (control characters, bidi overrides, astral characters, lone
  surrogates, lengths either side of each field's limit), NaN and infinities, negative and
  huge numbers, values of the wrong type, missing and extra fields, SDP-shaped garbage and
  ICE candidates with odd tokens;
* malformed frames: not JSON, JSON that is not an object, deep nesting, binary frames,
  frames over the protocol's 64 KiB and over the server's 128 KiB frame limit.

Some values can only be known when the frame is sent (a valid join token, the offer just
received, another participant's id): the strategies leave a ``Ref`` there and the sender
fills it in (``render``). Everything else is plain JSON-able data, so a failing example
prints as what was sent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from hypothesis import strategies as st

from signaling import protocol as p

# The protocol states the fuzzer drives a socket into before sending.
State = Literal["before_join", "joined", "mid_negotiation", "recording_pending", "recording"]
STATES: tuple[State, ...] = (
    "before_join",
    "joined",
    "mid_negotiation",
    "recording_pending",
    "recording",
)

# aiohttp's frame limit in the server (signaling/app.py): larger frames close with 1009.
MAX_FRAME_BYTES = 128 * 1024


# ------------------------------------------------------------------ what is sent


@dataclass(frozen=True)
class Ref:
    """A value filled in when the frame is sent: see ``Context``."""

    name: str
    # For an SDP made from the last offer: the edits applied to it, in order.
    edits: tuple[tuple[str, int, str], ...] = ()


@dataclass(frozen=True)
class Frame:
    """One WebSocket frame. ``label`` says what it claims to be, for the report: a client
    type ("ping") or a malformed kind ("not-json", "binary", ...)."""

    label: str
    # json: a value to encode; text: a str (or parts with Refs); binary: bytes in a binary
    # frame; bad-utf8: bytes in a text frame that are not UTF-8.
    kind: Literal["json", "text", "binary", "bad-utf8"]
    body: Any
    # json only: how it is encoded (both spellings are legal JSON for the same value).
    ascii_only: bool = True

    @property
    def is_message(self) -> bool:
        return self.kind == "json" and self.label in p.CLIENT_TYPES


@dataclass
class Context:
    """What the sender knows when it sends: tokens it can mint, the last offer, ids."""

    token: Callable[[str], str]
    last_offer: str | None = None
    self_id: str | None = None
    # Ids of participants this socket may name in ``remove`` (never the protected call's).
    others: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Wire:
    """A frame as it goes out: its payload and whether it is a text frame."""

    text: bool
    data: bytes


def render(frame: Frame, ctx: Context) -> Wire:
    if frame.kind == "binary":
        return Wire(False, bytes(frame.body))
    if frame.kind == "bad-utf8":
        return Wire(True, bytes(frame.body))
    if frame.kind == "text":
        return Wire(True, _resolve_text(frame.body, ctx).encode("utf-8", "surrogatepass"))
    value = _resolve(frame.body, ctx)
    try:
        out = json.dumps(value, ensure_ascii=frame.ascii_only, allow_nan=True).encode()
    except UnicodeEncodeError:
        # A lone surrogate has no UTF-8: the escaped spelling is the only one that travels.
        out = json.dumps(value, ensure_ascii=True, allow_nan=True).encode()
    return Wire(True, out)


def _resolve_text(body: Any, ctx: Context) -> str:
    if isinstance(body, str):
        return body
    return "".join(_resolve(x, ctx) if isinstance(x, Ref) else str(x) for x in body)


def _resolve(value: Any, ctx: Context) -> Any:
    if isinstance(value, Ref):
        return _fill(value, ctx)
    if isinstance(value, dict):
        return {k: _resolve(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, ctx) for v in value]
    return value


def _fill(ref: Ref, ctx: Context) -> Any:
    if ref.name.startswith("token:"):
        return ctx.token(ref.name.removeprefix("token:"))
    if ref.name == "sdp":
        return edit_sdp(ctx.last_offer or CANNED_OFFER, ref.edits)
    if ref.name == "participant:self":
        return ctx.self_id or "P000000000000"
    if ref.name == "participant:other":
        return ctx.others[0] if ctx.others else "P000000000001"
    raise ValueError(f"unknown reference {ref.name}")


# Kinds of token the sender can mint (Context.token): see tests/fuzz/lanes.py.
TOKEN_KINDS = ("valid", "expired", "not_yet", "foreign", "tampered", "truncated", "full", "ended")


# ------------------------------------------------------------------ SDP

# An offer shaped like the Worker's, for when no real one has been seen yet.
CANNED_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 3912345678 3912345678 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic:WMS *",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 127.0.0.1",
        "a=sendonly",
        "a=mid:0",
        "a=rtcp-mux",
        "a=ssrc:1001 cname:fuzz",
        "a=rtpmap:111 opus/48000/2",
        "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host",
        "a=end-of-candidates",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuv",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        "a=setup:actpass",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 127.0.0.1",
        "a=sendonly",
        "a=mid:1",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack pli",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuv",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        "a=setup:actpass",
        "",
    ]
)

_DIRECTION_SWAP = {"sendonly": "recvonly", "recvonly": "sendonly"}


def edit_sdp(offer: str, edits: Iterable[tuple[str, int, str]]) -> str:
    """The offer turned into an answer (directions mirrored, ``setup:active``), then edited.

    Starting from the real offer gets past the first checks (m-line count, kinds, mids), so
    the edits reach aiortc's parser and the answer check's later rules.
    """
    lines = offer.split("\r\n")
    lines = [
        "a=" + _DIRECTION_SWAP[x[2:]] if x[2:] in _DIRECTION_SWAP else x
        for x in lines
        if not x.startswith("a=candidate:")
    ]
    lines = ["a=setup:active" if x.startswith("a=setup:") else x for x in lines]
    for op, index, payload in edits:
        if not lines:
            lines = [payload]
            continue
        i = index % len(lines)
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "replace":
            lines[i] = payload
        elif op == "insert":
            lines.insert(i, payload)
        elif op == "append":
            lines[i] = lines[i] + payload
        elif op == "truncate":
            lines = lines[: i + 1]
            lines[-1] = lines[-1][: len(payload)]
        elif op == "swap":
            j = (index // 7 + 1) % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "port0":
            lines[i] = _zero_port(lines[i])
    return "\r\n".join(lines)


def _zero_port(line: str) -> str:
    if not line.startswith("m="):
        return line
    parts = line.split(" ")
    if len(parts) > 1:
        parts[1] = "0"
    return " ".join(parts)


# ------------------------------------------------------------------ hostile values

_CONTROL = st.characters(min_codepoint=0, max_codepoint=0x1F)
_ODD_CHARS = st.sampled_from(
    ["\u0000", "\u202e", "\u200b", "\ufeff", "\ud800", "\udfff", "\uffff", "😀", "\n", "\r", '"',
     "\\", "%", "'", "<", "&", "é", "\u0301", "日"]
)  # fmt: skip


def _long(char: str, n: int) -> str:
    return char * n


def weighted(*options: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each ``weight`` times as likely (one_of treats repeats as one)."""
    picks = [i for i, (weight, _) in enumerate(options) for _ in range(weight)]
    return st.sampled_from(picks).flatmap(lambda i: options[i][1])


def around(limit: int) -> st.SearchStrategy[int]:
    """Lengths either side of a limit, where off-by-one bugs live."""
    return st.sampled_from([0, 1, limit - 1, limit, limit + 1, 2 * limit])


def hostile_text(limit: int = 64) -> st.SearchStrategy[str]:
    """Strings that hurt: odd characters, control characters, lengths around ``limit``
    (those 1 in 6, so that most frames stay small and the byte budget lasts)."""
    short = st.one_of(
        st.text(max_size=24),
        st.text(_CONTROL, max_size=8),
        st.lists(_ODD_CHARS, max_size=8).map("".join),
        st.sampled_from(["", " ", "null", "undefined", "NaN", "0", "-1", "__proto__", "{}"]),
    )
    long = st.builds(_long, st.sampled_from(["A", "é", "😀", "\u0000", " "]), around(limit))
    return weighted((5, short), (1, long))


def hostile_number() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([0, -1, 255, 256, 2**31, 2**63, 10**400, -(10**400), math.nan, math.inf]),
    )


# Any JSON value, nested a little: what a wrong-type field holds.
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | hostile_number() | hostile_text(16),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def either(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value the field accepts, sometimes one it must refuse, sometimes any JSON."""
    return weighted((6, good), (2, bad), (1, json_values))


_MISSING = object()


@st.composite
def message(draw: st.DrawFn, type_: str, fields: dict[str, st.SearchStrategy[Any]]) -> Frame:
    """A ``type_`` message: each field drawn (or left out), maybe extra fields, maybe a
    ``type`` that lies about it."""
    body: dict[str, Any] = {"type": type_}
    for name, strategy in fields.items():
        if draw(st.integers(0, 9)) == 0:
            continue  # left out
        body[name] = draw(strategy)
    if draw(st.integers(0, 7)) == 0:
        extra = draw(st.dictionaries(hostile_text(8), json_values, min_size=1, max_size=3))
        body.update({k: v for k, v in extra.items() if k != "type"})
    if draw(st.integers(0, 15)) == 0:
        body["type"] = draw(st.one_of(hostile_text(16), json_values, st.just(type_.upper())))
    return Frame(type_, "json", body, ascii_only=draw(st.booleans()))


# ------------------------------------------------------------------ per message type

_KINDS = st.sampled_from(["audio", "video"])
_CODECS = st.sampled_from(["VP8", "H264", "vp8", "h264", "AV1", "VP9", "opus", "rtx"])


def _token() -> st.SearchStrategy[Any]:
    forged = st.builds(
        lambda a, b, c: f"{a}.{b}.{c}",
        st.text("ABCDEFabcdef0123456789-_", max_size=40),
        st.text("ABCDEFabcdef0123456789-_=+/", max_size=80),
        st.text("ABCDEFabcdef0123456789-_", max_size=43),
    )
    return st.one_of(
        st.sampled_from([Ref("token:" + k) for k in TOKEN_KINDS]),
        st.sampled_from([Ref("token:valid"), Ref("token:expired"), Ref("token:tampered")]),
        forged,
        hostile_text(4096),
    )


def join() -> st.SearchStrategy[Frame]:
    return message(
        "join",
        {
            "token": either(_token(), json_values),
            "v": either(st.just(1), hostile_number()),
            "publish": either(st.lists(_KINDS, max_size=3), st.lists(hostile_text(8), max_size=4)),
            "videoCodecs": either(
                st.none() | st.lists(_CODECS, max_size=4),
                st.lists(hostile_text(32), max_size=40),
            ),
            "resume": either(st.none() | st.text(min_size=1, max_size=64), hostile_text(80)),
        },
    )


_EDIT_OPS = st.sampled_from(
    ["drop", "dup", "replace", "insert", "append", "truncate", "swap", "port0"]
)
_SDP_LINES = st.one_of(
    hostile_text(64),
    st.sampled_from(
        [
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "m=audio 0 UDP/TLS/RTP/SAVPF 111",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "a=sendrecv",
            "a=recvonly",
            "a=inactive",
            "a=mid:",
            "a=mid:" + "9" * 40,
            "a=mid:../../etc",
            "a=group:BUNDLE",
            "a=group:BUNDLE 7 7 7",
            "a=rtpmap:96 H264/90000",
            "a=rtpmap:-1 VP8/0",
            "a=fmtp:96 " + "x=1;" * 200,
            "a=ssrc:4294967296 cname:x",
            "a=ssrc-group:FID 1 2 3",
            "a=extmap:99999 urn:x",
            "a=fingerprint:sha-256 zz",
            "a=fingerprint:md5 00",
            "a=setup:passive",
            "a=setup:holdconn",
            "a=ice-ufrag:",
            "a=ice-pwd:" + "p" * 300,
            "a=rtcp:0 IN IP6 ::",
            "a=candidate:1 1 udp 1 999.0.0.1 1 typ host",
            "a=end-of-candidates",
            "c=IN IP4 256.256.256.256",
            "b=AS:-5",
            "o=- -1 -1 IN IP4 ::",
            "v=1",
        ]
    ),
)


def sdp() -> st.SearchStrategy[Any]:
    edits = st.lists(st.tuples(_EDIT_OPS, st.integers(0, 400), _SDP_LINES), max_size=4).map(
        lambda xs: tuple(xs)
    )
    garbage = st.lists(_SDP_LINES, max_size=30).map("\r\n".join)
    huge = st.builds(lambda n: "a=x:" + "y" * n, around(p.MAX_SDP_CHARS))
    from_offer = st.builds(lambda e: Ref("sdp", e), edits)
    return weighted((6, from_offer), (3, garbage), (1, huge))


def answer() -> st.SearchStrategy[Frame]:
    return message("answer", {"sdp": either(sdp(), hostile_text(p.MAX_SDP_CHARS))})


_IPS = st.one_of(
    st.sampled_from(
        ["127.0.0.1", "::1", "0.0.0.0", "255.255.255.255", "224.0.0.251", "fe80::1%lo",
         "::ffff:127.0.0.1", "10.0.0.1", "1.2.3", "localhost", "x.local", "😀.local", "", "-"]
    ),
    st.ip_addresses().map(str),
    hostile_text(32),
)  # fmt: skip
_PORTS = st.one_of(st.integers(-1, 70000), st.sampled_from(["9", "x", "", "65536", "1e3"]))
_TOKENS = st.one_of(
    st.sampled_from(["typ", "host", "srflx", "relay", "prflx", "raddr", "rport", "generation",
                     "ufrag", "network-id", "tcptype", "active", "passive", "so"]),
    hostile_text(16),
)  # fmt: skip


@st.composite
def _candidate_line(draw: st.DrawFn) -> str:
    parts = [
        draw(st.one_of(st.text("0123456789abcdef", min_size=1, max_size=8), hostile_text(8))),
        str(draw(st.one_of(st.integers(-1, 300), hostile_text(4)))),
        draw(st.sampled_from(["udp", "UDP", "tcp", "TCP", "sctp", "", "udp\x00"])),
        str(draw(st.one_of(st.integers(-1, 2**33), hostile_text(6)))),
        draw(_IPS),
        str(draw(_PORTS)),
    ]
    parts += draw(
        st.one_of(
            st.just(["typ", "host"]),
            st.builds(lambda t: ["typ", t], st.sampled_from(["srflx", "relay", "prflx", "x", ""])),
            st.builds(
                lambda t, ip, port: ["typ", t, "raddr", ip, "rport", str(port)],
                st.sampled_from(["srflx", "relay"]),
                _IPS,
                _PORTS,
            ),
            st.lists(_TOKENS, max_size=12),
        )
    )
    parts += draw(st.lists(_TOKENS, max_size=4))
    line = " ".join(parts)
    prefix = draw(st.sampled_from(["candidate:", "", "a=candidate:", "candidate: "]))
    return prefix + line


def candidate() -> st.SearchStrategy[Frame]:
    return message(
        "candidate",
        {
            "candidate": either(
                st.one_of(_candidate_line(), st.none(), st.just("")),
                st.builds(lambda n: "candidate:" + "1 " * n, around(512)),
            ),
            "sdpMid": either(st.none() | st.sampled_from(["0", "1", "2", "3"]), hostile_text(64)),
            "sdpMLineIndex": either(st.none() | st.integers(0, 4), hostile_number()),
        },
    )


def mute() -> st.SearchStrategy[Frame]:
    return message(
        "mute",
        {"kind": either(_KINDS, hostile_text(8)), "muted": either(st.booleans(), json_values)},
    )


def ping() -> st.SearchStrategy[Frame]:
    return message("ping", {"ts": either(st.none() | st.floats(0, 1e12), hostile_number())})


def record() -> st.SearchStrategy[Frame]:
    actions = st.sampled_from(["start", "stop"])
    return message("record", {"action": either(actions, hostile_text(8))})


def consent() -> st.SearchStrategy[Frame]:
    return message("consent", {"granted": either(st.booleans(), json_values)})


def remove() -> st.SearchStrategy[Frame]:
    ids = st.one_of(
        st.sampled_from([Ref("participant:self"), Ref("participant:other")]),
        st.text("0123456789abcdef", min_size=12, max_size=12).map(lambda s: "P" + s),
    )
    return message("remove", {"participantId": either(ids, hostile_text(64))})


def _participant_ids() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from([Ref("participant:self"), Ref("participant:other")]),
        st.text("0123456789abcdef", min_size=12, max_size=12).map(lambda s: "P" + s),
    )


def admit() -> st.SearchStrategy[Frame]:
    return message("admit", {"participantId": either(_participant_ids(), hostile_text(64))})


def send_away() -> st.SearchStrategy[Frame]:
    return message(
        "send_away",
        {
            "participantId": either(_participant_ids(), hostile_text(64)),
            "message": either(st.none() | hostile_text(p.MAX_NOTE_CHARS), hostile_text(400)),
        },
    )


def chat() -> st.SearchStrategy[Frame]:
    return message(
        "chat",
        {"text": either(hostile_text(p.MAX_CHAT_CHARS), hostile_text(2 * p.MAX_CHAT_CHARS + 10))},
    )


def _image_ids() -> st.SearchStrategy[Any]:
    return st.text("0123456789abcdef", min_size=16, max_size=16).map(lambda s: "img_" + s)


def share() -> st.SearchStrategy[Frame]:
    presets = st.sampled_from(["lung", "bone", "soft_tissue", "file", "original", "auto"])
    return message(
        "share",
        {
            "imageId": either(_image_ids(), hostile_text(64)),
            "preset": either(st.none() | presets, hostile_text(32)),
        },
    )


def pointer() -> st.SearchStrategy[Frame]:
    unit = st.none() | st.floats(0.0, 1.0)
    return message(
        "pointer", {"x": either(unit, hostile_number()), "y": either(unit, hostile_number())}
    )


def video_policy() -> st.SearchStrategy[Frame]:
    modes = st.sampled_from(["all", "audio_only", "speaker"])
    return message("video_policy", {"mode": either(modes, hostile_text(16))})


def give_floor() -> st.SearchStrategy[Frame]:
    return message("give_floor", {"participantId": either(_participant_ids(), hostile_text(64))})


def take_floor() -> st.SearchStrategy[Frame]:
    return message("take_floor", {"participantId": either(_participant_ids(), hostile_text(64))})


def set_bedside() -> st.SearchStrategy[Frame]:
    return message(
        "set_bedside", {"participantId": either(st.none() | _participant_ids(), hostile_text(64))}
    )


def camera_caps() -> st.SearchStrategy[Frame]:
    flag = either(st.booleans(), json_values)
    return message("camera_caps", {"pan": flag, "tilt": flag, "zoom": flag})


def camera_control() -> st.SearchStrategy[Frame]:
    step = either(st.none() | st.integers(-5, 5), hostile_number())
    return message(
        "camera_control",
        {
            "participantId": either(_participant_ids(), hostile_text(64)),
            "pan": step,
            "tilt": step,
            "zoom": step,
        },
    )


def camera_result() -> st.SearchStrategy[Frame]:
    ids = st.text("0123456789abcdef", min_size=16, max_size=16).map(lambda s: "cam_" + s)
    reasons = st.none() | st.sampled_from(["refused", "unsupported", "failed"])
    return message(
        "camera_result",
        {
            "requestId": either(ids, hostile_text(64)),
            "applied": either(st.booleans(), json_values),
            "reason": either(reasons, hostile_text(16)),
        },
    )


def agenda_goto() -> st.SearchStrategy[Frame]:
    ids = st.text("0123456789abcdef", min_size=16, max_size=16).map(lambda s: "bed_" + s)
    return message("agenda_goto", {"bedId": either(ids, hostile_text(64))})


def _sources() -> st.SearchStrategy[Any]:
    return either(st.sampled_from(["screen", "camera2"]), hostile_text(16))


def publish_extra() -> st.SearchStrategy[Frame]:
    return message("publish_extra", {"source": _sources()})


def unpublish_extra() -> st.SearchStrategy[Frame]:
    return message("unpublish_extra", {"source": _sources()})


def bare(type_: str) -> st.SearchStrategy[Frame]:
    return message(type_, {})


MESSAGE_TYPES: dict[str, Callable[[], st.SearchStrategy[Frame]]] = {
    "join": join,
    "answer": answer,
    "candidate": candidate,
    "mute": mute,
    "leave": lambda: bare("leave"),
    "ping": ping,
    "record": record,
    "consent": consent,
    "remove": remove,
    "end": lambda: bare("end"),
    "media_restart": lambda: bare("media_restart"),
    "admit": admit,
    "admit_all": lambda: bare("admit_all"),
    "send_away": send_away,
    "chat": chat,
    "share": share,
    "unshare": lambda: bare("unshare"),
    "pointer": pointer,
    "video_policy": video_policy,
    "raise_hand": lambda: bare("raise_hand"),
    "lower_hand": lambda: bare("lower_hand"),
    "give_floor": give_floor,
    "take_floor": take_floor,
    "mute_all_but_me": lambda: bare("mute_all_but_me"),
    "set_bedside": set_bedside,
    "camera_caps": camera_caps,
    "camera_control": camera_control,
    "camera_result": camera_result,
    "agenda_next": lambda: bare("agenda_next"),
    "agenda_goto": agenda_goto,
    "publish_extra": publish_extra,
    "unpublish_extra": unpublish_extra,
}
assert set(MESSAGE_TYPES) == p.CLIENT_TYPES  # a new client type needs a strategy here


# ------------------------------------------------------------------ malformed frames


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def malformed() -> st.SearchStrategy[Frame]:
    small = st.text(max_size=64)
    fixed = st.sampled_from(
        [
            "",
            " ",
            "null",
            "true",
            "1",
            "-0",
            "1e999",
            "NaN",
            '"ping"',
            "[]",
            "{}",
            '{"type"}',
            '{"type":"ping",}',
            '{"type":"ping"',
            "{'type':'ping'}",
            '{"type":"ping","type":"leave"}',
            '{"type":"ping"} {"type":"ping"}',
            '{"type":"ping","ts":NaN}',
            '{"type":"ping","ts":-Infinity}',
            '{"type":"ping","ts":1' + "0" * 400 + "}",
            '{"type":"\\ud800"}',
            '{"type":"ping","ts":1}\x00',
            '\ufeff{"type":"ping"}',
        ]
    )
    nested = st.builds(_nested, st.sampled_from([10, 100, 1000, 10000]))
    # Either side of the protocol's limit and over the frame limit: rare, they cost bytes.
    padded = st.builds(
        lambda n: '{"type":"ping","pad":"' + "x" * n + '"}',
        st.sampled_from([p.MAX_MESSAGE_BYTES - 40, p.MAX_MESSAGE_BYTES + 1, MAX_FRAME_BYTES + 1]),
    )
    text = weighted((6, small), (6, fixed), (2, nested), (1, padded))
    not_object = json_values.map(lambda v: json.dumps(v, allow_nan=True))
    types = st.one_of(json_values, hostile_text(16), st.sampled_from(["joined", "offer", "bye"]))
    wrong_type = st.builds(lambda t: json.dumps({"type": t}, allow_nan=True), types)
    binary = st.one_of(st.binary(max_size=256), st.just(b'{"type":"ping"}'))
    broken = st.sampled_from(
        [b"\xff", b'{"type":"ping","ts":"\xc3\x28"}', b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]
    )
    return st.one_of(
        st.builds(lambda s: Frame("not-json", "text", s), text),
        st.builds(lambda s: Frame("not-object", "text", s), not_object),
        st.builds(lambda s: Frame("bad-type", "text", s), wrong_type),
        st.builds(lambda b: Frame("binary", "binary", b), binary),
        st.builds(lambda b: Frame("bad-utf8", "bad-utf8", b), broken),
    )


# ------------------------------------------------------------------ per state

# What each state is most about; every type is drawn in every state, these more often.
_FOCUS: dict[State, tuple[str, ...]] = {
    "before_join": ("join",),
    "joined": ("candidate", "mute", "ping", "remove"),
    "mid_negotiation": ("answer", "candidate"),
    "recording_pending": ("consent", "record"),
    "recording": ("consent", "record", "mute"),
}


def frames(state: State, exclude: Iterable[str] = ()) -> st.SearchStrategy[Frame]:
    """One frame to send in ``state``; ``exclude`` leaves message types out (e.g. ``end``
    from the host of the call being protected)."""
    skip = set(exclude)
    every = [(2, make()) for name, make in MESSAGE_TYPES.items() if name not in skip]
    focus = [(6, MESSAGE_TYPES[name]()) for name in _FOCUS[state] if name not in skip]
    return weighted(*every, *focus, (5, malformed()))


def batches(
    state: State, exclude: Iterable[str] = (), max_size: int = 8
) -> st.SearchStrategy[list[Frame]]:
    """A few frames sent back to back, then checked."""
    return st.lists(frames(state, exclude), min_size=1, max_size=max_size)
