"""The whole agent from Python, end to end on tiny data in under a minute on a CPU.

    python examples/quickstart.py [--out quickstart-run]

Collects a few random-policy episodes, trains the FSQ-VAE, the token world model and the controller briefly
(CMA-ES in the dream, one round of iterative training), then lets the agent drive one real CarRacing-v3
track. The same classes run the DVC pipeline (stages/), at the scale of params.yaml.
tests/test_quickstart.py runs this script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wm import (
    FSQVAE,
    ControllerTrainer,
    DataCollector,
    EvolutionaryController,
    VAETrainer,
    WorldModel,
    WorldModelAgentConfig,
    WorldModelTrainer,
    load_agent,
    make_car_racing,
    seed_everything,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("quickstart-run"), help="folder for data and models")
    out = parser.parse_args().out

    config = WorldModelAgentConfig(
        device="cpu",
        collect={"episodes": 4, "max_steps": 60},
        vae={"epochs": 2, "batch_size": 32, "channels": [16, 32, 32, 64]},
        wm={"epochs": 3, "batch_size": 8, "seq_len": 16, "hidden": 64, "embed_dim": 32},
        ctrl={"train_in": "dream", "popsize": 8, "generations": 3, "rollouts": 4, "max_steps": 60},
        # one round of iterative training: 2 real episodes with the controller, the world model retrained
        iterate={"rounds": 1, "episodes": 2, "max_steps": 60, "wm_epochs": 1},
    )
    seed_everything(config.seed)

    DataCollector(config).collect(out / "rollouts.h5")  # random-policy episodes of the real game

    vae = FSQVAE(config.fsq_vae)  # V: 64x64 frame -> one of 1000 tokens
    vae_trainer = VAETrainer(vae, config)
    print("VAE validation PSNR:", round(vae_trainer.fit(out / "rollouts.h5").selected["vae/val/psnr"], 1))

    world_model = WorldModel(config.world_model)  # M: next token, reward and done
    wm_trainer = WorldModelTrainer(world_model, vae, config)
    wm_trainer.encode(out / "rollouts.h5", out / "tokens.h5")
    print("world model validation accuracy:", round(wm_trainer.fit(out / "tokens.h5").selected["wm/val/acc"], 3))

    controller = EvolutionaryController(config.controller)  # C: 15 parameters, all zero before training
    ctrl_trainer = ControllerTrainer(vae, world_model, config)
    controller = ctrl_trainer.fit(out / "tokens.h5")  # CMA-ES in the dream, then the rounds

    # Publish weights-only model files (what `dvc repro` leaves in models/agent) and load the agent back.
    ctrl_trainer.publish(out / "agent")  # vae.pt, wm.pt (retrained in the rounds), controller.pt
    agent = load_agent(out / "agent")

    env = make_car_racing()
    obs, _ = env.reset(seed=7)
    agent.reset()
    total = 0.0
    for _ in range(100):
        obs, reward, terminated, truncated, _ = env.step(agent.act(obs))
        total += reward
        if terminated or truncated:
            break
    print(f"controller parameters: {controller.spec.num_params}; return on track 7 in 100 steps: {total:.1f}")


if __name__ == "__main__":
    main()
