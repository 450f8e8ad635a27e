"""Typed configuration: one Pydantic model per section of ``params.yaml``.

Every field carries a description and a validated range; unknown keys are errors. Derived values
(codebook size, code dimension) are computed here and never repeated in ``params.yaml``.
``load_params`` turns every problem into a :class:`ConfigError` whose lines name the dotted key path,
which the stage CLIs print as one line per problem (exit code 2) instead of a traceback.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wm.errors import ConfigError
from wm.seeding import MAX_EPISODES, MAX_SEED


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Level = Annotated[int, Field(ge=2, le=64, description="number of quantization levels of one dimension")]


class EnvConfig(_Section):
    id: Literal["CarRacing-v3"] = Field("CarRacing-v3", description="Gymnasium environment id.")
    max_episode_steps: int = Field(1000, ge=10, le=100_000, description="TimeLimit truncation, in steps.")


class PolicyConfig(_Section):
    """Temporally correlated random policy used to collect data (see wm/policies.py)."""

    steer_sigma: float = Field(
        0.1, ge=0.0, le=2.0, description="Std of the per-step Brownian increment of the steering."
    )
    steer_decay: float = Field(
        0.9, gt=0.0, le=1.0, description="Mean reversion of steering towards 0 each step (1 = no pull)."
    )
    gas_mean: float = Field(0.4, ge=0.0, le=1.0, description="Mean gas of the gas process (gas bias).")
    brake_prob: float = Field(0.05, ge=0.0, le=1.0, description="Probability a held action segment brakes.")
    hold_min: int = Field(5, ge=1, le=1000, description="Shortest number of steps a gas/brake choice is held.")
    hold_max: int = Field(20, ge=1, le=1000, description="Longest number of steps a gas/brake choice is held.")

    @model_validator(mode="after")
    def _hold_range(self) -> PolicyConfig:
        if self.hold_min > self.hold_max:
            raise ValueError(f"hold_min ({self.hold_min}) must be <= hold_max ({self.hold_max})")
        return self


class CollectConfig(_Section):
    episodes: int = Field(100, ge=1, le=MAX_EPISODES, description="Number of random-policy episodes to record.")
    max_steps: int = Field(
        400, ge=2, le=100_000, description="Steps per episode at most (the env may end the episode first)."
    )
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="Random policy parameters.")


class FSQConfig(_Section):
    levels: list[Level] = Field(
        default_factory=lambda: [8, 5, 5, 5],
        min_length=1,
        max_length=16,
        description="Levels per FSQ dimension (Mentzer et al. 2023, Table 1): [8,5,5,5] gives 1000 codes.",
    )

    @property
    def codebook_size(self) -> int:
        """Number of codes, prod(levels): a frame is one of these tokens."""
        return math.prod(self.levels)

    @property
    def dim(self) -> int:
        """Dimension of a quantized code, len(levels)."""
        return len(self.levels)


class VAEConfig(_Section):
    latent_dim: int = Field(32, ge=1, le=4096, description="Encoder output size before the FSQ projection.")
    channels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [32, 64, 128, 256],
        min_length=4,
        max_length=4,
        description="Conv channels of the 4 stride-2 encoder stages (64->32->16->8->4); mirrored by the decoder.",
    )
    epochs: int = Field(1, ge=1, le=10_000, description="Training epochs over the frames.")
    batch_size: int = Field(64, ge=1, le=65_536, description="Frames per optimizer step.")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    val_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="Fraction of episodes held out for validation (split by episode)."
    )
    max_frames: int = Field(
        0, ge=0, description="Use at most this many training frames per epoch, sampled (0 = all of them)."
    )


class EncodeConfig(_Section):
    batch_size: int = Field(512, ge=1, le=1_000_000, description="Frames encoded per forward pass.")


class WMConfig(_Section):
    embed_dim: int = Field(192, ge=1, le=4096, description="Token embedding size.")
    code_input: bool = Field(
        True, description="Add a linear map of the token's FSQ code to its embedding (similar codes, similar input)."
    )
    hidden: int = Field(256, ge=1, le=8192, description="LSTM hidden size.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LSTM output before the heads.")
    seq_len: int = Field(32, ge=2, le=10_000, description="Training window length in steps (within episodes).")
    epochs: int = Field(20, ge=1, le=100_000, description="Training epochs over the windows.")
    batch_size: int = Field(64, ge=1, le=65_536, description="Windows per optimizer step.")
    lr: float = Field(2e-3, gt=0.0, le=1.0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0.0, description="Gradient norm clip.")
    reward_weight: float = Field(100.0, ge=0.0, description="Weight of the reward MSE in the loss.")
    done_weight: float = Field(1.0, ge=0.0, description="Weight of the done BCE in the loss.")
    reward_overpredict: float = Field(
        1.0,
        ge=1.0,
        le=100.0,
        description="Weight of reward over-prediction relative to under-prediction in the reward loss (>1: a "
        "pessimistic reward head; world-models-jax used 5).",
    )
    reward_smoothing: int = Field(
        15,
        ge=1,
        le=1001,
        description="Regress the mean reward over a centred window of this many steps (the reward rate; 1 = the "
        "step's own reward). See wm.batches.reward_targets.",
    )
    reward_scale: float = Field(
        0.1, gt=0.0, description="Rewards are multiplied by this before the MSE (CarRacing's -100 would dominate)."
    )
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Fraction of episodes held out for validation.")


class ActorCriticConfig(_Section):
    """Gradient training of the controller in imagination (`ctrl.optimizer: actor_critic`; wm/models/actor_critic.py):
    short imagined rollouts from real encoded states, lambda-returns and a learned critic (Dreamer)."""

    updates: int = Field(300, ge=1, le=1_000_000, description="Gradient updates (one imagined batch each).")
    batch: int = Field(512, ge=2, le=1_000_000, description="Imagined trajectories per update.")
    horizon: int = Field(15, ge=1, le=10_000, description="Imagined steps per trajectory (Dreamer: 15).")
    warmup: int = Field(
        8, ge=0, le=10_000, description="Real steps the LSTM reads before imagining (its state then carries speed)."
    )
    gamma: float = Field(0.99, gt=0.0, le=1.0, description="Discount of the returns.")
    td_lambda: float = Field(0.95, ge=0.0, le=1.0, description="Lambda of the lambda-returns (0: TD(0), 1: MC).")
    actor_lr: float = Field(3e-3, gt=0.0, le=1.0, description="Adam learning rate of the actor.")
    critic_lr: float = Field(3e-3, gt=0.0, le=1.0, description="Adam learning rate of the critic.")
    critic_hidden: int = Field(128, ge=1, le=8192, description="Hidden units of the critic MLP (2 layers).")
    entropy: float = Field(
        3e-4, ge=0.0, le=10.0, description="Weight of the policy entropy bonus (on normalised returns)."
    )
    init_std: float = Field(0.5, gt=0.0, le=10.0, description="Initial std of the policy's Gaussian on raw actions.")
    grad_clip: float = Field(10.0, gt=0.0, description="Gradient norm clip of actor and critic.")
    eval_every: int = Field(
        50, ge=1, le=1_000_000, description="Updates between measurements of the actor's dream return."
    )
    eval_dreams: int = Field(32, ge=1, le=100_000, description="Dream episodes (ctrl.max_steps) per measurement.")


class CtrlConfig(_Section):
    kind: Literal["linear", "mlp"] = Field("linear", description="Controller family.")
    mlp_hidden: int = Field(16, ge=1, le=4096, description="Hidden units of the MLP controller.")
    use_hidden: bool = Field(
        False, description="Feed the world model's LSTM hidden state h beside the code z (World Models' [z,h])."
    )
    train_in: Literal["dream", "real"] = Field(
        "dream", description="Fitness source: mean return in the world model's dream, or in the real game."
    )
    optimizer: Literal["cmaes", "actor_critic"] = Field(
        "cmaes",
        description="cmaes: CMA-ES on the return (dream or real game); actor_critic: gradients in imagination "
        "(ctrl.ac; needs train_in: dream).",
    )
    ac: ActorCriticConfig = Field(default_factory=ActorCriticConfig, description="Actor-critic in imagination.")
    popsize: int = Field(16, ge=2, le=100_000, description="CMA-ES population size.")
    sigma0: float = Field(0.5, gt=0.0, le=100.0, description="CMA-ES initial step size.")
    generations: int = Field(12, ge=1, le=100_000, description="CMA-ES generations.")
    rollouts: int = Field(2, ge=1, le=10_000, description="Episodes (tracks) averaged per candidate.")
    max_steps: int = Field(500, ge=1, le=100_000, description="Steps per fitness episode (dream or real).")
    temperature: float = Field(1.0, gt=0.0, le=100.0, description="Dream sampling temperature of next tokens.")
    dream_start: Literal["first", "anywhere"] = Field(
        "first",
        description="Where dreams begin: at the first frame of a recorded episode, or anywhere in one (states a "
        "policy visits; with dream_warmup real steps read first).",
    )
    dream_warmup: int = Field(
        0, ge=0, le=10_000, description="Real steps (tokens, actions) the LSTM reads before a dream takes over."
    )
    dream_dropout: bool = Field(
        False,
        description="One dropout mask of the world model per dream world, kept for the episode (Dropout's Dream "
        "Land); needs wm.dropout > 0.",
    )
    pessimism: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="Dream fitness = mean return over the rollouts minus this times their std (with dream_dropout, "
        "the spread across dropout masks measures the model's uncertainty).",
    )
    hopeless_steps: int = Field(
        0,
        ge=0,
        le=100_000,
        description="End a training episode (dream or real game) after this many consecutive steps without "
        "reward (0: never). Never applied in evaluation.",
    )
    lockstep: int = Field(
        8,
        ge=1,
        le=4096,
        description="Real-game agent episodes a worker plays in lockstep at most (real-game CMA-ES, the rounds' "
        "collection, evaluate), and the rows of every VAE batch of the agent (padded with blank frames): 8 "
        "frames cost about twice one on a CPU core. Fewer share a batch when that keeps more workers busy "
        "(32 episodes on 16 workers: 2 each); a frame's code does not depend on the rows beside it. A param, "
        "not a setting: the encoder's last float bits depend on the batch width.",
    )

    @model_validator(mode="after")
    def _track_budget(self) -> CtrlConfig:
        if self.generations * self.rollouts > MAX_EPISODES:
            raise ValueError(f"generations * rollouts must be <= {MAX_EPISODES} (distinct training tracks)")
        if self.optimizer == "actor_critic" and self.train_in != "dream":
            raise ValueError("optimizer actor_critic trains in imagination: set train_in: dream")
        return self


class EvalConfig(_Section):
    episodes: int = Field(
        32, ge=1, le=MAX_EPISODES, description="Real-game evaluation episodes (tracks unseen in collect)."
    )
    max_steps: int = Field(1000, ge=1, le=100_000, description="Steps per evaluation episode at most.")
    video: bool = Field(True, description="Write a GIF of one episode: real frame beside its reconstruction.")
    video_steps: int = Field(300, ge=1, le=100_000, description="Frames in the video at most.")
    fidelity_panel: int = Field(
        12,
        ge=0,
        le=10_000,
        description="Controllers scored in the dream and in the real game for the dream-fidelity metric (the "
        "trained one, perturbations of it, zero, random; wm/fidelity.py); 0 = skip, else at least 3.",
    )
    fidelity_tracks: int = Field(3, ge=1, le=MAX_EPISODES, description="Real tracks per panel controller.")
    fidelity_steps: int = Field(500, ge=1, le=100_000, description="Steps per panel episode, dream and real.")

    @model_validator(mode="after")
    def _panel(self) -> EvalConfig:
        if 0 < self.fidelity_panel < 3:
            raise ValueError(f"fidelity_panel must be 0 (off) or at least 3 to rank, got {self.fidelity_panel}")
        return self


class IterateConfig(_Section):
    """Iterative training (World Models, Sec. 5): rounds of collecting real episodes with the current
    controller, retraining the world model on all data so far and retraining the controller in its dream."""

    rounds: int = Field(
        8, ge=0, le=1000, description="Rounds after the first dream training (needs ctrl.train_in: dream)."
    )
    episodes: int = Field(32, ge=1, le=MAX_EPISODES, description="Real episodes collected per round.")
    max_steps: int = Field(500, ge=2, le=100_000, description="Steps per collected episode at most.")
    noise: float = Field(
        0.3,
        ge=0.0,
        le=100.0,
        description="Std of a Gaussian perturbation of the controller's parameters, drawn per collected episode "
        "(the first episode around each centre is unperturbed, see iterate.dream_share): exploration around the "
        "current controller.",
    )
    wm_epochs: int = Field(
        3, ge=1, le=100_000, description="Epochs retraining the world model on all data each round (from its weights)."
    )
    warm_start: bool = Field(
        True,
        description="Start each round's CMA-ES at the previous round's controller with step size iterate.sigma "
        "(else from zero with ctrl.sigma0).",
    )
    sigma: float = Field(0.2, gt=0.0, le=100.0, description="CMA-ES step size of a warm-started round.")
    recombine: bool = Field(
        True,
        description="Recombine each round's collected controllers by their real returns (CMA-ES's weights over "
        "the better half: one step of an evolution strategy on episodes collected anyway), start the round's "
        "training in the dream there instead of at the controller that collected them (with "
        "iterate.warm_start), and check every such recombination with the rounds' controllers "
        "(iterate.publish).",
    )
    dream_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Share of each round's collected episodes (rounded) played around the dream's controller; the "
        "rest play around the recombined start its dream training began from (needs iterate.recombine), so the "
        "recombination by real return keeps the dream's proposal only where it beat its start in the game "
        "(0: an evolution strategy in the real game alone, the dream's controllers only enter the check).",
    )
    first_centre: Literal["dream", "initial"] = Field(
        "initial",
        description="What round 1's episodes not around the dream's controller play around (there is no "
        "recombination yet): the dream's controller too (dream: one centre), or the controller round 0's dream "
        "training began from (initial: the zero controller for CMA-ES, which drives straight at half gas), so a "
        "round-0 controller that stands still does not take every perturbation of round 1 with it.",
    )
    publish: Literal["last", "checked", "check_recombined", "recombined"] = Field(
        "check_recombined",
        description="Which controller train_ctrl publishes after the rounds: the last round's (its CMA-ES may "
        "exploit the last dream: it was never tried in the game), the best of the rounds' controllers in a "
        "real-game check (checked; its steps are counted), the recombination of the checked controllers by "
        "their check returns (check_recombined: CMA-ES's weights over the better half, as iterate.recombine "
        "does with a round's episodes), or the last round's recombination of its collected controllers by real "
        "return, with no check and no world model or controller trained after it (recombined; needs "
        "iterate.recombine).",
    )
    check_controllers: int = Field(
        4,
        ge=2,
        le=1001,
        description="Dream-trained controllers checked when iterate.publish is checked or check_recombined: the last "
        "round's and those of "
        "the earlier rounds whose unperturbed collected episode scored best (with iterate.recombine, every "
        "round's recombined start is checked too).",
    )
    check_episodes: int = Field(
        2,
        ge=1,
        le=MAX_EPISODES,
        description="Real episodes of iterate.check_steps per checked controller, on tracks of their own (the "
        "same tracks for every checked controller).",
    )
    check_steps: int = Field(
        1000,
        ge=2,
        le=100_000,
        description="Steps per check episode at most: as long as an evaluation episode (eval.max_steps), so the "
        "check ranks controllers on what the evaluation scores, not on the first iterate.max_steps of a track.",
    )

    @model_validator(mode="after")
    def _needs_recombine(self) -> IterateConfig:
        if self.dream_share < 1 and not self.recombine:
            raise ValueError(
                "iterate.dream_share < 1 plays the rest of a round around its recombined start: "
                "set iterate.recombine: true (or iterate.dream_share: 1)"
            )
        if self.publish == "recombined" and not self.recombine:
            raise ValueError(
                "iterate.publish: recombined publishes the last round's recombination of its collected controllers: "
                "set iterate.recombine: true (or another iterate.publish)"
            )
        return self

    @property
    def dream_episodes(self) -> int:
        """Episodes of a round played around the dream's controller (the first ones)."""
        return int(self.dream_share * self.episodes + 0.5)


