"""VP8 temporal layers, read off the RTP payload descriptor without decoding anything.

A publisher encoding with temporal layers (``scalabilityMode: 'L1T3'``) tags every frame
with its layer in the payload descriptor (RFC 7741 4.2): TID 0 frames (7.5 fps of 30)
reference only TID 0 frames, TID 1 frames (another 7.5 fps) reference TID 0 and 1, TID 2
frames (the other 15 fps) are referenced by nothing below them. A forwarder can drop the
upper layers for one subscriber and the rest still decodes. Going back up is safe only at
a *layer sync* frame (the Y bit): one that references nothing but the base layer, so no
earlier frame of the layer being added is missing from its references.

Continuity on the subscriber's leg needs no rewriting here: aiortc packetizes every frame
a Consumer sends afresh, numbering sequence numbers and picture ids consecutively over
what it actually sent (and writing no TL0PICIDX), so a dropped layer leaves no gap the
subscriber's decoder could mistake for loss. Timestamps follow the publisher's clock, so a
dropped frame is a longer interval between two frames, as with a lower frame rate.
"""

from __future__ import annotations

from dataclasses import dataclass

# The highest TID a VP8 stream can carry (2 bits).
MAX_TID = 3


@dataclass(frozen=True, slots=True)
class Vp8Descriptor:
    """The fields of a VP8 payload descriptor a forwarder needs (RFC 7741 4.2)."""

    start: bool  # S: the first packet of a partition
    partition_id: int  # PID
    picture_id: int | None  # 7 or 15 bits
    tl0picidx: int | None  # TL0PICIDX: the base layer's running index
    tid: int | None  # temporal layer; None when the publisher sends no layers
    sync: bool  # Y: a layer sync frame (depends on the base layer only)
    size: int  # the descriptor's length in bytes


class DescriptorError(ValueError):
    """Not a VP8 payload descriptor (truncated)."""


def parse_descriptor(payload: bytes) -> Vp8Descriptor:
    """Parse the payload descriptor at the head of one VP8 RTP payload."""
    if not payload:
        raise DescriptorError("empty VP8 payload")
    first = payload[0]
    extended = bool(first & 0x80)
    start = bool(first & 0x10)
    partition_id = first & 0x07
    pos = 1
    picture_id = tl0picidx = tid = None
    sync = False
    if extended:
        if len(payload) < 2:
            raise DescriptorError("truncated VP8 descriptor")
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id
            if len(payload) < pos + 1:
                raise DescriptorError("truncated picture id")
            if payload[pos] & 0x80:  # M: 15 bits
                if len(payload) < pos + 2:
                    raise DescriptorError("truncated picture id")
                picture_id = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
                pos += 2
            else:
                picture_id = payload[pos] & 0x7F
                pos += 1
        if ext & 0x40:  # L: TL0PICIDX
            if len(payload) < pos + 1:
                raise DescriptorError("truncated TL0PICIDX")
            tl0picidx = payload[pos]
            pos += 1
        if ext & 0x30:  # T or K: one byte holding TID, Y and KEYIDX
            if len(payload) < pos + 1:
                raise DescriptorError("truncated TID/KEYIDX")
            if ext & 0x20:
                tid = payload[pos] >> 6
                sync = bool(payload[pos] & 0x20)
            pos += 1
    return Vp8Descriptor(start, partition_id, picture_id, tl0picidx, tid, sync, pos)


def write_descriptor(
    *,
    start: bool,
    picture_id: int | None = None,
    tl0picidx: int | None = None,
    tid: int | None = None,
    sync: bool = False,
    partition_id: int = 0,
) -> bytes:
    """A payload descriptor with these fields (15-bit picture id), e.g. for a publisher in
    tests that sends temporal layers the way a browser does."""
    first = (0x10 if start else 0) | (partition_id & 0x07)
    ext = 0
    body = b""
    if picture_id is not None:
        ext |= 0x80
        body += bytes([0x80 | ((picture_id >> 8) & 0x7F), picture_id & 0xFF])
    if tl0picidx is not None:
        ext |= 0x40
        body += bytes([tl0picidx & 0xFF])
    if tid is not None:
        ext |= 0x20
        body += bytes([((tid & 0x03) << 6) | (0x20 if sync else 0)])
    if not ext:
        return bytes([first])
    return bytes([first | 0x80, ext]) + body


@dataclass(frozen=True, slots=True)
class FrameLayer:
    """Where one frame sits in the publisher's temporal layering."""

    tid: int
    sync: bool


# A frame of a publisher that sends no temporal layers: everything is the base layer.
BASE = FrameLayer(0, False)


class TemporalFilter:
    """Which of a Producer's frames one Consumer forwards, by temporal layer.

    ``target`` is the highest layer wanted (set from the Consumer's rate estimate);
    ``current`` the highest layer being forwarded. Going down takes effect at once (the
    dropped frames are referenced by nothing that is still sent); going up waits for a
    keyframe or a sync frame of the layer being added, or the subscriber's decoder would
    meet a frame whose references it never got.
    """

    def __init__(self, target: int = MAX_TID) -> None:
        self.target = target
        self.current = target
        self.dropped = 0

    def set_target(self, tid: int) -> None:
        self.target = max(0, min(MAX_TID, tid))
        if self.target < self.current:
            self.current = self.target

    def forward(self, layer: FrameLayer, keyframe: bool) -> bool:
        """Whether to forward this frame (and move up a layer if it allows)."""
        if keyframe:
            # A keyframe references nothing: every layer up to the target can start here.
            self.current = self.target
        elif layer.tid > self.current and layer.tid <= self.target and layer.sync:
            if layer.tid == self.current + 1:
                self.current = layer.tid
        if layer.tid <= self.current:
            return True
        self.dropped += 1
        return False


def frame_layer(payload: bytes) -> FrameLayer | None:
    """The temporal layer of the frame whose first RTP payload this is; None when the
    publisher sends none (or the descriptor is malformed: then it is forwarded as base)."""
    try:
        descriptor = parse_descriptor(payload)
    except DescriptorError:
        return None
    if descriptor.tid is None:
        return None
    return FrameLayer(descriptor.tid, descriptor.sync)
