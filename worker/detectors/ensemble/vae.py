"""Member 1: a VAE over multi-scale FFT magnitude and phase; score = reconstruction error.

Besides the usual reconstruction and KL terms, training adds a spectral consistency loss: the
slope between neighbouring radial bands of the reconstructed power spectrum must match the
input's, so the VAE learns the shape of real spectra (their fall-off with frequency) rather than
only their overall level.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from worker.detectors.ensemble.features import FFT_SCALES, RADIAL_BINS, SPECTRUM_WIDTH, FeatureBank
from worker.detectors.ensemble.members import register_member
from worker.detectors.ensemble.neural import Standardise, TorchMember, score_in_batches

KL_WEIGHT = 0.05
CONSISTENCY_WEIGHT = 1.0


class SpectrumVAE(nn.Module):
    def __init__(self, width: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.standardise = Standardise(width)
        self.encoder = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden // 2), nn.GELU())
        self.mu = nn.Linear(hidden // 2, latent)
        self.log_var = nn.Linear(hidden // 2, latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden // 2), nn.GELU(), nn.Linear(hidden // 2, hidden),
                                     nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.encoder(x)
        mu, log_var = self.mu(hidden), self.log_var(hidden).clamp(-8, 8)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var) if sample else mu
        return self.decoder(z), mu, log_var


def radial_columns() -> torch.Tensor:
    return torch.tensor([scale * SPECTRUM_WIDTH + b for scale in range(FFT_SCALES) for b in range(RADIAL_BINS)])


def spectral_consistency(reconstruction: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mismatch of band-to-band slopes of the (de-standardised) radial log power, per scale."""
    columns = radial_columns()
    rec = (reconstruction[:, columns] * scale[columns]).view(len(target), FFT_SCALES, RADIAL_BINS)
    tgt = (target[:, columns] * scale[columns]).view(len(target), FFT_SCALES, RADIAL_BINS)
    return ((rec.diff(dim=2) - tgt.diff(dim=2)) ** 2).mean(dim=(1, 2))


@register_member("frequency-vae")
class FrequencyVAE(TorchMember[SpectrumVAE]):
    features = ("fft_multiscale",)
    summary = "VAE over multi-scale FFT magnitude and phase with a spectral consistency loss; reconstruction error"
    epochs = 30
    lr = 2e-3

    def build(self) -> SpectrumVAE:
        return SpectrumVAE(self.config["width"], self.config.get("hidden", 64), self.config.get("latent", 8))

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.module.standardise(batch)
        reconstruction, mu, log_var = self.module(x, sample=True)
        kl = -0.5 * (1 + log_var - mu ** 2 - log_var.exp()).sum(dim=1)
        consistency = spectral_consistency(reconstruction, x, self.module.standardise.std)
        return (((reconstruction - x) ** 2).mean(dim=1) + KL_WEIGHT * kl / x.shape[1]
                + CONSISTENCY_WEIGHT * consistency).mean()

    def score(self, bank: FeatureBank) -> np.ndarray:
        def error(batch: torch.Tensor) -> torch.Tensor:
            x = self.module.standardise(batch)
            reconstruction, _, _ = self.module(x, sample=False)
            return ((reconstruction - x) ** 2).mean(dim=1)

        return score_in_batches(error, self.tensor(bank), self.device)
