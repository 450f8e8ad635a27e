"""wm/seeding.py: one named-stream scheme for every random number, and disjoint track seeds per stream."""

import itertools
import random

import numpy as np
import pytest
import torch

from wm.seeding import (
    MAX_EPISODES,
    MAX_SEED,
    TRACK_STREAMS,
    Stream,
    int_seed,
    numpy_rng,
    seed_everything,
    torch_generator,
    track_seed,
    track_seeds,
)

# Realistic index ranges: collect.episodes and eval.episodes up to a few thousand, and real-game CMA-ES uses
# generations * rollouts tracks (e.g. 200 generations of 16 rollouts).
INDICES = range(4096)
MASTERS = (0, 1, 2, 7, 12345, MAX_SEED)


def test_track_streams_are_pairwise_disjoint():
    """Evaluation tracks must be unseen in training: COLLECT, CTRL and EVAL never share a track seed."""
    for master in MASTERS:
        seeds = {s: set(track_seeds(master, s, 0, len(INDICES))) for s in TRACK_STREAMS}
        assert all(len(v) == len(INDICES) for v in seeds.values())  # distinct within a stream too
        for a, b in itertools.combinations(TRACK_STREAMS, 2):
            assert seeds[a].isdisjoint(seeds[b]), (master, a, b)
        # the same index of different streams is a different track
        for i in (0, 1, 99, MAX_EPISODES - 1):
            assert len({track_seed(master, s, i) for s in TRACK_STREAMS}) == len(TRACK_STREAMS)


def test_track_seeds_of_distinct_masters_are_disjoint():
    """Another master seed is another set of tracks in every stream, whatever the indices."""
    for stream in TRACK_STREAMS:
        for a, b in itertools.combinations(MASTERS, 2):
            assert set(track_seeds(a, stream, 0, len(INDICES))).isdisjoint(track_seeds(b, stream, 0, len(INDICES)))
        # the last index of one master is not the first of the next
        assert track_seed(0, stream, MAX_EPISODES - 1) != track_seed(1, stream, 0)
    everything = [track_seed(m, s, i) for m in MASTERS for s in TRACK_STREAMS for i in (0, 1, MAX_EPISODES - 1)]
    assert len(set(everything)) == len(everything)


def test_track_seed_layout_and_range():
    assert track_seeds(3, Stream.EVAL, 5, 3) == [track_seed(3, Stream.EVAL, i) for i in (5, 6, 7)]
    assert track_seed(0, Stream.COLLECT, 0) == 0
    assert track_seed(1, Stream.CTRL, 2) == (1 << 52) | (1 << 20) | 2  # stream << 52 | master << 20 | index
    top = track_seed(MAX_SEED, Stream.EVAL, MAX_EPISODES - 1)
    assert isinstance(top, int) and 0 < top < 2**63  # a valid env seed
    with pytest.raises(ValueError, match="not a track stream"):
        track_seed(0, Stream.BASELINE, 0)
    for master, index in ((0, MAX_EPISODES), (0, -1), (MAX_SEED + 1, 0), (-1, 0)):
        with pytest.raises(ValueError, match="out of range"):
            track_seed(master, Stream.COLLECT, index)


def test_numpy_streams_are_reproducible_and_independent():
    a = numpy_rng(0, Stream.COLLECT, 3).random(8)
    assert np.array_equal(a, numpy_rng(0, Stream.COLLECT, 3).random(8))
    others = [
        numpy_rng(1, Stream.COLLECT, 3),  # another master
        numpy_rng(0, Stream.BASELINE, 3),  # another stream, same key
        numpy_rng(0, Stream.COLLECT, 4),  # another key
        numpy_rng(0, Stream.COLLECT),  # no key
    ]
    for rng in others:
        assert not np.array_equal(a, rng.random(8))


def test_policy_noise_never_replays_an_env_rng():
    """The policy noise of an episode shares no random numbers with the env RNG that generates its track (gymnasium
    seeds it with SeedSequence(track seed)), nor do keys that differ only by trailing zeros."""
    from gymnasium.utils import seeding

    for master in (0, 1):
        for track_stream, noise_stream in ((Stream.COLLECT, Stream.COLLECT), (Stream.EVAL, Stream.BASELINE)):
            for i in range(3):
                env_rng, _ = seeding.np_random(track_seed(master, track_stream, i))
                noise = numpy_rng(master, noise_stream, i)
                assert not np.array_equal(env_rng.random(4), noise.random(4)), (master, track_stream, i)
    assert not np.array_equal(numpy_rng(0, Stream.EPOCH, 3).random(4), numpy_rng(0, Stream.EPOCH, 3, 0).random(4))


def test_int_seed_and_torch_generator():
    seeds = {int_seed(m, s, k) for m in (0, 1) for s in Stream for k in range(5)}
    assert len(seeds) == 2 * len(Stream) * 5
    assert all(1 <= s < 2**63 for s in seeds)
    small = [int_seed(m, Stream.CMA, bits=32) for m in range(100)]
    assert all(1 <= s < 2**32 for s in small) and len(set(small)) == 100
    assert int_seed(4, Stream.DREAM, 2) == int_seed(4, Stream.DREAM, 2)
    x = torch.rand(5, generator=torch_generator(0, Stream.EPOCH, 1))
    assert torch.equal(x, torch.rand(5, generator=torch_generator(0, Stream.EPOCH, 1)))
    assert not torch.equal(x, torch.rand(5, generator=torch_generator(0, Stream.EPOCH, 2)))


def test_seed_everything_seeds_every_global_rng():
    def draw():
        return random.random(), np.random.random(), torch.rand(1).item()  # noqa: NPY002 - the global RNG

    seed_everything(5)
    first = draw()
    seed_everything(5)
    assert draw() == first
    seed_everything(6)
    second = draw()
    assert all(a != b for a, b in zip(first, second, strict=True))
