"""The WBDiT network: CRATE block algebra (tied-QKV MSSA, ISTA step), adaLN-Zero, patching, DiT ablation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from flowsci.domains.singlecell.model import CrateBlock, DiTBlock, WBDiT, sincos_positions


def test_ista_step_closed_form():
    blk = CrateBlock(8, 2, step=0.1, lam=0.1)
    z = torch.randn(3, 5, 8)
    d = blk.dictionary.detach()
    expected = F.relu(z + 0.1 * torch.einsum("ij,bni->bnj", d, z - torch.einsum("ij,bnj->bni", d, z)) - 0.01)
    torch.testing.assert_close(blk.ff(z), expected)
    # D = I: the LASSO gradient vanishes and ISTA is the non-negative soft threshold
    with torch.no_grad():
        blk.dictionary.copy_(torch.eye(8))
    torch.testing.assert_close(blk.ff(z), F.relu(z - 0.01))


def test_mssa_ties_query_key_value():
    blk = CrateBlock(8, 2)
    h = torch.randn(2, 4, 8)
    w = blk.proj(h).reshape(2, 4, 2, 4).transpose(1, 2)  # [B, heads, N, d_h]
    attn = torch.softmax(w @ w.transpose(-1, -2) / math.sqrt(4), dim=-1)
    expected = blk.out((attn @ w).transpose(1, 2).reshape(2, 4, 8))
    torch.testing.assert_close(blk.attn(h), expected)
    assert not hasattr(blk, "qkv")  # one projection U only


def test_crate_block_has_fewer_parameters_than_dit_block():
    crate = sum(p.numel() for p in CrateBlock(64, 4).parameters())
    dit = sum(p.numel() for p in DiTBlock(64, 4).parameters())
    adaln = 64 * 6 * 64 + 6 * 64
    # MSSA U + output (2 d^2 + d) + dictionary d^2  vs  QKV + output + 4x MLP (12 d^2 + ...)
    assert crate - adaln == 3 * 64 * 64 + 64
    assert dit - adaln == 12 * 64 * 64 + 3 * 64 + 64 + 4 * 64 + 64


@pytest.mark.parametrize("block", ["crate", "dit"])
def test_wbdit_shapes_padding_and_zero_init(block):
    net = WBDiT(n_genes=37, num_classes=3, patch=5, hidden=16, depth=2, heads=2, block=block)
    assert net.tokens == 8
    x, t, y = torch.randn(4, 37), torch.rand(4), torch.tensor([0, 1, 2, 3])  # 3 = null label
    out = net(x, t, y)
    assert out.shape == (4, 37)
    torch.testing.assert_close(out, torch.zeros_like(out))  # adaLN-Zero: the network starts at 0
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = net(x, t, y)
    assert out.abs().sum() > 0
    # the label changes the output; padding genes never leak into real ones
    assert not torch.allclose(out, net(x, t, torch.tensor([1, 1, 1, 1])))
    assert WBDiT(**net.config).config == net.config


def test_wbdit_rejects_wrong_gene_count_and_bad_config():
    net = WBDiT(n_genes=20, patch=4, hidden=8, depth=1, heads=2)
    with pytest.raises(ValueError, match="20 genes"):
        net(torch.randn(2, 21), torch.rand(2))
    with pytest.raises(ValueError):
        WBDiT(hidden=10, heads=4)
    with pytest.raises(ValueError):
        WBDiT(block="mlp")


def test_sincos_positions():
    pos = sincos_positions(7, 6)
    assert pos.shape == (7, 6)
    torch.testing.assert_close(pos[0], torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(pos[:, :3] ** 2 + pos[:, 3:] ** 2, torch.ones(7, 3))
