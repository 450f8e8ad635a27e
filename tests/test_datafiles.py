"""wm.datafiles: the HDF5 layouts of rollouts.h5 and tokens.h5, their checks, and frame reads.

Files are built by hand from arrays that encode their own indices, so every check is exact.
"""

from __future__ import annotations

import functools
import json
import shutil

import h5py
import numpy as np
import pytest

from wm.datafiles import (
    FORMAT_VERSION,
    Rollouts,
    StepData,
    frame_offsets,
    load_tokens,
    prefetched,
    read_frames,
    write_rollouts,
    write_tokens,
)
from wm.episodes import Episode
from wm.errors import WmError

# Non-contiguous, like the training frames of a few episodes: gaps of 1 and of many frames.
TRAIN_IDX = np.r_[0:50, 51:52, 80:200, 210:297]
LENGTHS = [5, 3, 1]  # steps per episode


def make_episode(e: int, T: int) -> Episode:
    """Episode e of T steps: frame t of it holds (e, t) in pixel (0, 0), step t's reward is 10 e + t."""
    frames = np.zeros((T + 1, 64, 64, 3), np.uint8)
    frames[:, 0, 0, 0], frames[:, 0, 0, 1] = e, np.arange(T + 1)
    t = np.arange(T, dtype=np.float32)
    return Episode(
        actions=np.stack([t, -t, np.full(T, e, np.float32)], axis=1),
        rewards=10 * e + t,
        terminated=np.arange(T) == T - 1 if e == 0 else np.zeros(T, bool),
        truncated=np.arange(T) == T - 1 if e > 0 else np.zeros(T, bool),
        track_seed=2**52 + e,
        frames=frames,
    )


@pytest.fixture
def rollouts_h5(tmp_path):
    path = tmp_path / "data" / "rollouts.h5"
    with write_rollouts(path, {"seed": 7, "env_id": "CarRacing-v3", "params": {"collect": {"episodes": 3}}}) as w:
        for e, T in enumerate(LENGTHS):
            w.append(make_episode(e, T))
    return path


def test_frame_offsets():
    step_offsets = np.array([0, 3, 5, 9])  # 3, 2 and 4 steps -> 4, 3 and 5 frames
    assert frame_offsets(step_offsets).tolist() == [0, 4, 7, 12]


def test_rollouts_round_trip(rollouts_h5):
    assert sorted(p.name for p in rollouts_h5.parent.iterdir()) == ["rollouts.h5"]  # no temporary left
    episodes = [make_episode(e, T) for e, T in enumerate(LENGTHS)]
    with Rollouts(rollouts_h5) as r:
        steps = r.steps
        assert steps.num_episodes == 3 and steps.lengths.tolist() == LENGTHS
        assert steps.step_offsets.tolist() == [0, 5, 8, 9] and steps.step_offsets.dtype == np.int64
        assert steps.frame_offsets.tolist() == [0, 6, 10, 12]
        assert r.frames.shape == (12, 64, 64, 3) and r.frames.dtype == np.uint8
        assert np.array_equal(r.frames[:], np.concatenate([ep.frames for ep in episodes]))
        for key, dtype in [("actions", np.float32), ("rewards", np.float32), ("terminated", bool), ("truncated", bool)]:
            value = getattr(steps, key)
            assert value.dtype == dtype and np.array_equal(value, np.concatenate([getattr(ep, key) for ep in episodes]))
        assert steps.track_seeds.dtype == np.uint64 and steps.track_seeds.tolist() == [2**52, 2**52 + 1, 2**52 + 2]
        # frames of episode e: [frame_offsets[e], frame_offsets[e+1]); frame t of it is (e, t)
        fo = steps.frame_offsets
        for e, T in enumerate(LENGTHS):
            ids = r.frames[fo[e] : fo[e + 1], 0, 0, :2]
            assert ids[:, 0].tolist() == [e] * (T + 1) and ids[:, 1].tolist() == list(range(T + 1))
        assert r.attrs["seed"] == 7 and r.attrs["env_id"] == "CarRacing-v3"
        assert json.loads(r.attrs["params"]) == {"collect": {"episodes": 3}}  # dicts are stored as JSON
        assert r.attrs["format_version"] == FORMAT_VERSION


