"""Flow matching (training objective, timestep sampling and shift) and the sampling solvers (UniPC, Euler)."""
from wanmodel.diffusion.flow_matching import (
    NUM_TRAIN_TIMESTEPS,
    LogitNormal,
    flow_matching_loss,
    interpolate,
    shift_sigmas,
    velocity_target,
)
from wanmodel.diffusion.schedulers import (
    SOLVERS,
    SPACINGS,
    make_scheduler,
    prepare_scheduler,
    sampling_sigmas,
)

__all__ = ["NUM_TRAIN_TIMESTEPS", "SOLVERS", "SPACINGS", "LogitNormal", "flow_matching_loss", "interpolate",
           "make_scheduler", "prepare_scheduler", "sampling_sigmas", "shift_sigmas", "velocity_target"]
