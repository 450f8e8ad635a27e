"""Finite Scalar Quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple",
arXiv 2309.15505).

Each of the D code dimensions is squashed into a bounded interval and rounded to one of L_d integer
levels; the implicit codebook is the product grid, of size K = prod(L_d). There is no learned codebook,
so no commitment loss and no codebook collapse (paper, Sec. 3).

Notation: D = number of dimensions (len(levels)), K = codebook size, ``...`` = any leading shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class FSQ(nn.Module):
    """Quantize (..., D) vectors onto the grid prod(levels); codes lie in [-1, 1].

    Dimension d with L levels takes the values {-(L//2), ..., L - 1 - L//2} / (L//2), e.g.
    L=8 -> {-4..3}/4 and L=5 -> {-1, -.5, 0, .5, 1}.
    """

    def __init__(self, levels: Sequence[int], eps: float = 1e-3) -> None:
        super().__init__()
        levels = [int(v) for v in levels]
        if len(levels) < 1 or any(v < 2 for v in levels):
            raise ValueError(f"FSQ levels must be a non-empty list of ints >= 2, got {levels}")
        self.levels_list = levels
        lv = torch.tensor(levels, dtype=torch.int64)
        # Mixed-radix place values: index = sum_d digit_d * prod(levels[:d]).
        basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.int64), dim=0)
        # Non-persistent: derived from the constructor argument, so checkpoints stay free of them,
        # yet .to(device) moves them with the module.
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.register_buffer("half_width", (lv // 2).to(torch.float32), persistent=False)
        # Constants of bound(), precomputed in float32 (atanh near 1 for L=2 needs the precision).
        half_l = (lv.to(torch.float32) - 1) * (1 + eps) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        self.register_buffer("half_l", half_l, persistent=False)
        self.register_buffer("offset", offset, persistent=False)
        self.register_buffer("shift", torch.atanh(offset / half_l), persistent=False)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels_list)

    @property
    def dim(self) -> int:
        return len(self.levels_list)

    def bound(self, z: Tensor) -> Tensor:
        """Squash z into (-half_l - offset, half_l - offset) so rounding yields exactly L integers.

        f(z) = tanh(z + shift) * half_l - offset, as in the paper's reference code (Mentzer et al. 2023,
        appendix) and lucidrains' vector-quantize-pytorch. For even L the integer grid {-L/2..L/2-1} is
        not symmetric about 0, so the tanh output is moved down by half a step (offset = 0.5); without it
        only L-1 of the L levels are reachable per dimension (744 of 1000 codes for [8,5,5,5]).
        shift = atanh(offset / half_l) keeps f(0) = 0. eps widens the range a little past the outermost
        half-integers so the extreme levels are actually reached.
        """
        return torch.tanh(z + self.shift) * self.half_l - self.offset

    def forward(self, z: Tensor) -> Tensor:
        """(..., D) float -> (..., D) codes in [-1, 1]; gradients pass straight through the rounding."""
        assert z.shape[-1] == self.dim, f"FSQ expects (..., {self.dim}), got {tuple(z.shape)}"
        b = self.bound(z)
        # Straight-through estimator (Bengio et al. 2013; FSQ paper Sec. 3): round forward, identity backward.
        q = b + (torch.round(b) - b).detach()
        return q / self.half_width

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """(..., D) codes -> (...) int64 indices in [0, K)."""
        assert codes.shape[-1] == self.dim, f"expected (..., {self.dim}), got {tuple(codes.shape)}"
        # round() absorbs float error from the division in forward(); digits are in {0..L-1}.
        digits = torch.round(codes * self.half_width + self.half_width).long()  # (..., D)
        return (digits * self.basis).sum(dim=-1)  # (...)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """(...) integer indices in [0, K) -> (..., D) float32 codes."""
        digits = (indices.long().unsqueeze(-1) // self.basis) % self.levels  # (..., D)
        return (digits.to(torch.float32) - self.half_width) / self.half_width

    def all_codes(self) -> Tensor:
        """The whole implicit codebook, (K, D), row k being the code of index k."""
        return self.indices_to_codes(torch.arange(self.codebook_size, device=self.basis.device))