class FSQVAEConfig(_Section):
    """What builds an FSQ-VAE: ``FSQVAE(cfg.fsq_vae)``."""

    fsq: FSQConfig = Field(default_factory=FSQConfig, description="Finite scalar quantizer.")
    vae: VAEConfig = Field(default_factory=VAEConfig, description="FSQ-VAE model and training.")


class WorldModelConfig(_Section):
    """What builds a token world model: ``WorldModel(cfg.world_model)``."""

    wm: WMConfig = Field(default_factory=WMConfig, description="Token world model and training.")
    fsq: FSQConfig = Field(default_factory=FSQConfig, description="Finite scalar quantizer (the token space).")


class ControllerConfig(_Section):
    """What builds a controller: ``EvolutionaryController(cfg.controller)``; its input size follows the FSQ
    code dimension and, with ``ctrl.use_hidden``, the LSTM's hidden size."""

    ctrl: CtrlConfig = Field(default_factory=CtrlConfig, description="Controller and CMA-ES.")
    fsq: FSQConfig = Field(default_factory=FSQConfig, description="Finite scalar quantizer (the code z).")
    wm: WMConfig = Field(default_factory=WMConfig, description="Token world model (the hidden state h).")


class WorldModelAgentConfig(_Section):
    """All of ``params.yaml``."""

    seed: int = Field(0, ge=0, le=MAX_SEED, description="Master seed; every stage derives its seeds from it.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Torch device; auto = CUDA if present.")
    env: EnvConfig = Field(default_factory=EnvConfig, description="The real game.")
    collect: CollectConfig = Field(default_factory=CollectConfig, description="Random rollouts.")
    fsq: FSQConfig = Field(default_factory=FSQConfig, description="Finite scalar quantizer.")
    vae: VAEConfig = Field(default_factory=VAEConfig, description="FSQ-VAE model and training.")
    encode: EncodeConfig = Field(default_factory=EncodeConfig, description="Frames -> tokens.")
    wm: WMConfig = Field(default_factory=WMConfig, description="Token world model and training.")
    ctrl: CtrlConfig = Field(default_factory=CtrlConfig, description="Controller and CMA-ES.")
    iterate: IterateConfig = Field(default_factory=IterateConfig, description="Iterative training rounds.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Real-game evaluation.")

    @model_validator(mode="after")
    def _consistent(self) -> WorldModelAgentConfig:
        if self.ctrl.dream_dropout and self.wm.dropout == 0:
            raise ValueError("ctrl.dream_dropout needs a world model trained with dropout: set wm.dropout > 0")
        if self.iterate.rounds and self.ctrl.train_in != "dream":
            raise ValueError("iterate.rounds > 0 retrains the controller in the dream: set ctrl.train_in: dream")
        return self

    @property
    def fsq_vae(self) -> FSQVAEConfig:
        return FSQVAEConfig(fsq=self.fsq, vae=self.vae)

    @property
    def world_model(self) -> WorldModelConfig:
        return WorldModelConfig(wm=self.wm, fsq=self.fsq)

    @property
    def controller(self) -> ControllerConfig:
        return ControllerConfig(ctrl=self.ctrl, fsq=self.fsq, wm=self.wm)


