"""wm.batches: frame and window loaders, and the train/validation split by episode.

Everything here runs on small hand-built arrays and HDF5 files whose contents encode their own
indices, so every check is exact: no environment, no training.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wm.batches import FrameLoader, WindowLoader, episode_frame_indices, reward_targets, split_episodes
from wm.datafiles import StepData, Tokens
from wm.errors import WmError
from wm.seeding import Stream, numpy_rng

CPU = torch.device("cpu")
# Non-contiguous, like the training frames of a few episodes: gaps of 1 and of many frames.
TRAIN_IDX = np.r_[0:50, 51:52, 80:200, 210:297]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def frame_ids(batch: torch.Tensor | np.ndarray) -> np.ndarray:
    """Decode the index that `fake_frames` wrote into pixel (0, 0) of each frame."""
    b = np.asarray(batch, dtype=np.int64)
    return b[:, 0, 0, 0] + 256 * b[:, 0, 0, 1]


def _loader(frames_h5, streaming: bool, **kw) -> FrameLoader:
    kw = {"batch_size": 7, "max_frames": 0, **kw}
    limit = 0 if streaming else 1e9
    loader = FrameLoader(frames_h5, TRAIN_IDX, kw.pop("batch_size"), CPU, limit, block=10, buffer_blocks=3, **kw)
    assert (loader.data is None) == streaming
    return loader


def _epoch_ids(loader: FrameLoader, g: torch.Generator | None) -> tuple[np.ndarray, list[int]]:
    batches = list(loader.epoch(g))
    for b in batches:
        assert b.dtype == torch.uint8 and b.shape[1:] == (64, 64, 3)
    return np.concatenate([frame_ids(b) for b in batches]), [len(b) for b in batches]


def _batch_sizes_ok(sizes: list[int], total: int, batch_size: int) -> None:
    assert sum(sizes) == total
    assert len(sizes) == math.ceil(total / batch_size)
    assert all(s == batch_size for s in sizes[:-1]) and 0 < sizes[-1] <= batch_size


# ---------------------------------------------------------------------------------------------- FrameLoader


@pytest.mark.parametrize("streaming", [False, True], ids=["in_memory", "streaming"])
def test_frame_loader_yields_every_training_frame_once_per_epoch(frames_h5, streaming):
    loader = _loader(frames_h5, streaming)
    assert len(loader) == len(TRAIN_IDX)
    for seed in range(3):
        ids, sizes = _epoch_ids(loader, gen(seed))
        assert np.array_equal(np.sort(ids), TRAIN_IDX)  # each training frame exactly once, nothing else
        assert not np.array_equal(ids, TRAIN_IDX)  # shuffled
        _batch_sizes_ok(sizes, len(TRAIN_IDX), 7)
        # the pixels are those of the file, not only the index
        first = next(iter(loader.epoch(gen(seed))))
        assert np.array_equal(first.numpy(), frames_h5[:][frame_ids(first)])


@pytest.mark.parametrize("streaming", [False, True], ids=["in_memory", "streaming"])
def test_frame_loader_order_is_a_function_of_the_generator(frames_h5, streaming):
    loader = _loader(frames_h5, streaming)
    a, _ = _epoch_ids(loader, gen(1))
    b, _ = _epoch_ids(loader, gen(1))
    c, _ = _epoch_ids(loader, gen(2))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # a fresh loader (as after a resume) gives the same order for the same generator seed
    d, _ = _epoch_ids(_loader(frames_h5, streaming), gen(1))
    assert np.array_equal(a, d)


@pytest.mark.parametrize("streaming", [False, True], ids=["in_memory", "streaming"])
@pytest.mark.parametrize("max_frames", [1, 7, 25, len(TRAIN_IDX) - 1, len(TRAIN_IDX), 10_000])
def test_frame_loader_max_frames_caps_the_epoch(frames_h5, streaming, max_frames):
    loader = _loader(frames_h5, streaming, max_frames=max_frames)
    expected = min(max_frames, len(TRAIN_IDX))
    assert len(loader) == expected
    for seed in range(2):
        ids, sizes = _epoch_ids(loader, gen(seed))
        _batch_sizes_ok(sizes, expected, 7)
        assert len(np.unique(ids)) == expected and np.isin(ids, TRAIN_IDX).all()


@pytest.mark.parametrize("streaming", [False, True], ids=["in_memory", "streaming"])
def test_frame_loader_without_generator_is_file_order(frames_h5, streaming):
    loader = _loader(frames_h5, streaming, max_frames=10)  # validation ignores the cap: all frames
    ids, sizes = _epoch_ids(loader, None)
    assert np.array_equal(ids, TRAIN_IDX)
    _batch_sizes_ok(sizes, len(TRAIN_IDX), 7)
    batches = list(loader.epoch(None))
    assert np.array_equal(torch.cat(batches).numpy(), frames_h5[:][TRAIN_IDX])


@pytest.mark.parametrize(
    ("batch_size", "block", "buffer_blocks"),
    [(64, 4096, 4), (64, 10, 3), (1, 1, 1), (len(TRAIN_IDX) - 1, 7, 2), (len(TRAIN_IDX), 50, 1), (1000, 10, 3)],
    ids=["block>data", "batch>buffer", "ones", "one_batch_and_a_frame", "whole_epoch_one_batch", "batch>data"],
)
def test_frame_loader_streaming_shapes(frames_h5, batch_size, block, buffer_blocks):
    loader = FrameLoader(frames_h5, TRAIN_IDX, batch_size, CPU, 0, block=block, buffer_blocks=buffer_blocks)
    ids, sizes = _epoch_ids(loader, gen(0))
    assert np.array_equal(np.sort(ids), TRAIN_IDX)
    _batch_sizes_ok(sizes, len(TRAIN_IDX), batch_size)


# Where the frames live (WM_LOAD_LIMIT_GB, a runtime setting) must not change a single batch. The cases cut
# an epoch into several buffers whose size is no multiple of the batch, so a leftover is carried into the
# next buffer, and end the epoch (max_frames) inside the first, a middle or the last buffer.
SAME_BATCH_CASES = [
    # batch_size, block, buffer_blocks, max_frames
    (7, 10, 3, 0),  # 9 buffers of 30 frames (the last of 18): a leftover of 2 carried each time
    (7, 10, 3, 25),  # ends inside the first buffer
    (7, 10, 3, 100),  # ends inside the 4th buffer, after carries
    (16, 4, 5, 255),  # ends one frame before the last one
    (13, 7, 1, 0),  # one block per buffer
    (64, 4096, 16, 0),  # the defaults: one block holds every frame
    (1000, 10, 3, 0),  # a batch larger than the data: all of it in one final leftover
]


@pytest.mark.parametrize(("batch_size", "block", "buffer_blocks", "max_frames"), SAME_BATCH_CASES)
def test_frame_loader_batches_do_not_depend_on_where_frames_live(
    frames_h5, batch_size, block, buffer_blocks, max_frames
):
    def loader(limit: float) -> FrameLoader:
        return FrameLoader(frames_h5, TRAIN_IDX, batch_size, CPU, limit, max_frames, block, buffer_blocks)

    in_memory, streaming = loader(len(TRAIN_IDX) * 64 * 64 * 3), loader(len(TRAIN_IDX) * 64 * 64 * 3 - 1)
    assert in_memory.data is not None and streaming.data is None  # the limit is in bytes, inclusive
    for seed in (None, 0, 1, 2):  # None: validation, every frame in file order
        a = list(in_memory.epoch(None if seed is None else gen(seed)))
        b = list(streaming.epoch(None if seed is None else gen(seed)))
        assert [len(x) for x in a] == [len(x) for x in b]
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), f"generator seed {seed}"
        expected = len(TRAIN_IDX) if seed is None else min(max_frames or len(TRAIN_IDX), len(TRAIN_IDX))
        assert sum(len(x) for x in a) == expected


def test_frame_loader_shuffles_across_blocks_and_buffers(frames_h5):
    """The epoch is not a concatenation of shuffled buffers in block order: blocks come in a shuffled
    order, and a batch mixes frames of several blocks."""
    loader = FrameLoader(frames_h5, TRAIN_IDX, 10, CPU, 0, block=10, buffer_blocks=3)
    ids, _ = _epoch_ids(loader, gen(0))
    block_of = {int(i): pos // 10 for pos, i in enumerate(TRAIN_IDX)}
    first_buffer = {block_of[int(i)] for i in ids[:20]}  # the first two batches: from the first buffer
    assert len(first_buffer) == 3 and first_buffer != {0, 1, 2}
    assert all(len({block_of[int(i)] for i in ids[k : k + 10]}) > 1 for k in (0, 10))


# --------------------------------------------------------------------------------------------- WindowLoader

L = 5
# Episode lengths in steps: 12 (tiled), 4 (L - 1: skipped), 7, 5 (== L: exactly one window), 9, 1 (skipped).
LENGTHS = [12, 4, 7, 5, 9, 1]


def _tokens() -> Tokens:
    """Tokens/steps whose values are their own frame/step index, so every gather can be checked."""
    step_offsets = np.r_[0, np.cumsum(LENGTHS)].astype(np.int64)
    n_steps = int(step_offsets[-1])
    n_frames = n_steps + len(LENGTHS)
    s = np.arange(n_steps, dtype=np.float32)
    last = step_offsets[1:] - 1
    terminated = np.zeros(n_steps, bool)
    truncated = np.zeros(n_steps, bool)
    terminated[last[[0, 2, 3]]] = True  # the env ended episodes 0, 2 and 3
    truncated[last[[1, 4, 5]]] = True  # the time limit ended 1, 4 and 5
    steps = StepData(
        actions=np.stack([s, -s, np.full_like(s, 0.5)], axis=1),
        rewards=s * 10,
        terminated=terminated,
        truncated=truncated,
        step_offsets=step_offsets,
        track_seeds=np.arange(len(LENGTHS), dtype=np.uint64),
    )
    tokens = np.arange(n_frames, dtype=np.int64)
    return Tokens(tokens=tokens, codes=np.zeros((n_frames, 2), np.float32), steps=steps, levels=[4, 4])


def _windows(loader: WindowLoader, g: torch.Generator | None, batch_size: int) -> dict[str, torch.Tensor]:
    batches = list(loader.epoch(g))
    sizes = [len(b["tokens"]) for b in batches]
    assert all(s == batch_size for s in sizes[:-1]) and 0 < sizes[-1] <= batch_size
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def _check_windows(data: Tokens, w: dict[str, torch.Tensor], allowed: set[int]) -> list[tuple[int, int]]:
    """Assert every window is consecutive, inside one episode and aligned; return (episode, start step)."""
    steps = data.steps
    so, fo = steps.step_offsets, steps.frame_offsets
    n = len(w["tokens"])
    assert w["tokens"].shape == (n, L + 1) and w["tokens"].dtype == torch.int64
    assert w["actions"].shape == (n, L, 3) and w["rewards"].shape == (n, L) and w["dones"].shape == (n, L)
    out = []
    for tok, act, rew, done in zip(w["tokens"], w["actions"], w["rewards"], w["dones"], strict=True):
        f = tok.numpy()
        s = act[:, 0].numpy().astype(np.int64)
        assert np.array_equal(np.diff(f), np.ones(L)), f  # consecutive frames (inputs and targets)
        assert np.array_equal(np.diff(s), np.ones(L - 1)), s  # consecutive steps
        e = int(np.searchsorted(so, s[0], side="right") - 1)
        assert e in allowed, (e, allowed)
        # inside episode e: steps in [so[e], so[e+1]), frames (inputs and targets) in [fo[e], fo[e+1])
        assert so[e] <= s[0] and s[-1] < so[e + 1], (e, s)
        assert fo[e] <= f[0] and f[-1] < fo[e + 1], (e, f)
        # token t is the frame at which action t was taken (frame = step + episode), target t+1 the next
        assert np.array_equal(f[:-1], s + e)
        assert torch.equal(act[:, 1], -act[:, 0]) and (act[:, 2] == 0.5).all()
        assert torch.equal(rew, torch.from_numpy(steps.rewards[s]))
        assert torch.equal(done, torch.from_numpy(steps.terminated[s].astype(np.float32)))
        out.append((e, int(s[0] - so[e])))
    return out


@pytest.mark.parametrize("episodes", [[0, 1, 2, 3, 4, 5], [1, 3, 4]])
def test_window_loader_windows_stay_inside_episodes_and_align(episodes):
    data = _tokens()
    episodes = np.array(episodes)
    loader = WindowLoader(data, episodes, L, batch_size=3, device=CPU)
    assert loader.skipped == sum(LENGTHS[e] < L for e in episodes) > 0  # episodes 1 and 5 (< seq_len steps)
    allowed = {e for e in episodes.tolist() if LENGTHS[e] >= L}
    for g in [None, *(gen(seed) for seed in range(6))]:
        windows = _check_windows(data, _windows(loader, g, 3), allowed)
        by_ep: dict[int, list[int]] = {}
        for e, start in windows:
            by_ep.setdefault(e, []).append(start)
        assert set(by_ep) == allowed  # every usable episode is used
        for e, starts in by_ep.items():
            starts, T = sorted(starts), LENGTHS[e]
            assert len(set(starts)) == len(starts)  # no window twice
            # the last step (where terminated/truncated is set) is covered in every epoch
            assert starts[-1] == T - L
            # non-overlapping tiling from a phase < L, plus the window ending at the last step
            assert starts[0] < L
            gaps = np.diff(starts)
            assert (gaps[:-1] == L).all() and (gaps[-1:] <= L).all()


def test_window_loader_terminal_steps_are_seen_every_epoch():
    data = _tokens()
    loader = WindowLoader(data, np.arange(len(LENGTHS)), L, batch_size=4, device=CPU)
    for seed in range(8):
        w = _windows(loader, gen(seed), 4)
        assert int(w["dones"].sum()) == 3  # terminal steps of episodes 0, 2 and 3, each exactly once


def test_window_loader_phase_is_random_and_epoch_none_deterministic():
    data = _tokens()
    loader = WindowLoader(data, np.arange(len(LENGTHS)), L, batch_size=4, device=CPU)

    def starts(g):
        ep, st = loader.starts(g)
        return tuple(zip(ep.tolist(), st.tolist(), strict=True))

    assert len({starts(gen(seed)) for seed in range(10)}) > 1  # the phase depends on the generator
    assert starts(gen(3)) == starts(gen(3))
    # gen None: phase 0 in every episode, the same windows and batches every time
    expected = []
    for i, T in enumerate(LENGTHS[e] for e in (0, 2, 3, 4)):
        expected += [(i, s) for s in sorted({*range(0, T - L + 1, L), T - L})]
    assert starts(None) == tuple(expected)
    a, b = _windows(loader, None, 4), _windows(loader, None, 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # shuffled batches: same generator seed -> same batches, another seed -> another order
    x, y, z = (_windows(loader, gen(s), 4) for s in (5, 5, 6))
    assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(x["tokens"], z["tokens"])


# ------------------------------------------------------------------------------------------ split_episodes


@pytest.mark.parametrize("n", [2, 3, 10, 57])
@pytest.mark.parametrize("val_fraction", [0.01, 0.1, 0.5, 0.99])
def test_split_episodes_partitions(n, val_fraction):
    train, val = split_episodes(n, val_fraction, seed=3)
    assert len(train) >= 1 and len(val) >= 1
    assert not set(train.tolist()) & set(val.tolist())
    assert np.array_equal(np.sort(np.r_[train, val]), np.arange(n))
    assert np.array_equal(train, np.sort(train)) and np.array_equal(val, np.sort(val))
    assert len(val) == min(max(1, round(n * val_fraction)), n - 1)
    t2, v2 = split_episodes(n, val_fraction, seed=3)
    assert np.array_equal(train, t2) and np.array_equal(val, v2)


def test_split_episodes_draws_from_the_split_stream():
    """The split is the SPLIT stream of the master seed (wm/seeding.py): no other use shares its numbers."""
    for seed in (0, 5):
        perm = numpy_rng(seed, Stream.SPLIT).permutation(20)
        train, val = split_episodes(20, 0.2, seed)
        assert val.tolist() == sorted(perm[:4].tolist()) and train.tolist() == sorted(perm[4:].tolist())


def test_split_episodes_depends_on_the_seed():
    splits = {tuple(split_episodes(50, 0.2, seed)[1].tolist()) for seed in range(5)}
    assert len(splits) > 1


@pytest.mark.parametrize("n", [0, 1])
def test_split_episodes_needs_two_episodes(n):
    with pytest.raises(WmError, match="at least 2 episodes"):
        split_episodes(n, 0.1, 0)


def test_episode_frame_indices():
    step_offsets = np.array([0, 3, 5, 9])  # 3, 2 and 4 steps -> 4, 3 and 5 frames
    assert episode_frame_indices(step_offsets, np.array([0, 2])).tolist() == [0, 1, 2, 3, 7, 8, 9, 10, 11]
    assert episode_frame_indices(step_offsets, np.array([1])).tolist() == [4, 5, 6]
    assert len(episode_frame_indices(step_offsets, np.array([], int))) == 0


def test_reward_targets_drop_the_playfield_penalty_and_smooth_within_episodes():
    rewards = np.array([-0.1, 3.5, -0.1, -100.1, -0.1, -0.1, 3.4, -0.1], np.float32)  # episodes of 4 and 4 steps
    steps = StepData(
        actions=np.zeros((8, 3), np.float32),
        rewards=rewards,
        terminated=np.array([0, 0, 0, 1, 0, 0, 0, 0], bool),
        truncated=np.zeros(8, bool),
        step_offsets=np.array([0, 4, 8]),
        track_seeds=np.zeros(2, np.uint64),
    )
    raw = reward_targets(steps)
    np.testing.assert_allclose(raw, [-0.1, 3.5, -0.1, -0.1, -0.1, -0.1, 3.4, -0.1])  # -100 is the done head's
    smooth = reward_targets(steps, 3)
    # a centred mean over 3 steps, never across the episode boundary (fewer steps at an episode's ends)
    np.testing.assert_allclose(smooth[:4], [(-0.1 + 3.5) / 2, 3.3 / 3, 3.3 / 3, -0.1], rtol=1e-6)
    np.testing.assert_allclose(smooth[4:], [-0.1, 3.2 / 3, 3.2 / 3, (3.4 - 0.1) / 2], rtol=1e-6)
    assert smooth.dtype == np.float32
    # a window longer than an episode (default smoothing 15, a 4-step episode) is the episode's mean reward
    np.testing.assert_allclose(reward_targets(steps, 15)[:4], [(3.5 - 0.3) / 4] * 4, rtol=1e-6)
    # an even window leans back: steps i-2..i+1, the slice numpy's mode="same" takes
    np.testing.assert_allclose(reward_targets(steps, 4)[4:], [-0.1, 3.2 / 3, 3.1 / 4, 3.2 / 3], rtol=1e-6)
