"""Perceiver-style multimodal encoder over masked light-curve, host and feature tokens.

Every modality is a padded, masked token set (layout: :mod:`broker.tokens`). Each
token is embedded by its *type* into one ``d``-dimensional space; a small learned
latent array (``n_latents`` x ``d``) cross-attends once to the concatenated set
(plus one always-visible learned *null* token, so an alert whose tokens are all
masked still has a defined output), then ``n_blocks`` latent self-attention
blocks run, and the latents are mean-pooled into one embedding per alert. The
cross-attention has one head and no key/value LayerNorm, so it can be factored
(:func:`models.attention.factored_cross_attention`): no token is projected to a
key or a value, and a light-curve token costs its embedding's first layer and two
``n_latents x d`` products.

Shapes for a batch of ``n`` alerts::

    lc   (n, L, 5)  lc_mask   (n, L)  bool, True = real token
    host (n, H, 4)  host_mask (n, H)
    feat (n, F, 2)  feat_mask (n, F)
    ->   embedding (n, d)

Masked tokens receive ``-inf`` attention logits, so a padded token (or a padded
slot of any value, NaN included) changes nothing. Summary features are grouped
into a few tokens (see :class:`TokenEmbedding`) to keep the token count, and so
the cost, close to the light curve's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from broker.features.registry import FEATURE_INDEX, FEATURE_NAMES
from broker.tokens import HOST_KIND_DLR, HOST_KIND_MAG, HOST_KIND_SEP
from models.attention import Attention, Block, factored_cross_attention
from models.images import PatchEmbedding


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture hyper-parameters (stored in checkpoints).

    Attributes
    ----------
    d_model : int
        Width of tokens and latents.
    n_latents : int
        Size of the latent array.
    n_blocks : int
        Latent self-attention blocks.
    n_heads : int
        Attention heads (cross and self).
    n_features : int
        Number of summary features the model reads (``F``); must equal ``len(feature_names)``.
    feature_names : tuple of str
        The summary features the model reads, in slot order, by registry name
        (:data:`broker.features.registry.FEATURE_NAMES`; all of them by default). Tokens
        are matched to slots by name through the registry, never by position, and a
        checkpoint stores the names, so a registry change cannot silently shift inputs.
    n_fourier : int
        Fourier frequencies used to embed light-curve ``dt``.
    feat_group : int
        Summary features per feature token (consecutive ids, i.e. one family of
        statistics or one band); ``ceil(n_features / feat_group)`` feature tokens.
    dropout : float
        Dropout in the latent blocks (training only).
    images : bool
        Read the cutouts as patch tokens (:mod:`models.images`); checkpoints written before
        cutouts were a modality do not have them.
    """

    d_model: int = 64
    n_latents: int = 16
    n_blocks: int = 2
    n_heads: int = 4
    n_features: int = len(FEATURE_NAMES)
    n_fourier: int = 8
    feat_group: int = 16
    dropout: float = 0.0
    feature_names: tuple[str, ...] = FEATURE_NAMES
    images: bool = False

    def __post_init__(self) -> None:
        # Why: the encoder once read 243 of 291 features because n_features was a literal and
        # ids past it were dropped without a word. The names are now the contract; the count
        # is derived from them and a disagreement is an error, not a truncation.
        names = tuple(self.feature_names)
        object.__setattr__(self, "feature_names", names)
        if self.n_features != len(names):
            raise ValueError(f"n_features={self.n_features} but {len(names)} feature_names: the names are the "
                             "contract (a checkpoint written before they were stored must be upgraded)")
        unknown = [n for n in names if n not in FEATURE_INDEX]
        if unknown or len(set(names)) != len(names):
            raise ValueError(f"feature_names must be distinct registry features; unknown: {unknown[:5]}")

    def to_dict(self) -> dict[str, int | float | list[str]]:
        """Plain dict (for checkpoints)."""
        d = asdict(self)
        d["feature_names"] = list(self.feature_names)
        return d


#: One-hot band slots of a light-curve token: u..y, and one for anything else.
BAND_SLOTS = 7


def time_band_features(dt: Tensor, band: Tensor, freqs: Tensor) -> tuple[Tensor, Tensor]:
    """Where and when a light-curve token sits, as network inputs.

    ``dt`` (..., 1) -> ``[sin(dt f), cos(dt f), dt / 5]`` (..., 2F + 1); ``band``
    (...) -> one-hot (..., 7) (index 6 for anything outside 0..5).
    """
    ang = dt * freqs
    onehot = F.one_hot(band.long().clamp(-1, 5) % BAND_SLOTS, BAND_SLOTS)
    return torch.cat([torch.sin(ang), torch.cos(ang), dt / 5.0], dim=-1), onehot


