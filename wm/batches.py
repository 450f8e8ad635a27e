"""Training batches cut from the datasets of wm/datafiles.py: frames for the VAE, token windows for the
world model, and the train/validation split by episode that both use."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator

import h5py
import numpy as np
import torch

from wm.datafiles import StepData, Tokens, frame_offsets, prefetched, read_frames
from wm.errors import WmError
from wm.seeding import Stream, numpy_rng


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation split by episode (never by frame: neighbouring frames are
    near-duplicates, so a frame split would leak). At least one episode on each side."""
    if num_episodes < 2:
        raise WmError(f"need at least 2 episodes for a train/validation split, got {num_episodes}")
    n_val = min(max(1, round(num_episodes * val_fraction)), num_episodes - 1)
    perm = numpy_rng(seed, Stream.SPLIT).permutation(num_episodes)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def episode_frame_indices(step_offsets: np.ndarray, episodes: np.ndarray) -> np.ndarray:
    """Sorted frame indices of the given episodes."""
    fo = frame_offsets(step_offsets)
    return np.concatenate([np.arange(fo[e], fo[e + 1]) for e in episodes]) if len(episodes) else np.zeros(0, int)


class FrameLoader:
    """Shuffled batches of uint8 frames (B, 64, 64, 3) for the VAE.

    The order of an epoch is a pure function of the generator passed to `epoch`, and the same whether the
    frames live in memory or on disk: blocks of `block` consecutive frames in a shuffled order, shuffled
    again inside a buffer of `buffer_blocks` blocks (64k frames, about 800 MB; a leftover of less than a
    batch is carried into the next buffer). Datasets up to `load_limit_bytes` are read once onto the
    training device (a million frames is 12 GB and fits on an H100) and batches are gathered there; larger
    ones are streamed from HDF5 a buffer at a time, so memory stays bounded. Where the frames live is a
    runtime setting (WM_LOAD_LIMIT_GB), so it must not change a single batch (tested).
    """

    def __init__(
        self,
        frames: h5py.Dataset,
        indices: np.ndarray,
        batch_size: int,
        device: torch.device,
        load_limit_bytes: float,
        max_frames: int = 0,
        block: int = 4096,
        buffer_blocks: int = 16,
    ):
        self.frames, self.indices, self.batch_size, self.device = frames, indices, batch_size, device
        self.max_frames = max_frames or len(indices)
        self.block, self.buffer_blocks = block, buffer_blocks
        frame_bytes = int(np.prod(frames.shape[1:]))
        self.data = None
        if len(indices) * frame_bytes <= load_limit_bytes:
            self.data = torch.from_numpy(read_frames(frames, indices)).to(device)  # (N, H, W, C) uint8

    def __len__(self) -> int:
        return min(self.max_frames, len(self.indices))

    def epoch(self, gen: torch.Generator | None) -> Iterator[torch.Tensor]:
        """Shuffled batches (gen given) or all frames in file order (gen None, for validation)."""
        if gen is None:
            for i in range(0, len(self.indices), self.batch_size):
                chunk = np.arange(i, min(i + self.batch_size, len(self.indices)))
                yield self._gather(chunk) if self.data is not None else self._read(chunk)
            return
        if self.data is not None:  # shuffle positions, gather the frames on the device
            for positions in self._shuffled(gen, lambda pos: pos):
                yield self._gather(positions)
        else:  # shuffle the frames themselves, read a buffer of blocks at a time
            for frames in self._shuffled(gen, lambda pos: read_frames(self.frames, self.indices[pos])):
                yield torch.from_numpy(frames).to(self.device)

    def _gather(self, positions: np.ndarray) -> torch.Tensor:
        return self.data[torch.from_numpy(positions).to(self.device)]  # (B, H, W, C) uint8

    def _read(self, positions: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(read_frames(self.frames, self.indices[positions])).to(self.device)

    def _shuffled(self, gen: torch.Generator, load: Callable[[np.ndarray], np.ndarray]) -> Iterator[np.ndarray]:
        """Batches of `load(positions)` rows in the epoch's order; `load` maps a buffer's positions (into
        `indices`, block by block) to rows: the positions themselves, or the frames they point to."""
        B, left, n = self.batch_size, len(self), len(self.indices)
        n_blocks = math.ceil(n / self.block)
        order = torch.randperm(n_blocks, generator=gen).tolist()
        buffers = [
            np.concatenate(
                [np.arange(b * self.block, min((b + 1) * self.block, n)) for b in order[j : j + self.buffer_blocks]]
            )
            for j in range(0, n_blocks, self.buffer_blocks)
        ]
        carry = None
        for rows in prefetched(functools.partial(load, new) for new in buffers):  # the next buffer loads meanwhile
            buf = rows if carry is None else np.concatenate([carry, rows])
            buf = buf[torch.randperm(len(buf), generator=gen).numpy()]
            cut = len(buf) - len(buf) % B
            for i in range(0, cut, B):
                yield buf[i : i + min(B, left)]
                left -= B
                if left <= 0:
                    return
            carry = buf[cut:]
        if carry is not None and len(carry):
            yield carry[:left]


# CarRacing pays -0.1 a step, +1000/N for each new tile, and -100 once, when the car leaves the playfield
# (which ends the episode).
STEP_REWARD = -0.1


def reward_targets(steps: StepData, smoothing: int = 1) -> np.ndarray:
    """(S,) float32 regression targets of the world model's reward head.

    The -100 of leaving the playfield is left out (the reward is clipped at the step cost): it comes once, at
    an episode's end, which is the done head's to predict; regressed as a reward, these few steps dominated the
    squared error and pulled every prediction down (measured: episode returns predicted 25 too low). With
    `smoothing` > 1 a target is the mean reward over a centred window of that many steps within the episode:
    the expected reward rate, whose sum over an episode is nearly the return but whose timing (which step
    touches a tile) a one-token frame cannot resolve."""
    rewards = np.maximum(steps.rewards, STEP_REWARD).astype(np.float32)
    if smoothing <= 1:
        return rewards
    kernel, lead = np.ones(smoothing), (smoothing - 1) // 2
    out = np.empty_like(rewards)
    for a, b in zip(steps.step_offsets[:-1], steps.step_offsets[1:], strict=True):
        # the centred slice of the full convolution: mode="same" would return `smoothing` values for an
        # episode shorter than the window
        total = np.convolve(rewards[a:b], kernel)[lead : lead + b - a]
        count = np.convolve(np.ones(b - a), kernel)[lead : lead + b - a]  # fewer steps near the episode's ends
        out[a:b] = total / count
    return out


class WindowLoader:
    """Batches of `seq_len`-step windows cut within episodes (never across a boundary).

    A window starting at step s of episode e holds tokens s..s+L (L+1 frames: inputs and next-token
    targets) and actions/reward targets (`reward_targets`)/dones of steps s..s+L-1. Each epoch tiles every episode with
    non-overlapping windows from a random phase, plus the window ending at the last step, so terminal
    transitions are always seen. Episodes shorter than L steps are skipped (counted in `skipped`).
    """

    def __init__(
        self,
        data: Tokens,
        episodes: np.ndarray,
        seq_len: int,
        batch_size: int,
        device: torch.device,
        reward_smoothing: int = 1,
    ):
        steps = data.steps
        self.L, self.batch_size, self.device = seq_len, batch_size, device
        lengths = steps.lengths[episodes]
        self.episodes = episodes[lengths >= seq_len]
        self.skipped = int((lengths < seq_len).sum())
        self.lengths = torch.from_numpy(steps.lengths[self.episodes])
        self.step_off = torch.from_numpy(steps.step_offsets[self.episodes])
        self.frame_off = torch.from_numpy(steps.frame_offsets[self.episodes])
        self.tokens = torch.from_numpy(data.tokens).to(device)  # (F,)
        self.actions = torch.from_numpy(steps.actions).to(device)  # (S, 3)
        self.rewards = torch.from_numpy(reward_targets(steps, reward_smoothing)).to(device)  # (S,)
        self.dones = torch.from_numpy(steps.terminated.astype(np.float32)).to(device)  # (S,)

    def starts(self, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(episode position, start step) of every window of one epoch; phase 0 when gen is None."""
        ep, st = [], []
        for i, T in enumerate(self.lengths.tolist()):
            phase = 0 if gen is None else int(torch.randint(self.L, (1,), generator=gen))
            s = torch.arange(min(phase, T - self.L), T - self.L + 1, self.L)
            s = torch.unique(torch.cat([s, torch.tensor([T - self.L])]))
            ep.append(torch.full_like(s, i))
            st.append(s)
        if not ep:  # every episode shorter than L
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        return torch.cat(ep), torch.cat(st)

    def gather(self, ep: torch.Tensor, st: torch.Tensor) -> dict[str, torch.Tensor]:
        ar = torch.arange(self.L + 1)
        f_idx = (self.frame_off[ep] + st)[:, None] + ar  # (B, L+1)
        s_idx = (self.step_off[ep] + st)[:, None] + ar[:-1]  # (B, L)
        f_idx, s_idx = f_idx.to(self.device), s_idx.to(self.device)
        return {
            "tokens": self.tokens[f_idx],  # (B, L+1)
            "actions": self.actions[s_idx],  # (B, L, 3)
            "rewards": self.rewards[s_idx],  # (B, L)
            "dones": self.dones[s_idx],  # (B, L)
        }

    def epoch(self, gen: torch.Generator | None) -> Iterator[dict[str, torch.Tensor]]:
        """Shuffled batches (gen given) or all windows in order (gen None, for validation)."""
        ep, st = self.starts(gen)
        order = torch.arange(len(ep)) if gen is None else torch.randperm(len(ep), generator=gen)
        for i in range(0, len(order), self.batch_size):
            j = order[i : i + self.batch_size]
            yield self.gather(ep[j], st[j])
