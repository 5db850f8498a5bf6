"""Wan-VAE training losses (report section 4.1.2): L1 reconstruction, KL of the posterior, LPIPS-style perceptual.

The report weights them 3, 3e-6 and 3. KL follows the latent-diffusion convention the 3e-6 weight assumes:
summed over latent elements, averaged over the batch.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from wanmodel.models.vae import LatentPosterior

__all__ = ["PerceptualLoss", "kl_loss", "l1_loss", "psnr"]

# relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of torchvision's vgg16().features: the LPIPS taps
VGG16_TAPS = (3, 8, 15, 22, 29)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def l1_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over every pixel."""
    return (recon - target).abs().mean()


def kl_loss(posterior: LatentPosterior) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) summed over latent elements, averaged over the batch."""
    logvar = posterior.logvar.clamp(-30.0, 20.0)  # the clamp LatentPosterior.sample uses
    kl = 0.5 * (posterior.mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(1).mean()


@torch.no_grad()
def psnr(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for videos in [-1, 1] (peak-to-peak 2), per sample; ``recon`` is clamped first."""
    mse = (recon.clamp(-1, 1) - target).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-10))


class PerceptualLoss(nn.Module):
    """LPIPS-style distance: channel-normalised VGG16 features at five depths, squared difference, mean.

    The trunk is torchvision's ``vgg16().features`` loaded from ``weights`` — a local file, either the full
    torchvision state dict (``vgg16-397923af.pth``, keys ``features.N.*``) or only the trunk (keys ``N.*``),
    ``.pth`` or ``.safetensors``. Nothing is downloaded; a missing file raises FileNotFoundError naming it.
    ``weights=None`` keeps a random-initialised trunk: only for tests (the distance is still zero exactly on
    identical inputs and positive otherwise, but it is not a perceptual metric).

    Unlike LPIPS there is no learned per-channel linear head: every channel of a layer counts equally (the
    LPIPS "baseline" variant). Video inputs (B, 3, T, H, W) are compared frame by frame. Parameters are frozen.
    """

    def __init__(self, weights: str | Path | None, network: str = "vgg16") -> None:
        super().__init__()
        if network != "vgg16":
            raise ValueError(f"perceptual network must be 'vgg16', got {network!r}")
        from torchvision.models import vgg16  # the only torchvision use; loaded here, not at import

        with torch.random.fork_rng(devices=[]):
            # a random trunk (tests) is the same in every run, whatever was drawn before it: a resumed run loads
            # its VAE on the meta device and draws nothing where a fresh run initialises one
            torch.manual_seed(0)
            trunk = vgg16(weights=None).features[: VGG16_TAPS[-1] + 1]
        if weights is not None:
            trunk.load_state_dict(_read_vgg_trunk(Path(weights), len(trunk)))
        self.trunk = trunk.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # always eval: the trunk is a fixed metric

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = ((images + 1.0) / 2.0 - self.mean) / self.std  # [-1, 1] -> ImageNet normalisation
        taps = []
        for index, layer in enumerate(self.trunk):
            x = layer(x)
            if index in VGG16_TAPS:
                taps.append(x / (x.pow(2).sum(1, keepdim=True) + 1e-10).sqrt())
        return taps

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if recon.ndim == 5:  # (B, 3, T, H, W) -> frames
            recon, target = (v.transpose(1, 2).flatten(0, 1) for v in (recon, target))
        both = self._features(torch.cat([recon, target]))
        loss = recon.new_zeros(())
        for feats in both:
            fake, real = feats.chunk(2)
            loss = loss + (fake - real).pow(2).sum(1).mean()
        return loss


def _read_vgg_trunk(path: Path, num_layers: int) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"perceptual_weights: VGG16 weights not found at {str(path)!r} (expected torchvision's "
            f"vgg16-397923af.pth or a features-only state dict); set perceptual_weights: null only for tests"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    return {k: v for k, v in state.items() if int(k.split(".")[0]) < num_layers}
