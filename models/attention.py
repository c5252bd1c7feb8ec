"""Attention for the Perceiver encoder: multi-head attention, the latent block, and the
cross-attention factored so that no token is projected to a key or a value.

Why the factoring: the Perceiver's one cross-attention is the only part of the model whose
cost grows with the number of tokens, and with one head it can be rearranged exactly. For queries ``q`` and a
token ``t``::

    q . (W_k t + b_k) = (W_k^T q) . t + q . b_k      (the last term is the same for every
                                                      token, so softmax drops it)
    sum_t a_t (W_v t + b_v) = W_v (sum_t a_t t) + b_v (the weights sum to 1)

and a light-curve token is itself ``t = W_2 h + b_2`` (the last layer of its embedding MLP), so
its logit is ``(W_2^T W_k^T q) . h + (W_k^T q) . b_2`` and its share of the value sum is
``W_2 (sum a h) + b_2 sum a``. Per light-curve token this leaves the embedding's first layer and
two ``Q x d`` products; projecting it cost three ``d x d`` products more (``W_2``, ``W_k``,
``W_v``): ~4x fewer multiply-adds per token at ``d = 64``, ``Q = 16``. The queries are the same
learned latents for every alert, so their side is computed once per batch. The result equals
the projected form up to float rounding (``tests/test_models_fastpaths.py``), and the
parameters, so the checkpoints, are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head attention of queries ``x`` (n, Q, d) over ``kv`` (n, T, d)."""

    def __init__(self, d: int, n_heads: int) -> None:
        super().__init__()
        self.h = n_heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.out = nn.Linear(d, d)

    def forward(self, x: Tensor, kv: Tensor, mask: Tensor | None = None) -> Tensor:
        """``mask`` (n, T) bool, True = attend; None attends to everything."""
        n, q_len, d = x.shape
        t, hd = kv.shape[1], d // self.h
        q = self.q(x).view(n, q_len, self.h, hd).transpose(1, 2)
        k = self.k(kv).view(n, t, self.h, hd).transpose(1, 2)
        v = self.v(kv).view(n, t, self.h, hd).transpose(1, 2)
        m = None if mask is None else mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        return self.out(y.transpose(1, 2).reshape(n, q_len, d))


class Block(nn.Module):
    """Pre-norm transformer block over the latents."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n1 = nn.LayerNorm(d)
        self.att = Attention(d, n_heads)
        self.n2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(n, Q, d) -> (n, Q, d)."""
        h = self.n1(x)
        x = x + self.drop(self.att(h, h))
        return x + self.drop(self.mlp(self.n2(x)))



def factored_cross_attention(att: Attention, x: Tensor, tok: Tensor, tok_mask: Tensor, hidden: Tensor,
                             hidden_mask: Tensor, last: nn.Linear) -> Tensor:
    """One-head cross-attention of ``x`` over ``[tok ; last(hidden)]`` without forming keys or values.

    Parameters
    ----------
    att : Attention
        The cross-attention (one head: the factoring needs ``head dim = d``).
    x : Tensor (Q, d) or (n, Q, d)
        Queries (normalised latents); (Q, d) when every alert has the same ones, which
        makes the query side a one-off cost.
    tok, tok_mask : Tensor (n, T, d), bool (n, T)
        Embedded tokens and their mask (True = attend).
    hidden, hidden_mask : Tensor (n, L, e), bool (n, L)
        Hidden activations of tokens whose embedding ends in the linear layer ``last`` (e -> d).
    last : nn.Linear

    Returns
    -------
    Tensor (n, Q, d)
        Equal to ``att(x, cat([tok, last(hidden)], 1), cat([tok_mask, hidden_mask], 1))``.
    """
    if att.h != 1:
        raise ValueError(f"the factored cross-attention needs one head, got {att.h}")
    d = x.shape[-1]
    qk = (att.q(x) * d**-0.5) @ att.k.weight                  # (Q, d) or (n, Q, d): W_k^T q, scaled
    qh = qk @ last.weight                                      # (.., Q, e)
    # logits laid out (n, tokens, Q): with shared queries both products are single matrix products
    logits = torch.cat([tok @ qk.transpose(-1, -2),
                        hidden @ qh.transpose(-1, -2) + (qk @ last.bias).unsqueeze(-2)], 1)
    mask = torch.cat([tok_mask, hidden_mask], 1)[..., None]
    a = torch.softmax(logits.masked_fill(~mask, float("-inf")), 1).transpose(1, 2)  # (n, Q, T + L)
    a_tok, a_hid = a[..., : tok.shape[1]], a[..., tok.shape[1]:]
    mixed = (a_tok @ tok + (a_hid @ hidden) @ last.weight.T
             + a_hid.sum(-1, keepdim=True) * last.bias)        # sum_t a_t t, (n, Q, d)
    return att.out(att.v(mixed))