def test_interrupted_write_leaves_no_file(tmp_path):
    path = tmp_path / "rollouts.h5"
    with pytest.raises(KeyboardInterrupt), write_rollouts(path, {}) as w:
        w.append(make_episode(0, 4))
        raise KeyboardInterrupt
    assert not list(tmp_path.iterdir())


def test_tokens_round_trip(rollouts_h5, tmp_path):
    with Rollouts(rollouts_h5) as r:
        steps = r.steps
    n = int(steps.frame_offsets[-1])
    tokens = np.arange(n) * 3 % 16
    codes = np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)
    path = tmp_path / "tokens.h5"
    write_tokens(path, tokens, codes, steps, {"levels": [4, 4], "seed": 7})
    data = load_tokens(path)
    assert data.tokens.dtype == np.int64 and np.array_equal(data.tokens, tokens)
    assert data.codes.dtype == np.float32 and np.array_equal(data.codes, codes)
    assert data.levels == [4, 4]
    for key in ("actions", "rewards", "terminated", "truncated", "step_offsets", "track_seeds"):
        got, expected = getattr(data.steps, key), getattr(steps, key)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), key
    with pytest.raises(AssertionError):  # one token per frame, or nothing is written
        write_tokens(tmp_path / "bad.h5", tokens[:-1], codes[:-1], steps, {"levels": [4, 4]})
    assert not (tmp_path / "bad.h5").exists()


def test_missing_inputs_name_the_stage_that_makes_them(tmp_path):
    with pytest.raises(WmError, match=r"nope\.h5: missing input \(run `dvc repro collect` first\)"):
        Rollouts(tmp_path / "nope.h5")
    with pytest.raises(WmError, match=r"nope\.h5: missing input \(run `dvc repro encode` first\)"):
        load_tokens(tmp_path / "nope.h5")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5" * 100)
    with pytest.raises(WmError, match=r"garbage\.h5: not a readable HDF5 file .*dvc repro collect"):
        Rollouts(garbage)


def _damage(rollouts_h5, tmp_path, how) -> Rollouts:
    path = tmp_path / "damaged.h5"
    shutil.copy(rollouts_h5, path)
    with h5py.File(path, "a") as f:
        how(f)
    return Rollouts(path)


def _drop_rewards_row(f: h5py.File) -> None:
    f["rewards"].resize(8, axis=0)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        (lambda f: f.__delitem__("track_seeds"), r"incomplete file, missing datasets \['track_seeds'\]"),
        (lambda f: f.attrs.__setitem__("format_version", 99), rf"format version 99 != {FORMAT_VERSION}"),
        (_drop_rewards_row, "dataset rewards has 8 rows, expected 9"),
    ],
    ids=["missing_dataset", "format_version", "row_count"],
)
def test_damaged_files_are_clear_errors(rollouts_h5, tmp_path, how, message):
    with pytest.raises(WmError, match=rf"damaged\.h5: {message}; delete it and run `dvc repro collect`"):
        _damage(rollouts_h5, tmp_path, how)


def test_step_data_properties():
    steps = StepData(
        actions=np.zeros((6, 3), np.float32),
        rewards=np.zeros(6, np.float32),
        terminated=np.zeros(6, bool),
        truncated=np.zeros(6, bool),
        step_offsets=np.array([0, 2, 2, 6]),
        track_seeds=np.arange(3, dtype=np.uint64),
    )
    assert steps.num_episodes == 3 and steps.lengths.tolist() == [2, 0, 4]
    assert steps.frame_offsets.tolist() == [0, 3, 4, 9]


# --------------------------------------------------------------------------------------------- read_frames


@pytest.mark.parametrize(
    "indices",
    [TRAIN_IDX, [0], [299], [0, 2, 4, 6], [3, 4, 5, 40, 41, 100, 250, 251, 252, 299], list(range(20, 60))],
)
def test_read_frames_equals_fancy_indexing(frames_h5, indices):
    indices = np.asarray(indices)
    got = read_frames(frames_h5, indices)
    assert got.dtype == np.uint8
    assert np.array_equal(got, frames_h5[:][indices])