class TokenEmbedding(nn.Module):
    """Type-specific embeddings of the three token sets into one space.

    * light curve: Fourier features of ``dt``, ``flux``, ``log1p(flux_err)``,
      ``is_detection`` and the one-hot band through a small ReLU MLP;
    * host: kind and band embeddings plus a linear map of the normalised value
      (magnitudes ``(m - 23) / 2``, separations ``log1p``) and error;
    * features: ``G = ceil(F / feat_group)`` tokens; token ``g`` is a group-specific
      linear map of the standardised values and mask bits of features
      ``g * feat_group ..``, plus a group embedding (a masked feature enters as
      value 0, mask 0; a group with no real feature is a masked token). The
      standardisation buffers are fitted on training data.
    """

    # registered buffers (typed for mypy)
    freqs: Tensor
    feat_mean: Tensor
    feat_std: Tensor
    feat_slot: Tensor

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.type_emb = nn.Parameter(torch.zeros(3, d))
        freqs = torch.exp(torch.linspace(math.log(0.3), math.log(30.0), cfg.n_fourier))
        self.register_buffer("freqs", freqs)
        self.lc_mlp = nn.Sequential(nn.Linear(2 * cfg.n_fourier + 11, d), nn.ReLU(), nn.Linear(d, d))
        self.band_emb = nn.Embedding(7, d)
        self.kind_emb = nn.Embedding(3, d)
        self.host_lin = nn.Linear(2, d)
        self.n_groups = -(-cfg.n_features // cfg.feat_group)
        self.group = cfg.feat_group
        self.feat_w = nn.Parameter(torch.randn(self.n_groups, 2 * cfg.feat_group, d)
                                   / math.sqrt(2 * cfg.feat_group))
        self.feat_b = nn.Parameter(torch.zeros(self.n_groups, d))
        self.register_buffer("feat_mean", torch.zeros(cfg.n_features))
        self.register_buffer("feat_std", torch.ones(cfg.n_features))
        # registry id -> model slot (-1: not read). Derived from the names, so not saved.
        slot = torch.full((len(FEATURE_NAMES),), -1, dtype=torch.long)
        for j, name in enumerate(cfg.feature_names):
            slot[FEATURE_INDEX[name]] = j
        self.register_buffer("feat_slot", slot, persistent=False)
        nn.init.normal_(self.type_emb, std=0.02)

    def lc_hidden(self, lc: Tensor) -> Tensor:
        """(n, L, 5) -> (n, L, d): the light-curve MLP up to its last linear layer (``lc_mlp[2]``).

        The first layer's input is ``[sin, cos, dt / 5, flux / 5, log1p(err), is_detection,
        one-hot band]``; the one-hot part of the product is a row lookup of that layer's band
        columns, which is cheaper than building the one-hot (same result to float rounding).
        """
        first = cast(nn.Linear, self.lc_mlp[0])
        k = first.in_features - BAND_SLOTS
        dt = lc[..., 0:1]
        ang = dt * self.freqs
        cont = torch.cat([torch.sin(ang), torch.cos(ang), dt / 5.0, lc[..., 2:3] / 5.0,
                          torch.log1p(lc[..., 3:4].clamp(min=0.0)), lc[..., 4:5]], -1)
        band = lc[..., 1].long().clamp(-1, 5) % BAND_SLOTS
        # each token's band row (bias folded in: every token has exactly one band), then the continuous
        # part added into it by one addmm and the ReLU in place: one (n, L, d) buffer instead of four
        # (~1.7x faster at n = 200, L = 128). Contiguous weight copies (tiny): strided ones are slower.
        rows = F.embedding(band.reshape(-1), (first.weight[:, k:].T + first.bias).contiguous())
        pre = rows.addmm_(cont.reshape(-1, k), first.weight[:, :k].T.contiguous())
        return pre.relu_().view(*band.shape, first.out_features)

    def host(self, host: Tensor) -> Tensor:
        """(n, H, 4) -> (n, H, d)."""
        kind = host[..., 0].long().clamp(0, 2)
        band = host[..., 1].long().clamp(-1, 5) % 7
        val = host[..., 2]
        norm = torch.where(kind == HOST_KIND_MAG, (val - 23.0) / 2.0,
                           torch.log1p(val.clamp(min=0.0)))
        norm = torch.where((kind == HOST_KIND_SEP) | (kind == HOST_KIND_DLR) | (kind == HOST_KIND_MAG),
                           norm, torch.zeros_like(norm))
        x = torch.stack([norm, torch.log1p(host[..., 3].clamp(min=0.0)) * 10.0], dim=-1)
        return self.host_lin(x) + self.kind_emb(kind) + self.band_emb(band) + self.type_emb[1]

    def feat(self, feat: Tensor, feat_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(n, T, 2), (n, T) -> group tokens (n, G, d) and their mask (n, G).

        A token's ``feature_id`` is a registry id; it is mapped to the model's slot by name
        (``feat_slot``). Features the model does not read (none, for a model built on the
        whole registry) are masked, and the predictor says which ones at load time.
        """
        n, nf = feat_mask.shape
        n_reg = self.feat_slot.shape[0]
        rid = feat[..., 0].long()
        slot = self.feat_slot[rid.clamp(0, n_reg - 1)]
        m = feat_mask & (rid >= 0) & (rid < n_reg) & (slot >= 0)
        fid = slot.clamp(min=0)
        v = ((feat[..., 1] - self.feat_mean[fid]) / self.feat_std[fid]).clamp(-8.0, 8.0)
        v = torch.where(m, v, torch.zeros_like(v))
        slots = self.n_groups * self.group
        vals = feat.new_zeros(n, slots).scatter_add(1, fid, v)
        bits = feat.new_zeros(n, slots).scatter_add(1, fid, m.to(feat.dtype))
        x = torch.stack([vals.view(n, self.n_groups, self.group),
                         bits.view(n, self.n_groups, self.group)], -1).flatten(2)
        tok = torch.einsum("ngi,gid->ngd", x, self.feat_w) + self.feat_b + self.type_emb[2]
        return tok, bits.view(n, self.n_groups, self.group).sum(-1) > 0


class PerceiverEncoder(nn.Module):
    """Latent array cross-attending to masked multimodal tokens; see the module docstring."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = TokenEmbedding(cfg)
        self.latents = nn.Parameter(torch.randn(cfg.n_latents, d) * 0.02)
        self.null = nn.Parameter(torch.randn(1, d) * 0.02)
        self.q_norm = nn.LayerNorm(d)
        self.cross = Attention(d, 1)
        self.cross_mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(),
                                       nn.Linear(2 * d, d))
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_blocks))
        self.out_norm = nn.LayerNorm(d)
        self.patches = PatchEmbedding(d) if cfg.images else None

    def forward(self, lc: Tensor, lc_mask: Tensor, host: Tensor, host_mask: Tensor,
                feat: Tensor, feat_mask: Tensor, img: Tensor | None = None,
                img_mask: Tensor | None = None) -> Tensor:
        """Encode a batch.

        Parameters
        ----------
        lc, host, feat : Tensor (n, L, 5), (n, H, 4), (n, F, 2)
            Token sets (any of ``L``, ``H``, ``F`` may be 0).
        lc_mask, host_mask, feat_mask : Tensor of bool (n, L), (n, H), (n, F)
            True marks a real token.
        img, img_mask : Tensor (n, 3, S, S) and bool (n,), optional
            Cutout stamps (:mod:`models.images`); read only by an encoder built with ``images``,
            and absent or masked stamps are a masked modality.

        Returns
        -------
        Tensor (n, d)
            Pooled alert embedding.
        """
        n = lc.shape[0]
        lc, host, feat = (torch.nan_to_num(t, 0.0, 0.0, 0.0) for t in (lc, host, feat))
        ftok, fmask = self.embed.feat(feat, feat_mask)
        null = self.null.expand(n, 1, -1)
        tokens = torch.cat([null, self.embed.host(host), ftok], 1)
        ones = torch.ones(n, 1, dtype=torch.bool, device=lc.device)
        mask = torch.cat([ones, host_mask, fmask], 1)
        if self.patches is not None and img is not None and img_mask is not None:
            itok, imask = self.patches(img, img_mask)
            tokens, mask = torch.cat([tokens, itok], 1), torch.cat([mask, imask], 1)
        # every alert starts from the same latents, so the queries are computed once; the
        # light-curve tokens enter as their MLP's hidden layer (see models.attention)
        x = self.latents + factored_cross_attention(self.cross, self.q_norm(self.latents), tokens, mask,
                                                    self.embed.lc_hidden(lc), lc_mask,
                                                    cast(nn.Linear, self.embed.lc_mlp[2]))
        x = x + self.cross_mlp(x)
        for blk in self.blocks:
            x = blk(x)
        return self.out_norm(x.mean(1))
