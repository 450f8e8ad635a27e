"""The trainers of the seed's Python API, one module per model so that each DVC stage imports (and
depends on) only its own: `VAETrainer` (vae.py), `WorldModelTrainer` (world_model.py), `ControllerTrainer`
(controller.py). The stages are thin wrappers around them.

    from wm import WorldModelAgentConfig, FSQVAE, WorldModel, DataCollector, seed_everything
    from wm import VAETrainer, WorldModelTrainer, ControllerTrainer
    config = WorldModelAgentConfig()
    seed_everything(config.seed)
    DataCollector(config).collect("rollouts.h5")
    vae = FSQVAE(config.fsq_vae)
    VAETrainer(vae, config).fit("rollouts.h5")              # vae now holds its best validation epoch
    world_model = WorldModel(config.world_model)
    wm_trainer = WorldModelTrainer(world_model, vae, config)
    wm_trainer.encode("rollouts.h5", "tokens.h5")
    wm_trainer.fit("tokens.h5")
    controller = ControllerTrainer(vae, world_model, config).fit("tokens.h5")

Each `fit` resumes from the resume cache (WM_CACHE_DIR) when the same run was interrupted or asked for fewer
epochs/generations, writes its metrics and plot data when given paths, and `publish(path)` writes the
weights-only model file that `Model.from_file` and `wm.load_agent` read.
"""
