"""Stage `train_wm`: the token world model on windows of data/tokens.h5 -> models/wm.pt."""

import math
from pathlib import Path

from wm.cli import CheckpointOut, MetricsOut, ParamsOption, PlotsOut, TokensIn, load_config, run
from wm.config import wm_fingerprint
from wm.data import WindowLoader, load_tokens, split_episodes
from wm.models.world_model import WorldModel
from wm.training import TrainSpec, epoch_generator, train, write_history
from wm.utils import WmError, resolve_device
from wm.validation import wm_validation


def main(
    params: ParamsOption = Path("params.yaml"),
    data: TokensIn = Path("data/tokens.h5"),
    out: CheckpointOut = Path("models/wm.pt"),
    metrics: MetricsOut = Path("metrics/wm.json"),
    plots: PlotsOut = Path("plots/wm"),
) -> None:
    """Train the LSTM over FSQ tokens (next token, reward, done) on windows cut within episodes."""
    cfg = load_config(params)
    device = resolve_device(cfg.device)
    tokens = load_tokens(data)
    if tokens.levels != cfg.fsq.levels:
        raise WmError(
            f"{data} was encoded with fsq.levels={tokens.levels}, params say {cfg.fsq.levels}; run `dvc repro encode`"
        )
    train_eps, val_eps = split_episodes(tokens.steps.num_episodes, cfg.wm.val_fraction, cfg.seed)
    train_windows = WindowLoader(tokens, train_eps, cfg.wm.seq_len, cfg.wm.batch_size, device)
    val_windows = WindowLoader(tokens, val_eps, cfg.wm.seq_len, cfg.wm.batch_size, device)
    n_train = len(train_windows.starts(None)[0])
    if n_train == 0 or len(val_windows.starts(None)[0]) == 0:
        raise WmError(f"no episode has wm.seq_len={cfg.wm.seq_len} steps on both sides of the split; lower wm.seq_len")
    skipped = train_windows.skipped + val_windows.skipped
    print(
        f"wm: ~{n_train} training windows of {cfg.wm.seq_len} steps ({len(train_eps)} episodes, "
        f"{skipped} too short, skipped), {len(val_eps)} validation episodes on {device}"
    )

    spec = TrainSpec(
        component="wm",
        epochs=cfg.wm.epochs,
        lr=cfg.wm.lr,
        weight_decay=cfg.wm.weight_decay,
        grad_clip=cfg.wm.grad_clip,
        checkpoint=out,
        fingerprint=wm_fingerprint(cfg),
        select="ce",
        train_metrics=("loss", "ce", "reward_mse", "done_bce", "acc", "top5", "repeat_acc"),
    )
    train(
        WorldModel(cfg.wm, cfg.fsq),
        spec,
        train_batches=lambda epoch: train_windows.epoch(epoch_generator(cfg.seed, epoch)),
        evaluate=lambda m: wm_validation(m, val_windows.epoch(None)),
        device=device,
        on_epoch=lambda m, history: write_history(history, metrics, plots / "history.csv"),
        batches_per_epoch=math.ceil(n_train / cfg.wm.batch_size),
    )


if __name__ == "__main__":
    run(main)
