"""`WorldModelTrainer`: the token world model on windows of a tokens file, and its validation metrics."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import torch

from wm.batches import WindowLoader, split_episodes
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

    def fit(self, tokens: str | Path | Tokens, metrics: Path | None = None, plots: Path | None = None) -> TrainResult:
        """Train (resuming when possible); `world_model` ends with the weights of the best validation epoch."""
        cfg, w = self.config, self.config.wm
        data = tokens if isinstance(tokens, Tokens) else load_tokens(tokens)
        if data.levels != cfg.fsq.levels:
            source = "the tokens" if isinstance(tokens, Tokens) else tokens
            raise WmError(
                f"{source}: encoded with fsq.levels={data.levels}, params say {cfg.fsq.levels}; run `dvc repro encode`"
            )
        train_eps, val_eps = split_episodes(data.steps.num_episodes, w.val_fraction, cfg.seed)
        train_windows = WindowLoader(data, train_eps, w.seq_len, w.batch_size, self.device)
        val_windows = WindowLoader(data, val_eps, w.seq_len, w.batch_size, self.device)
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
            TrainSpec("wm", w.epochs, w.lr, w.weight_decay, w.grad_clip, select="ce", train_metrics=TRAIN_METRICS),
            ResumeCache.for_run(
                self.runtime.cache_dir, "wm", wm_fingerprint(cfg), "epochs", self.device.type, __name__
            ),
            train_batches=lambda epoch: train_windows.epoch(epoch_generator(cfg.seed, epoch)),
            evaluate=lambda m: wm_validation(m, val_windows.epoch(None)),
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
