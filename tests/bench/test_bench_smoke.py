"""The bench code must not rot: a tiny fan-out against both server modes, and one 1:1 call.

Asserts that the bots connect, that frames are counted and matched, and that the results have
their shape; never timings (this runs in CI, on machines of any speed).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aioice.ice
import pytest

from bench.calls import calls
from bench.forwarding import fanout
from bench.harness import loopback_only
from media.clips import Clip, vp8_clip


@pytest.fixture(scope="module")
def clip() -> Clip:
    return vp8_clip(seconds=10)


@pytest.fixture(autouse=True)
def loopback() -> Iterator[None]:
    # The bots gather on 127.0.0.1 (process-wide, as the Worker does); put aioice back after.
    original = aioice.ice.get_host_addresses
    loopback_only()
    yield
    aioice.ice.get_host_addresses = original


async def test_fanout_forward_counts_and_matches_frames(clip: Clip, tmp_path: Path) -> None:
    result = await fanout(
        "forward",
        clip,
        steps=(1, 2),
        window_s=1.5,
        settle_s=0.5,
        workdir=tmp_path,
        quiet_wait_s=0,
        stop_below=0.0,
    )
    assert "error" not in result, result.get("error")
    assert [row["subscribers"] for row in result["rows"]] == [1, 2]
    for row in result["rows"]:
        assert row["subscribers_alive"] == row["subscribers"]
        assert row["delivered_pct"] is not None and row["delivered_pct"] > 0
        assert row["latency"] is not None  # forwarded bytes matched their send times
        assert row["server_cpu_pct"] >= 0
        assert row["worker"]["consumers"] == row["subscribers"]
    assert result["join"]["count"] == 2 and result["join"]["failed"] == 0
    assert result["join"]["first_frame_keyframe"] == 2
    assert result["subscribers_died"] == 0


async def test_fanout_relay_baseline_delivers(clip: Clip, tmp_path: Path) -> None:
    result = await fanout(
        "relay",
        clip,
        steps=(1,),
        window_s=1.5,
        settle_s=0.5,
        workdir=tmp_path,
        quiet_wait_s=0,
        stop_below=0.0,
    )
    assert "error" not in result, result.get("error")
    (row,) = result["rows"]
    assert row["delivered_pct"] is not None and row["delivered_pct"] > 0
    assert row["latency"] is None  # re-encoded bytes match nothing: no latency claimed
    assert result["join"]["count"] == 1


async def test_one_to_one_call(clip: Clip, tmp_path: Path) -> None:
    result = await calls(
        clip, None, rooms=1, size=2, window_s=1.5, settle_s=0.5, workdir=tmp_path, quiet_wait_s=0
    )
    assert "error" not in result, result.get("error")
    assert result["participants_alive"] == 2
    assert result["forwarded_video_streams"] == 2
    assert result["delivered_pct"] is not None and result["delivered_pct"] > 0
    assert result["worker"]["consumers"] == 2


async def test_adaptation_scenario_has_its_shape(clip: Clip, tmp_path: Path) -> None:
    from bench.adaptation import adaptation
    from media.clips import opus_clip

    result = await adaptation(
        clip, opus_clip(seconds=10), healthy=1, window_s=1.5, settle_s=0.2, adapt_s=0.5,
        workdir=tmp_path, quiet_wait_s=0.0,
    )  # fmt: skip
    for name, subscribers in (("clean", 1), ("with_weak", 2)):
        run = result[name]
        assert "error" not in run, run
        assert len(run["subscribers"]) == subscribers
        assert run["subscribers"][0]["video_fps"] > 0 and run["server_cpu_pct"] > 0
    assert [s["weak"] for s in result["with_weak"]["subscribers"]] == [False, True]
