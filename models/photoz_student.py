"""A small network that serves the host-only photo-z: the encoder's host path, distilled.

Why: the stream serves the photo-z from the host's magnitudes alone
(:meth:`~models.model.MultimodalModel.photoz_from_host`), and that costs a second pass of the whole
encoder for every new host: at batch 64 on one CPU thread, ~250 µs per alert on top of ~400 µs for
the main pass (``alertbroker bench models``: 1,535 alerts/s with new hosts, 2,461 with known ones).
The output depends on six magnitudes and their errors only, so an MLP of ~20,000 weights can
reproduce it. :class:`HostPhotozStudent` is that MLP, trained to match the teacher's calibrated
mixture (the cross-entropy of the student's mixture on redshifts drawn from the teacher's) on the
DC2 training galaxies the teacher's photo-z head learned from, each seen many times with its
magnitudes redrawn within their errors and some bands dropped (served hosts miss bands).

``alertbroker train-photoz-student`` (:mod:`models.photoz_student_train`) adds one to a checkpoint;
a checkpoint with one serves it, a checkpoint without one serves the encoder's host path.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from broker.batch import BANDS
from broker.tokens import HOST_KIND_MAG
from models.heads import MixtureHead

N_BANDS = len(BANDS)  # host magnitude slots 0..N_BANDS-1 (broker.features.host_tokens)
#: Inputs per host: per band the magnitude, its error and whether it is there, and the 5 adjacent colours.
N_INPUTS = 3 * N_BANDS + N_BANDS - 1
MAG_CENTER, MAG_SCALE = 24.0, 2.0


def student_inputs(host: Tensor, host_mask: Tensor) -> Tensor:
    """(n, :data:`N_INPUTS`) network inputs from host tokens (n, H, 4) and their mask (n, H).

    Only the magnitude tokens (slots ``0..5``, kind ``HOST_KIND_MAG``) are read, as by the teacher's
    served path; a missing band is zero with its flag off, and a colour needs both of its bands.
    """
    tok, mask = host[:, :N_BANDS].float(), host_mask[:, :N_BANDS] & (host[:, :N_BANDS, 0] == HOST_KIND_MAG)
    on = mask.float()
    mag = torch.where(mask, (tok[..., 2] - MAG_CENTER) / MAG_SCALE, 0.0)
    err = torch.where(mask, torch.log10(tok[..., 3].clamp(1e-3, 10.0)), 0.0)
    both = mask[:, :-1] & mask[:, 1:]
    colour = torch.where(both, tok[:, :-1, 2] - tok[:, 1:, 2], 0.0)
    return torch.cat([mag, err, on, colour], 1)


class HostPhotozStudent(nn.Module):
    """Photo-z mixture (``logw, mu, sigma``, each (n, M)) from host magnitude tokens, calibrated.

    Parameters
    ----------
    n_components : int
        Gaussians in the mixture (the teacher's ``n_components``).
    hidden : int
        Width of the two hidden layers.
    """

    def __init__(self, n_components: int, hidden: int) -> None:
        super().__init__()
        self.head = MixtureHead(N_INPUTS, hidden, n_components)

    def forward(self, host: Tensor, host_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mixture of each host (n, H, 4) with mask (n, H); sigmas need no further scaling."""
        return self.head(student_inputs(host, host_mask))


def augment(host: Tensor, host_mask: Tensor, gen: torch.Generator, drop: float = 0.1,
            noise: float = 1.5) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A copy of host tokens with magnitudes redrawn (``N(0, k * err)``, ``k ~ U(0, noise)``) and bands
    dropped with probability ``drop`` (at least two are kept)."""
    host, mask = host.clone(), host_mask.clone()
    n = host.shape[0]
    k = torch.rand(n, 1, generator=gen) * noise
    host[:, :N_BANDS, 2] += torch.randn(n, N_BANDS, generator=gen) * host[:, :N_BANDS, 3] * k
    drop_it = (torch.rand(n, N_BANDS, generator=gen) < drop) & mask[:, :N_BANDS]
    keep_two = (mask[:, :N_BANDS] & ~drop_it).sum(1, keepdim=True) >= 2
    mask[:, :N_BANDS] &= ~(drop_it & keep_two)
    host[~mask] = 0.0
    return host, mask


def sample_mixture(logw: Tensor, mu: Tensor, sigma: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """``k`` draws (n, k) from each row's mixture."""
    comp = torch.multinomial(logw.exp(), k, replacement=True, generator=gen)
    return mu.gather(1, comp) + sigma.gather(1, comp) * torch.randn(comp.shape, generator=gen)


def distillation_loss(student: tuple[Tensor, Tensor, Tensor], z: Tensor) -> Tensor:
    """Mean negative log likelihood of teacher draws ``z`` (n, k) under the student's mixtures (n, M)."""
    logw, mu, sigma = (t[:, None, :] for t in student)
    lp = -0.5 * ((z[..., None] - mu) / sigma) ** 2 - torch.log(sigma)
    return -torch.logsumexp(logw + lp, -1).mean()
