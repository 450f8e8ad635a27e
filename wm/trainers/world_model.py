"""`WorldModelTrainer`: the token world model on windows of a tokens file, and its validation metrics."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from wm.batches import WindowLoader, reward_targets, split_episodes
from wm.checkpoints import ResumeCache
from wm.config import WorldModelAgentConfig, wm_fingerprint
from wm.datafiles import Tokens, load_tokens
from wm.encoding import encode_rollouts
from wm.errors import WmError
from wm.metrics import MetricMeans, write_history
from wm.models.fsq_vae import FSQVAE
from wm.models.world_model import WorldModel
from wm.runtime import RuntimeSettings, load_runtime, resolve_device
from wm.training import TrainResult, TrainSpec, epoch_generator, train

TRAIN_METRICS = ("loss", "ce", "reward_mse", "done_bce", "acc", "top5", "repeat_acc")


def wm_validation(model: WorldModel, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Window-weighted means of the world model's metrics; done precision/recall from the summed counts."""
    means = MetricMeans()
    for batch in batches:
        means.add(model.compute_loss(batch)[1], batch["tokens"].shape[0])
    out = means.result()
    tp, fp, fn = (out.pop(k) for k in ("done_tp", "done_fp", "done_fn"))
    # With no predicted (or no true) terminations the ratio is undefined; report 0 rather than NaN so
    # `dvc metrics diff` stays numeric.
    out["done_precision"] = tp / (tp + fp) if tp + fp else 0.0
    out["done_recall"] = tp / (tp + fn) if tp + fn else 0.0
    out["done_true"] = tp + fn
    return out


# A "tile step" gains a new track tile (+1000/N, N ~ 250-300 tiles, minus 0.1); every other step gives -0.1.
TILE_THRESHOLD = 1.0


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x**2).sum() * (y**2).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


@torch.no_grad()
def reward_probe(model: WorldModel, data: Tokens, episodes: np.ndarray, chunk: int = 32) -> dict[str, float]:
    """The reward head teacher-forced over whole episodes (real tokens and actions, no sampling): what a dream
    would add up if the next tokens were right, against the game's rewards (without the -100 of leaving the
    playfield, which the reward head does not regress). A dream can only rank controllers if `return_corr` (predicted
    vs real episode return) is high; `tile_recall` is the share of steps that gain a tile whose predicted
    reward exceeds TILE_THRESHOLD, `tile_pred` the mean prediction on them (the game gives ~3.6), `return_bias`
    the mean predicted minus real return."""
    device = next(model.parameters()).device
    steps = data.steps
    targets = reward_targets(steps)  # the game's rewards without the -100 of leaving the playfield
    preds, reals = [], []
    for i in range(0, len(episodes), chunk):
        eps = episodes[i : i + chunk]
        lengths = steps.lengths[eps]  # (E,)
        t = np.arange(lengths.max())
        valid = t[None, :] < lengths[:, None]  # (E, T)
        t = np.where(valid, t[None, :], 0)  # padding reads each episode's first step, then is dropped
        f_idx = steps.frame_offsets[eps][:, None] + t  # (E, T)
        s_idx = steps.step_offsets[eps][:, None] + t  # (E, T)
        tokens = torch.from_numpy(data.tokens[f_idx]).to(device)
        actions = torch.from_numpy(steps.actions[s_idx]).to(device)  # (E, T, 3)
        pred = model(tokens, actions).reward.cpu().numpy()  # (E, T)
        preds += [p[v] for p, v in zip(pred, valid, strict=True)]
        reals += [targets[s][v] for s, v in zip(s_idx, valid, strict=True)]
    pred, real = np.concatenate(preds), np.concatenate(reals)
    tile = real > TILE_THRESHOLD
    pred_ret, real_ret = np.array([p.sum() for p in preds]), np.array([r.sum() for r in reals])
    return {
        "return_corr": _pearson(pred_ret, real_ret),
        "return_bias": float((pred_ret - real_ret).mean()),
        "tile_recall": float((pred[tile] > TILE_THRESHOLD).mean()) if tile.any() else 0.0,
        "tile_pred": float(pred[tile].mean()) if tile.any() else 0.0,
    }


