import math

import pytest
import torch

from wm.models.fsq import FSQ

LEVELS = [[8, 5, 5, 5], [8, 6, 5], [7, 5, 5, 5, 5], [2], [3, 4]]


def grid_values(L: int) -> torch.Tensor:
    half = L // 2
    return (torch.arange(L) - half).float() / half


def uniform_cover(fsq: FSQ, n: int, gen: torch.Generator) -> torch.Tensor:
    """Inputs whose bounded values are uniform over the whole bounded range, so every cell has mass 1/K."""
    lo, hi = -fsq.half_l - fsq.offset, fsq.half_l - fsq.offset
    b = lo + (hi - lo) * torch.rand(n, fsq.dim, generator=gen, dtype=torch.float64)
    u = ((b + fsq.offset) / fsq.half_l).clamp(-1 + 1e-9, 1 - 1e-9)
    return (torch.atanh(u) - fsq.shift).float()


@pytest.mark.parametrize("levels", LEVELS)
def test_outputs_on_grid_and_round_trip(levels):
    fsq = FSQ(levels)
    assert fsq.dim == len(levels) and fsq.codebook_size == math.prod(levels)
    z = torch.randn(4096, 3, len(levels), generator=torch.Generator().manual_seed(0)) * 3
    codes = fsq(z)
    assert codes.shape == z.shape
    for d, L in enumerate(levels):
        on_grid = (codes[..., d, None] == grid_values(L)).any(-1)
        assert on_grid.all(), f"dim {d} (L={L}) off the grid"
        assert codes[..., d].min() >= -1 and codes[..., d].max() <= 1
    idx = fsq.codes_to_indices(codes)
    assert idx.shape == z.shape[:-1] and idx.dtype == torch.int64
    assert idx.min() >= 0 and idx.max() < fsq.codebook_size
    assert torch.equal(fsq.indices_to_codes(idx), codes)


@pytest.mark.parametrize("levels", LEVELS)
def test_index_bijection_over_all_indices(levels):
    fsq = FSQ(levels)
    K = fsq.codebook_size
    all_idx = torch.arange(K)
    codes = fsq.all_codes()
    assert codes.shape == (K, len(levels))
    assert torch.equal(codes, fsq.indices_to_codes(all_idx))
    assert torch.equal(fsq.codes_to_indices(codes), all_idx)
    assert torch.unique(codes, dim=0).shape[0] == K
    # Every code is a fixed point of the quantizer's grid: feeding codes back through round is stable.
    for d, L in enumerate(levels):
        assert set(codes[:, d].tolist()) == set(grid_values(L).tolist())


@pytest.mark.parametrize("levels", LEVELS)
def test_every_index_reachable(levels):
    fsq = FSQ(levels)
    K = fsq.codebook_size
    gen = torch.Generator().manual_seed(1)
    z = uniform_cover(fsq, max(200 * K, 1000), gen)
    idx = fsq.codes_to_indices(fsq(z))
    assert torch.unique(idx).numel() == K


def test_even_level_offset():
    fsq = FSQ([8, 6, 2])
    # f(0) = 0 thanks to the shift, so the zero vector maps to the zero code...
    assert torch.equal(fsq(torch.zeros(3)), torch.zeros(3))
    # ...and the asymmetric extremes {-L/2, L/2 - 1} / (L/2) are both reached.
    assert torch.allclose(fsq(torch.full((3,), -20.0)), torch.tensor([-1.0, -1.0, -1.0]))
    assert torch.allclose(fsq(torch.full((3,), 20.0)), torch.tensor([0.75, 2 / 3, 0.0]))
    # The bound is centred half a step below zero for even L, symmetric for odd L.
    odd = FSQ([5])
    assert torch.allclose(odd.bound(torch.tensor([[-50.0], [50.0]])).sum(), torch.tensor(0.0))
    lo, hi = fsq.bound(torch.full((2, 3), -50.0))[0], fsq.bound(torch.full((2, 3), 50.0))[0]
    assert torch.allclose(lo + hi, torch.full((3,), -1.0))


def test_straight_through_gradient():
    fsq = FSQ([8, 5, 5, 5])
    z = torch.randn(64, 4, requires_grad=True)
    (fsq(z) * torch.randn(64, 4)).sum().backward()
    assert z.grad is not None and (z.grad != 0).all()


BUFFERS = ("levels", "basis", "half_width", "half_l", "offset", "shift")


def test_buffers_non_persistent_and_movable():
    """The constants are buffers: `.to()` carries them with the module (plain tensor attributes would stay
    behind on the CPU in float32), yet they stay out of the state dict (derived from the levels)."""
    fsq = FSQ([8, 5, 5, 5])
    assert fsq.state_dict() == {}
    assert set(BUFFERS) <= {name for name, _ in fsq.named_buffers()}
    z = torch.randn(256, 4, generator=torch.Generator().manual_seed(0)) * 2
    codes32 = fsq(z)

    # dtype: the float constants follow the module, the integer ones keep their dtype
    fsq64 = FSQ([8, 5, 5, 5]).to(torch.float64)
    for name in BUFFERS:
        expected = torch.int64 if name in ("levels", "basis") else torch.float64
        assert getattr(fsq64, name).dtype == expected, name
    codes64 = fsq64(z.double())
    assert codes64.dtype == torch.float64
    assert torch.equal(fsq64.codes_to_indices(codes64), fsq.codes_to_indices(codes32))
    all64 = fsq64.all_codes()
    assert all64.dtype == torch.float64 and torch.equal(all64.float(), fsq.all_codes())

    # device: every constant moves (the meta device stands in for a GPU)
    meta = FSQ([8, 5, 5, 5]).to("meta")
    for name in BUFFERS:
        assert getattr(meta, name).device.type == "meta", name
    assert meta(torch.zeros(3, 4, device="meta")).device.type == "meta"
    assert meta.all_codes().device.type == "meta"