def test_read_frames_of_unsorted_runs(frames_h5):
    """Streaming VAE batches read blocks in a shuffled order: runs may go down as well as up."""
    indices = np.r_[40:50, 0:10, 290:300, 11:13, 5]
    assert np.array_equal(read_frames(frames_h5, indices), frames_h5[:][indices])


def test_read_frames_empty(frames_h5):
    got = read_frames(frames_h5, np.zeros(0, np.int64))
    assert got.shape == (0, 64, 64, 3) and got.dtype == np.uint8


# ------------------------------------------------------------------------------ parallel chunk (de)compression


def test_frames_are_written_as_hdf5_writes_them(tmp_path):
    """The writer compresses chunks on threads and writes them directly: each chunk must hold exactly the bytes
    HDF5's own deflate filter writes for the same rows (the last, partial chunk zero-padded), or files would
    differ from h5py's and readers other than ours could see garbage past the end. Episodes straddle chunk
    boundaries, and one is long enough to put more chunks in flight than the writer keeps before waiting."""
    rng = np.random.default_rng(0)
    episodes = [make_episode(e, T) for e, T in enumerate([70, 3, 700, 1, 130])]
    for ep in episodes:  # compressible but not constant, like real frames
        ep.frames[:, 8:16] = rng.integers(0, 4, ep.frames[:, 8:16].shape, dtype=np.uint8)
    path = tmp_path / "rollouts.h5"
    with write_rollouts(path, {}) as w:
        for ep in episodes:
            w.append(ep)
    frames = np.concatenate([ep.frames for ep in episodes])
    with h5py.File(tmp_path / "reference.h5", "w") as ref_file, h5py.File(path, "r") as f:
        ref = ref_file.create_dataset(
            "frames",
            data=frames,
            chunks=f["frames"].chunks,
            compression="gzip",
            compression_opts=f["frames"].compression_opts,
        )
        assert np.array_equal(f["frames"][:], frames)
        n_chunks = -(-len(frames) // f["frames"].chunks[0])
        assert n_chunks == 15
        for c in range(n_chunks):
            offset = (c * f["frames"].chunks[0], 0, 0, 0)
            assert f["frames"].id.read_direct_chunk(offset) == ref.id.read_direct_chunk(offset), f"chunk {c}"


@pytest.mark.parametrize(
    "layout",
    [
        {},
        {"chunks": (16, 64, 64, 3)},
        {"chunks": (16, 64, 64, 3), "compression": "gzip", "shuffle": True},
        {"chunks": (16, 32, 64, 3), "compression": "gzip"},
        {"chunks": (16, 64, 64, 3), "compression": "lzf"},
    ],
)
def test_frames_of_other_layouts_read_through_hdf5(tmp_path, layout):
    """Only gzip chunks of whole rows are decompressed by hand; any other layout must read as h5py reads it."""
    frames = np.random.default_rng(1).integers(0, 256, (100, 64, 64, 3), dtype=np.uint8)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("frames", data=frames, **layout)
        for indices in [np.r_[0:100], np.r_[3:40, 90:95], np.r_[99]]:
            assert np.array_equal(read_frames(ds, indices), frames[indices])


def test_prefetched_loads_the_next_item_while_the_caller_works():
    """Results come in order, every load runs once, and load k+1 has started before the caller is done
    with result k (what overlaps reading frames with training)."""
    import threading

    started = [threading.Event() for _ in range(4)]

    def load(k: int) -> int:
        started[k].set()
        return k * k

    got = []
    for k, value in enumerate(prefetched(functools.partial(load, k) for k in range(4))):
        if k + 1 < 4:
            assert started[k + 1].wait(timeout=10), f"load {k + 1} did not start while result {k} was in use"
        got.append(value)
    assert got == [0, 1, 4, 9]
    assert list(prefetched([])) == []
