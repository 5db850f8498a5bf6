"""Training loops for wanmodel (Ray Train entrypoints; Ray is imported only when a Ray entrypoint runs)."""
from wanmodel.train.vae import TrainResult, VAETrainConfig, inflate_2d_to_3d, load_train_config, train_vae, train_vae_ray

__all__ = ["TrainResult", "VAETrainConfig", "inflate_2d_to_3d", "load_train_config", "train_vae", "train_vae_ray"]
