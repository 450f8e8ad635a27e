"""The models: FSQ (fsq.py), the FSQ-VAE (fsq_vae.py), the token world model (world_model.py) and the
controllers (controller.py)."""
