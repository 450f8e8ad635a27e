"""Token world model: an LSTM over FSQ tokens and actions, the "M" model of World Models.

Ha & Schmidhuber 2018 (arXiv 1803.10122, Sec. 2.2) model P(z_{t+1} | a_t, z_t, h_t) with an MDN-RNN over
Gaussian latents. Here the frame is one discrete FSQ token, so the mixture density becomes a plain
softmax over the K codes (a language model over frames, as in IRIS, Micheli et al. 2023), trained with
cross-entropy. Like their Doom model it also predicts the episode end, and here the reward too, so a
CarRacing controller can be scored entirely inside the dream.

Step t reads (token_t, action_t) and predicts token_{t+1}, the reward r_t of that transition and
whether the episode terminated at t. Rewards are predicted scaled by ``wm.reward_scale`` (CarRacing's
-100 off-track penalty would otherwise dominate the loss) but every output of this module is in
environment units.

Notation: B = batch, T = time, A = action dim, E = embedding dim, H = LSTM hidden, K = codebook size.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wm.checkpoints import PublishedModule
from wm.config import WorldModelConfig
from wm.metrics import Count
from wm.models.fsq import FSQ

State = tuple[Tensor, Tensor]  # LSTM (h, c), each (1, B, H)
StepOutput = tuple[Tensor, Tensor, Tensor, State]  # logits (B, K), reward (B,), done_logit (B,), state


class WorldModelOutput(NamedTuple):
    logits: Tensor  # (B, T, K) next-token logits
    reward: Tensor  # (B, T) predicted reward, environment units
    done_logit: Tensor  # (B, T) logit of "the episode terminated at this step"
    state: State  # LSTM state after the last step


_COPY_INIT = 2.0  # softmax(2) over a near-uniform K=1000 puts ~1% on the current token at step 0


class WorldModel(PublishedModule, nn.Module):
    """``WorldModel(cfg.world_model)``: ``forward`` over windows for training, ``step`` for batched dreams."""

    kind = "wm"
    config_class = WorldModelConfig

    def __init__(self, config: WorldModelConfig, action_dim: int = 3) -> None:
        super().__init__()
        self.config = config
        wm, fsq = config.wm, config.fsq
        self.codebook_size = fsq.codebook_size
        self.action_dim = action_dim
        self.hidden = wm.hidden
        self.reward_scale = wm.reward_scale
        self.reward_weight = wm.reward_weight
        self.reward_overpredict = wm.reward_overpredict
        self.done_weight = wm.done_weight
        self.embed = nn.Embedding(self.codebook_size, wm.embed_dim)
        # FSQ codes are points on a grid, and neighbouring codes decode to similar frames, but a lookup
        # table learns each of the K rows from that code's own (few) occurrences. Adding a linear map of
        # the code shares what is learnt across neighbours (`wm.code_input`).
        self.code_proj = None
        if wm.code_input:
            self.register_buffer("codes", FSQ(fsq.levels).all_codes(), persistent=False)  # (K, D)
            self.code_proj = nn.Linear(fsq.dim, wm.embed_dim)
        self.lstm = nn.LSTM(wm.embed_dim + action_dim, wm.hidden, batch_first=True)
        # Optional dropout before the heads (`wm.dropout`, off by default).
        self.dropout = nn.Dropout(wm.dropout)
        self.token_head = nn.Linear(wm.hidden, self.codebook_size)
        self.reward_head = nn.Linear(wm.hidden, 1)  # regresses reward * reward_scale
        self.done_head = nn.Linear(wm.hidden, 1)
        # Copy mechanism: at 50 FPS most consecutive frames share a token (the "repeat" baseline is
        # right ~70% of the time on collected data), but an LSTM has to learn the identity map over all
        # K codes before it can say "same as now". A learned logit added to the current token lets
        # the model start from repeating and spend its capacity on the changes.
        self.copy_logit = nn.Parameter(torch.tensor(_COPY_INIT))

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        h = torch.zeros(1, batch_size, self.hidden, device=device)  # (1, B, H)
        return h, torch.zeros_like(h)

    @staticmethod
    def hidden_of(state: State) -> Tensor:
        """The LSTM output h_t, (B, H): the controller's h in World Models' [z, h]."""
        return state[0][-1]

    def forward(
        self, tokens: Tensor, actions: Tensor, state: State | None = None, mask: Tensor | None = None
    ) -> WorldModelOutput:
        """tokens (B, T) int64, actions (B, T, A) float -> per-step predictions (B, T, ...). `mask` (B, H), a
        dropout mask already scaled by 1 / (1 - p), replaces the dropout layer's own draw (a dream keeps one
        mask per world for a whole episode)."""
        B, T = tokens.shape
        assert actions.shape == (B, T, self.action_dim), f"actions must be (B, T, A), got {actions.shape}"
        e = self.embed(tokens)  # (B, T, E)
        if self.code_proj is not None:
            e = e + self.code_proj(self.codes[tokens])  # (B, T, D) -> (B, T, E)
        x = torch.cat([e, actions.to(e.dtype)], dim=-1)  # (B, T, E+A)
        out, state = self.lstm(x, state)  # (B, T, H)
        out = self.dropout(out) if mask is None else out * mask[:, None, :]  # (B, H) -> (B, 1, H)
        logits = self.token_head(out).scatter_add(  # (B, T, K), + copy_logit at the current token
            -1, tokens[..., None], self.copy_logit.expand(B, T, 1)
        )
        reward = self.reward_head(out).squeeze(-1) / self.reward_scale  # (B, T, 1) -> (B, T), env units
        done_logit = self.done_head(out).squeeze(-1)  # (B, T, 1) -> (B, T)
        return WorldModelOutput(logits, reward, done_logit, state)

    def step(self, tokens: Tensor, actions: Tensor, state: State | None, mask: Tensor | None = None) -> StepOutput:
        """One batched dream step: tokens (B,), actions (B, A) -> logits (B, K), reward (B,) in
        environment units, done_logit (B,), new state. h for the controller is ``hidden_of(state)``."""
        out = self.forward(tokens[:, None], actions[:, None, :], state, mask)  # T = 1
        return out.logits[:, 0], out.reward[:, 0], out.done_logit[:, 0], out.state

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """CE(next token) + reward_weight * MSE(scaled reward, over-prediction weighted by reward_overpredict)
        + done_weight * BCE(done).

        batch: tokens (B, T+1) int64, actions (B, T, A), rewards (B, T), dones (B, T) in {0, 1}.
        Metrics (batch means as python floats, no split prefix) include done_tp/fp/fn as `Count`s
        (logit > 0), summed over an epoch for precision/recall, and repeat_acc, the accuracy of predicting
        "next token = current token", the trivial baseline the model has to beat.
        """
        tokens, actions = batch["tokens"], batch["actions"]
        rewards, dones = batch["rewards"].float(), batch["dones"].float()
        B, T1 = tokens.shape
        T = T1 - 1
        assert actions.shape == (B, T, self.action_dim) and rewards.shape == (B, T) and dones.shape == (B, T)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T) each
        out = self.forward(inputs, actions)
        ce = F.cross_entropy(out.logits.reshape(B * T, -1), targets.reshape(B * T))  # (B*T, K) vs (B*T,)
        s = self.reward_scale
        err = (out.reward - rewards) * s  # (B, T), scaled units
        # A pessimistic reward head (`wm.reward_overpredict` > 1, world-models-jax used 5): over-prediction
        # costs more than under-prediction, so the dream errs on the low side where the data is thin, and a
        # controller gains less from states where the model would otherwise hallucinate reward.
        weight = torch.where(err > 0, self.reward_overpredict, 1.0)
        reward_mse_scaled = (weight * err**2).mean()
        done_bce = F.binary_cross_entropy_with_logits(out.done_logit, dones)
        loss = ce + self.reward_weight * reward_mse_scaled + self.done_weight * done_bce

        with torch.no_grad():
            top5 = out.logits.topk(min(5, self.codebook_size), dim=-1).indices  # (B, T, 5)
            pred_done = out.done_logit > 0
            true_done = dones > 0.5
            metrics = {
                "loss": float(loss),
                "ce": float(ce),
                "reward_mse": float((err**2).mean()) / s**2,  # env units^2
                "done_bce": float(done_bce),
                "acc": float((top5[..., 0] == targets).float().mean()),
                "top5": float((top5 == targets[..., None]).any(-1).float().mean()),
                "repeat_acc": float((inputs == targets).float().mean()),
                "done_tp": Count((pred_done & true_done).sum()),
                "done_fp": Count((pred_done & ~true_done).sum()),
                "done_fn": Count((~pred_done & true_done).sum()),
            }
        return loss, metrics