class WorldModelTrainer:
    """Train the token world model on windows of a tokens file; `encode` makes that file with the VAE.

    >>> trainer = WorldModelTrainer(WorldModel(config.world_model), vae, config)
    >>> trainer.encode("data/rollouts.h5", "data/tokens.h5")
    >>> result = trainer.fit("data/tokens.h5")
    """

    def __init__(
        self,
        world_model: WorldModel,
        vae: FSQVAE | None,
        config: WorldModelAgentConfig,
        runtime: RuntimeSettings | None = None,
    ):
        self.world_model, self.vae, self.config = world_model, vae, config
        self.runtime = runtime or load_runtime()
        self.device = resolve_device(config.device)
        self.result: TrainResult | None = None

    def encode(self, rollouts: str | Path, out: str | Path) -> dict:
        """Every frame of `rollouts` -> its token and code in `out`; returns codebook metrics."""
        if self.vae is None:
            raise ValueError("encoding frames needs the VAE: WorldModelTrainer(world_model, vae, config)")
        return encode_rollouts(
            self.vae.to(self.device), rollouts, out, self.config.encode.batch_size, self.runtime.progress
        )

    def fit(
        self,
        tokens: str | Path | Tokens,
        metrics: Path | None = None,
        plots: Path | None = None,
        epochs: int | None = None,
        run: dict | None = None,
        runs: int = 1,
    ) -> TrainResult:
        """Train (resuming when possible) for `epochs` (default wm.epochs) from the model's current weights;
        `world_model` ends with the weights of the best validation epoch. `run` names this training among
        several of the same params in the resume cache (the rounds of iterative training), `runs` says how many."""
        cfg, w = self.config, self.config.wm
        epochs = w.epochs if epochs is None else epochs
        data = tokens if isinstance(tokens, Tokens) else load_tokens(tokens)
        if data.levels != cfg.fsq.levels:
            source = "the tokens" if isinstance(tokens, Tokens) else tokens
            raise WmError(
                f"{source}: encoded with fsq.levels={data.levels}, params say {cfg.fsq.levels}; run `dvc repro encode`"
            )
        train_eps, val_eps = split_episodes(data.steps.num_episodes, w.val_fraction, cfg.seed)
        train_windows = WindowLoader(data, train_eps, w.seq_len, w.batch_size, self.device, w.reward_smoothing)
        val_windows = WindowLoader(data, val_eps, w.seq_len, w.batch_size, self.device, w.reward_smoothing)
        n_train = len(train_windows.starts(None)[0])
        if n_train == 0 or len(val_windows.starts(None)[0]) == 0:
            raise WmError(f"no episode has wm.seq_len={w.seq_len} steps on both sides of the split; lower wm.seq_len")
        print(
            f"wm: ~{n_train} training windows of {w.seq_len} steps ({len(train_eps)} episodes, "
            f"{train_windows.skipped + val_windows.skipped} too short, skipped), {len(val_eps)} validation episodes "
            f"on {self.device}"
        )

        def on_epoch(model: WorldModel, result: TrainResult) -> None:
            write_history(metrics, None if plots is None else plots / "history.csv", result.history, result.selected)

        self.result = train(
            self.world_model,
            TrainSpec("wm", epochs, w.lr, w.weight_decay, w.grad_clip, select="ce", train_metrics=TRAIN_METRICS),
            ResumeCache.for_run(
                self.runtime.cache_dir,
                "wm",
                wm_fingerprint(cfg) | {"run": run},
                "epochs",
                self.device.type,
                __name__,
                runs,
            ),
            train_batches=lambda epoch: train_windows.epoch(epoch_generator(cfg.seed, epoch)),
            evaluate=lambda m: wm_validation(m, val_windows.epoch(None)) | reward_probe(m, data, val_eps),
            device=self.device,
            on_epoch=on_epoch,
            batches_per_epoch=math.ceil(n_train / w.batch_size),
            progress=self.runtime.progress,
        )
        self.world_model.load_state_dict(self.result.best_model)
        return self.result

    def publish(self, path: str | Path) -> None:
        """Write the selected weights as a weights-only model file (after `fit`)."""
        assert self.result is not None, "fit first"
        self.world_model.publish(Path(path), wm_fingerprint(self.config), self.result.selected, self.result.best_model)