# Fingerprints: the params that determine a stage's output, its inputs' included. A published model carries
# its fingerprint, and a stage refuses an upstream model whose fingerprint differs from the current params (a
# stale model is an error, not a silent mismatch). Resume checkpoints are keyed by them too (wm/checkpoints.py).


def collect_fingerprint(cfg: WorldModelAgentConfig) -> dict:
    return cfg.model_dump(mode="json", include={"seed", "env", "collect"})


def vae_fingerprint(cfg: WorldModelAgentConfig) -> dict:
    return collect_fingerprint(cfg) | cfg.model_dump(mode="json", include={"fsq", "vae"})


def wm_fingerprint(cfg: WorldModelAgentConfig) -> dict:
    return vae_fingerprint(cfg) | cfg.model_dump(mode="json", include={"wm"})


def ctrl_fingerprint(cfg: WorldModelAgentConfig) -> dict:
    return wm_fingerprint(cfg) | cfg.model_dump(mode="json", include={"ctrl", "iterate"})


# What round r of iterative training does not depend on: how many rounds follow it and how the published
# controller is chosen after them. Their resume checkpoints leave these out, so `-S iterate.rounds=12`
# continues an 8-round run and `-S iterate.publish=last` reuses every round.
_AFTER_ROUNDS = {"rounds", "publish", "check_controllers", "check_episodes", "check_steps"}


def round_fingerprint(cfg: WorldModelAgentConfig) -> dict:
    """The params that determine each round of iterative training (and the dream training before them)."""
    return wm_fingerprint(cfg) | cfg.model_dump(
        mode="json", include={"ctrl": True, "iterate": set(IterateConfig.model_fields) - _AFTER_ROUNDS}
    )


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see params.yaml in the repository for the valid keys)"
        lines.append(f"{path}: {msg}" if path else msg)  # checks across sections name their keys themselves
    return "\n".join(lines)


def parse_params(data: object) -> WorldModelAgentConfig:
    """Validate an already-parsed params mapping; raises ConfigError naming each bad key path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"params must be a mapping of sections, got {type(data).__name__}")
    try:
        return WorldModelAgentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def load_params(path: str | Path = "params.yaml") -> WorldModelAgentConfig:
    """Read and validate a params file; raises ConfigError with one line per problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root or pass --params)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    try:
        return parse_params(data)
    except ConfigError as err:
        raise ConfigError("\n".join(f"{path}: {line}" for line in str(err).splitlines())) from None
