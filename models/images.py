"""Cutouts as a modality (after Mantis Shrimp and PICZL): patch tokens and a real/bogus head.

The three stamps of an alert (difference, science, template; :mod:`broker.cutouts` puts them in
noise units) are cut into ``IMG_PATCH x IMG_PATCH`` patches, as a ViT does, and each patch of the
three channels becomes one token: a linear map of its ``3 * IMG_PATCH**2`` pixels (a strided
convolution) through a small MLP, plus a learned position embedding (where in the stamp) and an
image-type embedding. The Perceiver latents attend to them beside the light-curve, host and feature
tokens, so an alert without cutouts (``img_mask`` False) is an alert with that modality masked, as
for a missing host.

Shapes::

    img (n, 3, IMG_SIZE, IMG_SIZE) float32, img_mask (n,) bool -> tokens (n, G, d), mask (n, G)
    G = (IMG_SIZE // IMG_PATCH) ** 2

Why patches and not a CNN: the stamps are tiny (30 x 30), the question per patch is local (a
point source, a dipole, a sharp cosmic ray, a host's light), and 25 tokens keep the cross-attention
cost near a light curve's. Why the real/bogus head reads the whole trunk: the light curve says
"this point repeats with a transient's shape", the difference image says "this is PSF-shaped";
neither alone is the answer at the first detection.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from broker.tokens import IMG_CHANNELS, IMG_PATCH, IMG_SIZE

#: Image tokens per alert.
N_PATCHES = (IMG_SIZE // IMG_PATCH) ** 2


class PatchEmbedding(nn.Module):
    """Stamps (n, C, S, S) -> patch tokens (n, N_PATCHES, d); see the module docstring."""

    def __init__(self, d: int) -> None:
        super().__init__()
        if IMG_SIZE % IMG_PATCH:
            raise ValueError(f"IMG_SIZE {IMG_SIZE} is not a multiple of IMG_PATCH {IMG_PATCH}")
        self.proj = nn.Conv2d(len(IMG_CHANNELS), d, kernel_size=IMG_PATCH, stride=IMG_PATCH)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(d, d))
        self.pos = nn.Parameter(torch.randn(N_PATCHES, d) * 0.02)
        self.type_emb = nn.Parameter(torch.randn(d) * 0.02)

    def forward(self, img: Tensor, img_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(n, C, S, S), (n,) -> tokens (n, G, d) and their mask (n, G)."""
        x = self.proj(torch.nan_to_num(img, 0.0, 0.0, 0.0)).flatten(2).transpose(1, 2)
        tok = self.mlp(x) + x + self.pos + self.type_emb
        return tok, img_mask[:, None].expand(-1, N_PATCHES)


class RealBogusHead(nn.Module):
    """P(real) from the trunk (n, 2d) -> logit (n,); a temperature buffer calibrates it."""

    temperature: Tensor

    def __init__(self, d_trunk: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_trunk, d_trunk // 2), nn.GELU(), nn.Linear(d_trunk // 2, 1))
        self.register_buffer("temperature", torch.ones(()))

    def forward(self, trunk: Tensor) -> Tensor:
        """Uncalibrated logit of "real", (n,)."""
        return self.net(trunk).squeeze(-1)

    def probability(self, logit: Tensor) -> Tensor:
        """Calibrated P(real), (n,)."""
        return torch.sigmoid(logit.float() / self.temperature)


def fit_binary_temperature(logit: Tensor, real: Tensor) -> float:
    """The temperature minimising the validation log-loss of ``sigmoid(logit / T)`` (grid search)."""
    grid = torch.exp(torch.linspace(-2.0, 2.0, 81))
    y = real.float()
    losses = [nn.functional.binary_cross_entropy_with_logits(logit.float() / t, y).item() for t in grid]
    return float(grid[int(torch.tensor(losses).argmin())])
