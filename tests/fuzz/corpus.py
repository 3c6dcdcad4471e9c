"""Hypothesis' batches for ``make fuzz``, drawn before the server starts.

Drawing costs about a millisecond a frame: done while fuzzing it would take a core from the
server and the call being measured. So the batches are drawn first, by one process per core,
in chunks of examples with seeds derived from the run's seed (a run is replayed with
``--seed``), and kept in the clip cache keyed by the strategies' source.
"""

from __future__ import annotations

import hashlib
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

from media.clips import _cache_dir
from tests.fuzz import strategies
from tests.fuzz.strategies import Frame, State, batches

EXAMPLES_PER_CHUNK = 500
# Measured: a batch holds about 4 frames on average.
FRAMES_PER_BATCH = 4


def draw_chunk(state: State, chunk_seed: int) -> list[list[Frame]]:
    drawn: list[list[Frame]] = []

    @seed(chunk_seed)
    @settings(
        max_examples=EXAMPLES_PER_CHUNK,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    # A socket before its join takes one frame, or a few binary ones: short batches.
    @given(batches(state, max_size=3 if state == "before_join" else 8))
    def collect(batch: list[Frame]) -> None:
        drawn.append(batch)

    collect()
    return drawn


def _key(state: State, chunk_seed: int) -> Path:
    source = Path(strategies.__file__).read_bytes()
    digest = hashlib.sha256(source + f"{state}:{chunk_seed}:{EXAMPLES_PER_CHUNK}".encode())
    return _cache_dir() / f"fuzz-{digest.hexdigest()[:16]}.pickle"


def _chunk(state: State, chunk_seed: int) -> list[list[Frame]]:
    path = _key(state, chunk_seed)
    if path.exists():
        try:
            with path.open("rb") as f:
                return pickle.load(f)
        except Exception:
            pass
    drawn = draw_chunk(state, chunk_seed)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(drawn, f)
    tmp.replace(path)
    return drawn


def draw(
    frames: dict[State, int], run_seed: int, workers: int = 2
) -> dict[State, list[list[Frame]]]:
    """At least ``frames[state]`` frames of batches per state."""
    jobs: list[tuple[State, int]] = []
    for index, (state, wanted) in enumerate(sorted(frames.items())):
        chunks = max(1, -(-wanted // (EXAMPLES_PER_CHUNK * FRAMES_PER_BATCH)))
        jobs += [(state, run_seed * 1000 + index * 100 + i) for i in range(chunks)]
    out: dict[State, list[list[Frame]]] = {state: [] for state in frames}
    with ProcessPoolExecutor(workers) as pool:
        for (state, _), drawn in zip(jobs, pool.map(_chunk, *zip(*jobs, strict=True)), strict=True):
            out[state] += drawn
    return out
