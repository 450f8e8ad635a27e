"""One named-stream scheme for every random number: each use draws from its own stream of the master seed.

A stream is (master seed, :class:`Stream`, keys...), hashed by numpy's SeedSequence, so two uses never share
random numbers, and what one use draws never depends on how many numbers another drew (adding a generation
does not shift the data order of any epoch). Track seeds (the env's ``reset(seed=...)``) are built by bit
layout instead, so the tracks of collection, controller training and evaluation are disjoint by construction.
"""

from __future__ import annotations

import random
from enum import IntEnum

import numpy as np

# Track seeds of one stream have room for this many episodes (the index occupies the low 20 bits).
MAX_EPISODES = 2**20
MAX_SEED = 2**31 - 1


class Stream(IntEnum):
    COLLECT = 0  # tracks and policy noise of collected episodes
    CTRL = 1  # tracks of real-game controller training
    EVAL = 2  # evaluation tracks
    BASELINE = 3  # the random baseline's policy noise on the evaluation tracks
    SPLIT = 4  # train/validation split of episodes
    EPOCH = 5  # data order of a training epoch
    INIT = 6  # model initialisation (torch's global RNG)
    CMA = 7  # pycma's sampling of candidates
    DREAM = 8  # dream worlds of controller training (start tokens, sampled tokens and dones)
    EVAL_DREAM = 9  # dream worlds of evaluation
    ROUND = 10  # tracks and controller perturbations of the episodes collected in iterative training
    IMAGINE = 11  # actor-critic: initialisation, imagined starts, sampled tokens and policy noise
    CHECK = 12  # tracks of the real-game check of the rounds' controllers (iterate.publish: checked, check_recombined)


TRACK_STREAMS = (Stream.COLLECT, Stream.CTRL, Stream.EVAL, Stream.ROUND, Stream.CHECK)


def track_seed(master: int, stream: Stream, index: int) -> int:
    """Env seed of episode `index` of a track stream: distinct for every (master, stream, index).

    Bit layout: stream << 52 | master << 20 | index (index < 2**20, master < 2**31).
    """
    if stream not in TRACK_STREAMS:
        raise ValueError(f"{stream!r} is not a track stream")
    if not (0 <= index < MAX_EPISODES and 0 <= master <= MAX_SEED):
        raise ValueError(f"track index {index} or master seed {master} out of range")
    return (int(stream) << 52) | (master << 20) | index


def track_seeds(master: int, stream: Stream, start: int, count: int) -> list[int]:
    """Track seeds of episodes start .. start + count - 1 of a stream."""
    return [track_seed(master, stream, i) for i in range(start, start + count)]


def _sequence(master: int, stream: Stream, keys: tuple[int, ...]) -> np.random.SeedSequence:
    # The stream and keys go in the spawn key, not the entropy: SeedSequence drops trailing zero words of its
    # entropy, so [0, COLLECT, 0] would equal 0, the seed gymnasium gives the env of track 0 (measured: the
    # first episode's policy noise replayed the numbers that drew its track), and keys (k,) would equal (k, 0).
    return np.random.SeedSequence(master, spawn_key=(int(stream), *keys))


def numpy_rng(master: int, stream: Stream, *keys: int) -> np.random.Generator:
    """A numpy Generator for one use, e.g. ``numpy_rng(seed, Stream.COLLECT, episode)``."""
    return np.random.default_rng(_sequence(master, stream, keys))


def int_seed(master: int, stream: Stream, *keys: int, bits: int = 63) -> int:
    """An integer seed in [1, 2**bits) for libraries that take one (torch, pycma)."""
    state = _sequence(master, stream, keys).generate_state(1, np.uint64)[0]
    return int(state) % (2**bits - 1) + 1


def torch_generator(master: int, stream: Stream, *keys: int, device: str = "cpu"):
    """A torch.Generator for one use (on `device`: CPU and CUDA generators draw different numbers)."""
    import torch

    return torch.Generator(device=device).manual_seed(int_seed(master, stream, *keys))


def seed_everything(master: int) -> None:
    """Seed the global RNGs (model initialisation and libraries that use them) from the INIT stream."""
    import torch

    seed = int_seed(master, Stream.INIT, bits=32)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds legacy global users (libraries)
    torch.manual_seed(seed)
