"""VP8 temporal layers without decoding: the payload descriptor, and per-subscriber layer
dropping checked against a real libvpx decoder (PyAV, in the test only)."""

from __future__ import annotations

import fractions
from typing import Any

import av
import numpy as np
import pytest
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media.consumer import Consumer, OutboundSlot
from media.jitter import LayeredFrame
from media.producer import Producer
from media.vp8 import (
    BASE,
    DescriptorError,
    FrameLayer,
    TemporalFilter,
    frame_layer,
    parse_descriptor,
    write_descriptor,
)

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
# libwebrtc's (and libvpx's) three-layer pattern: 0-2-1-2.
PATTERN = (0, 2, 1, 2)


def _layered_clip(count: int = 40, layers: bool = True) -> list[bytes]:
    """VP8 frames encoded with three temporal layers (as Chromium's L1T3), small and quick."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = 160, 120, "yuv420p"
    codec.bit_rate = 300_000
    codec.time_base = fractions.Fraction(1, 30)
    codec.gop_size = 1000
    options = {"error-resilient": "default", "deadline": "realtime", "lag-in-frames": "0"}
    if layers:
        options["ts-parameters"] = (
            "ts_number_layers=3:ts_target_bitrate=100,200,300:ts_rate_decimator=4,2,1:"
            "ts_periodicity=4:ts_layer_id=0,2,1,2:ts_layering_mode=3"
        )
    codec.options = options
    out: list[bytes] = []
    for i in range(count):
        image = np.zeros((120, 160, 3), np.uint8)
        image[:, :, 0] = (np.arange(160) + i * 3) % 256
        image[(i * 2) % 120 :, :, 1] = 200
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in codec.encode(frame)]
    out += [bytes(p) for p in codec.encode(None)]
    assert len(out) == count
    return out


def _decode(frames: list[bytes]) -> list[bytes]:
    decoder = av.CodecContext.create("libvpx", "r")
    return [
        f.to_ndarray(format="yuv420p").tobytes()
        for data in frames
        for f in decoder.decode(av.Packet(data))
    ]


# ------------------------------------------------------------------ the descriptor


def test_descriptor_round_trip() -> None:
    raw = write_descriptor(start=True, picture_id=12345, tl0picidx=200, tid=2, sync=True)
    d = parse_descriptor(raw + b"\x00payload")
    assert (d.start, d.partition_id, d.picture_id, d.tl0picidx, d.tid, d.sync) == (
        True, 0, 12345, 200, 2, True,
    )  # fmt: skip
    assert d.size == len(raw)
    assert frame_layer(raw) == FrameLayer(2, True)


def test_descriptor_without_layers_is_base() -> None:
    # What aiortc's own packetizer writes: X, I, a 15-bit picture id, nothing else.
    payload = Vp8Encoder._packetize(b"\x00" * 50, picture_id=300)[0]
    d = parse_descriptor(payload)
    assert d.start and d.picture_id == 300 and d.tid is None and d.tl0picidx is None
    assert frame_layer(payload) is None
    assert parse_descriptor(b"\x10").size == 1  # no extension at all


def test_seven_bit_picture_id_and_keyidx_only() -> None:
    # X; I and K set; a 7-bit picture id; the T/K byte with K only: no TID.
    d = parse_descriptor(bytes([0x90, 0x90, 0x05, 0x1F]))
    assert d.picture_id == 5 and d.tid is None and d.size == 4


@pytest.mark.parametrize(
    "payload", [b"", b"\x80", bytes([0x80, 0x80]), bytes([0x80, 0x80, 0x80]), bytes([0x80, 0x20])]
)
def test_truncated_descriptors_are_refused(payload: bytes) -> None:
    with pytest.raises(DescriptorError):
        parse_descriptor(payload)
    if payload:
        assert frame_layer(payload) is None  # forwarded as the base layer


# ------------------------------------------------------------------ layer dropping


def test_dropped_layers_decode_exactly_as_in_the_full_stream() -> None:
    frames = _layered_clip()
    full = _decode(frames)
    for top in (0, 1):
        kept = [i for i in range(len(frames)) if PATTERN[i % 4] <= top]
        reduced = _decode([frames[i] for i in kept])
        assert reduced == [full[i] for i in kept], f"layers 0..{top} decode differently"


def test_the_check_catches_a_stream_without_layers() -> None:
    # The same check on an unlayered stream fails: it is what proves the filter right.
    frames = _layered_clip(layers=False)
    full = _decode(frames)
    kept = [i for i in range(len(frames)) if i % 4 == 0]
    assert _decode([frames[i] for i in kept]) != [full[i] for i in kept]


def test_filter_goes_down_at_once_and_up_only_at_a_sync_frame() -> None:
    f = TemporalFilter()
    assert f.forward(FrameLayer(2, False), False)
    f.set_target(0)
    assert not f.forward(FrameLayer(2, False), False)
    assert not f.forward(FrameLayer(1, False), False)
    assert f.forward(FrameLayer(0, False), False)
    f.set_target(2)
    assert not f.forward(FrameLayer(1, False), False)  # not a sync frame: its refs are gone
    assert not f.forward(FrameLayer(2, True), False)  # one layer at a time
    assert f.forward(FrameLayer(1, True), False) and f.current == 1
    assert f.forward(FrameLayer(1, False), False)
    assert f.forward(FrameLayer(2, True), False) and f.current == 2
    f.set_target(0)
    assert f.forward(FrameLayer(0, False), True) and f.current == 0  # a keyframe
    f.set_target(2)
    assert f.forward(FrameLayer(0, False), True) and f.current == 2
    assert f.forward(BASE, False)


def _producer() -> Producer:
    class Receiver:
        def getSynchronizationSources(self) -> list[Any]:
            return []

    receiver: Any = Receiver()
    return Producer(
        "P1-v1", "P1", "video", receiver, mime_type="video/VP8", keyframe_interval_s=0.0
    )


async def test_consumers_on_different_layers_each_get_a_decodable_stream() -> None:
    frames = _layered_clip(count=24)  # fewer than a slot queues: nobody reads until the end
    producer = _producer()
    slots = [OutboundSlot("video") for _ in range(3)]
    consumers = []
    for top, slot in enumerate(slots):
        slot.active = True
        consumer = Consumer(producer, slot, f"S{top}")
        consumer.layers.set_target(top)
        consumers.append(consumer)
    for i, data in enumerate(frames):
        tid = PATTERN[i % 4]
        layer = FrameLayer(tid, sync=False)
        producer.on_frame(VP8, LayeredFrame(data, i * 3000, layer), False)
    full = _decode(frames)
    for top, consumer in enumerate(consumers):
        sent = [bytes(await consumer.slot.recv()) for _ in range(consumer.frames_sent)]
        kept = [i for i in range(len(frames)) if PATTERN[i % 4] <= top]
        assert sent == [frames[i] for i in kept]
        assert _decode(sent) == [full[i] for i in kept]
        assert consumer.frames_layer_dropped == len(frames) - len(kept)
    assert producer.layered
