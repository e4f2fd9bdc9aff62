"""The IPA frame network: SE(3) equivariance of predicted frames, masking, parameter counts."""

from __future__ import annotations

import pytest
import torch

from flowsci.domains.proteins.model import LENGTH_FEATS, InvariantPointAttention, IPAFrameNet, length_features
from flowsci.manifolds import quaternion_multiply, quaternion_to_matrix, random_quaternion

torch.set_num_threads(1)


def _inputs(b=2, n=12, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    trans = torch.randn(b, n, 3, generator=g, dtype=dtype)
    quat = random_quaternion((b, n), generator=g, dtype=dtype)
    x_sc = torch.randn(b, n, 3, generator=g, dtype=dtype)
    t = torch.rand(b, generator=g, dtype=dtype)
    return torch.cat([trans, quat], -1), t, x_sc


def _randomise(net: torch.nn.Module, seed: int) -> None:
    # the backbone updates are zero-initialised (output = input); perturb them so the test is not trivial
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in net.blocks:
            blk.bb_update.weight.copy_(0.1 * torch.randn(blk.bb_update.weight.shape, generator=g))
            blk.bb_update.bias.copy_(0.1 * torch.randn(blk.bb_update.bias.shape, generator=g))


@pytest.mark.parametrize(("centroid_feats", "length_feats"), [(False, False), (True, False), (False, True)])
def test_predicted_frames_are_se3_equivariant(centroid_feats, length_feats):
    torch.manual_seed(0)
    net = IPAFrameNet(
        c_s=32, c_z=16, c_hidden=8, num_heads=2, num_blocks=2, centroid_feats=centroid_feats, length_feats=length_feats
    )
    net = net.double().eval()
    _randomise(net, 1)
    x, t, x_sc = _inputs()
    mask = torch.ones(2, 12, dtype=torch.float64)
    mask[1, 9:] = 0
    g = torch.Generator().manual_seed(5)
    qg = random_quaternion((), generator=g, dtype=torch.float64)
    rg = quaternion_to_matrix(qg)
    tau = torch.randn(3, generator=g, dtype=torch.float64)

    def move(tr):
        return tr @ rg.T + tau

    x_g = torch.cat([move(x[..., :3]), quaternion_multiply(qg.expand(2, 12, 4), x[..., 3:])], -1)
    out = net(x, t, mask=mask, x_sc=x_sc)
    out_g = net(x_g, t, mask=mask, x_sc=move(x_sc))
    m = mask.bool()
    # outputs actually move away from the inputs (the network does something)
    assert (out[..., :3] - x[..., :3])[m].abs().max() > 1e-2
    assert torch.allclose(out_g[..., :3][m], move(out[..., :3])[m], atol=1e-9)
    r_out = quaternion_to_matrix(out[..., 3:])
    r_out_g = quaternion_to_matrix(out_g[..., 3:])
    assert torch.allclose(r_out_g[m], (rg @ r_out)[m], atol=1e-9)
    # a reflection is not a symmetry: the test can fail
    refl = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    out_r = net(torch.cat([x[..., :3] @ refl, x[..., 3:]], -1), t, mask=mask, x_sc=x_sc @ refl)
    assert not torch.allclose(out_r[..., :3][m], (out[..., :3] @ refl)[m], atol=1e-4)


def test_ipa_is_invariant_and_masked_residues_do_not_leak():
    torch.manual_seed(0)
    ipa = InvariantPointAttention(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_qk_points=3, num_v_points=4).double()
    g = torch.Generator().manual_seed(2)
    s = torch.randn(1, 7, 16, generator=g, dtype=torch.float64)
    z = torch.randn(1, 7, 7, 8, generator=g, dtype=torch.float64)
    q = random_quaternion((1, 7), generator=g, dtype=torch.float64)
    rot, tr = quaternion_to_matrix(q), torch.randn(1, 7, 3, generator=g, dtype=torch.float64)
    mask = torch.ones(1, 7, dtype=torch.float64)
    mask[0, 5:] = 0
    rg = quaternion_to_matrix(random_quaternion((), generator=g, dtype=torch.float64))
    a = ipa(s, z, rot, tr, mask)
    b = ipa(s, z, rg @ rot, tr @ rg.T + 3.0, mask)
    assert torch.allclose(a, b, atol=1e-10)
    # changing a padded residue changes nothing for the real ones
    s2, tr2 = s.clone(), tr.clone()
    s2[0, 6] += 5.0
    tr2[0, 6] += 10.0
    c = ipa(s2, z, rot, tr2, mask)
    assert torch.allclose(a[0, :5], c[0, :5], atol=1e-12)


@pytest.mark.parametrize("length_feats", [False, True])
def test_net_masked_padding_does_not_change_real_residues(length_feats):
    torch.manual_seed(0)
    net = IPAFrameNet(c_s=32, c_z=16, c_hidden=8, num_heads=2, num_blocks=2, length_feats=length_feats)
    net = net.double().eval()
    _randomise(net, 3)
    x, t, _ = _inputs(b=1, n=10)
    mask = torch.ones(1, 10, dtype=torch.float64)
    short = net(x[:, :7], t, mask=mask[:, :7])
    mask[0, 7:] = 0
    padded = net(x, t, mask=mask)
    assert torch.allclose(short, padded[:, :7], atol=1e-9)


def test_parameter_counts():
    tiny = sum(p.numel() for p in IPAFrameNet.tiny().parameters())
    paper = sum(p.numel() for p in IPAFrameNet.paper().parameters())
    assert 1e5 < tiny < 1e6
    assert 14e6 < paper < 20e6  # FrameFlow/ReQFlow report ~17 M


def test_grown_net_computes_the_same_function_and_then_differs():
    torch.manual_seed(0)
    net = IPAFrameNet(c_s=32, c_z=16, c_hidden=8, num_heads=2, num_blocks=2, relpos_k=4).double().eval()
    _randomise(net, 2)
    # 30 residues spread over ~60 A: offsets beyond ±4 and distances beyond 20 A occur, so the grown features matter
    x, t, x_sc = _inputs(n=30, seed=3)
    x = torch.cat([3.0 * x[..., :3], x[..., 3:]], -1)
    mask = torch.ones(2, 30, dtype=torch.float64)
    mask[1, 25:] = 0
    big = net.grown(num_blocks=3, relpos_k=10, max_dist=40.0, centroid_feats=True).eval()
    assert big.config["num_dist_bins"] == 43 and len(big.blocks) == 3 and big.relpos_k == 10 and big.centroid_feats
    assert sum(p.numel() for p in big.parameters()) > sum(p.numel() for p in net.parameters())
    ref = net(x, t, mask=mask, x_sc=x_sc)
    out = big(x, t, mask=mask, x_sc=x_sc)
    m = mask.bool()
    assert torch.allclose(out[m], ref[m], atol=1e-10)
    # the new distance bins are separate inputs: changing their weights changes the output (the test can fail)
    with torch.no_grad():
        big.edge_embed[0].weight[:, 2 * 10 + 1 + 30] += 1.0  # d_t bin 30 (~28.6 A), merged into "> 20 A" before
        big.blocks[-1].bb_update.bias.add_(0.1)  # the new block now moves frames
    out2 = big(x, t, mask=mask, x_sc=x_sc)
    assert (out2[m] - ref[m]).abs().max() > 1e-3
    with torch.no_grad():  # so do the centroid inputs once they have weights
        big.blocks[-1].bb_update.bias.sub_(0.1)
        big.edge_embed[0].weight[:, 2 * 10 + 1 + 30] -= 1.0
        assert torch.allclose(big(x, t, mask=mask, x_sc=x_sc)[m], ref[m], atol=1e-10)
        big.node_embed.weight[:, -4:] = 1.0
    assert (big(x, t, mask=mask, x_sc=x_sc)[m] - ref[m]).abs().max() > 1e-3


def test_grown_rejects_shrinking_and_off_grid_distances():
    net = IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=2)
    for kw in ({"num_blocks": 1}, {"relpos_k": 8}, {"max_dist": 10.0}, {"max_dist": 30.5}):
        with pytest.raises(ValueError, match="only enlarges"):
            net.grown(**kw)
    with pytest.raises(ValueError, match="only enlarges"):
        net.grown(centroid_feats=True).grown(centroid_feats=False)


def test_length_features_closed_form_equal_for_equal_lengths_and_blind_to_padding():
    mask = torch.zeros(3, 40, dtype=torch.float64)
    mask[0, :25] = 1  # 25 residues, 15 padding
    mask[1, :25] = 1
    mask[1, 30:] = 0.0  # same length, same padding pattern written differently
    mask[2, :40] = 1  # 40 residues, no padding
    f = length_features(mask)
    assert f.shape == (3, 40, LENGTH_FEATS)
    assert torch.allclose(f[0, 0, 0], torch.log(torch.tensor(0.25, dtype=torch.float64)))
    assert torch.allclose(f[2, 0, 0], torch.log(torch.tensor(0.40, dtype=torch.float64)))
    # sin/cos pairs: sin^2 + cos^2 = 1 for each of the 4 frequencies; the first is sin(25), cos(25)
    half = (LENGTH_FEATS - 1) // 2
    sc = f[0, 0, 1:]
    assert torch.allclose(sc[:half] ** 2 + sc[half:] ** 2, torch.ones(half, dtype=torch.float64))
    assert float(sc[0]) == pytest.approx(torch.sin(torch.tensor(25.0)).item(), abs=1e-6)
    # every real residue of a chain has the same row; padding rows are zero
    assert torch.equal(f[0, :25], f[0, :1].expand(25, -1)) and torch.equal(f[0, 25:], torch.zeros(15, LENGTH_FEATS))
    # equal lengths -> equal features, whatever the padding; the same chain without padding too
    assert torch.equal(f[0], f[1])
    assert torch.equal(length_features(mask[:1, :25])[0], f[0, :25])
    assert not torch.allclose(f[0, 0], f[2, 0])


def test_grown_length_feats_is_exact_then_tells_lengths_apart():
    torch.manual_seed(0)
    net = IPAFrameNet(c_s=32, c_z=16, c_hidden=8, num_heads=2, num_blocks=2, centroid_feats=True).double().eval()
    _randomise(net, 4)
    with torch.no_grad():  # the centroid columns carry weight, so a wrong column mapping would show
        net.node_embed.weight[:, -4:] = torch.randn(
            32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
        )
    x, t, x_sc = _inputs(n=20, seed=6)
    mask = torch.ones(2, 20, dtype=torch.float64)
    mask[1, 14:] = 0
    big = net.grown(length_feats=True).eval()
    assert big.length_feats and big.centroid_feats and big.config["length_feats"]
    assert big.node_embed.in_features == net.node_embed.in_features + LENGTH_FEATS
    m = mask.bool()
    ref = net(x, t, mask=mask, x_sc=x_sc)
    assert torch.allclose(big(x, t, mask=mask, x_sc=x_sc)[m], ref[m], atol=1e-12)  # zero weights: same sums
    with torch.no_grad():  # once the length columns have weights, the output depends on the chain length
        big.node_embed.weight[:, -LENGTH_FEATS:] = 1.0
    out = big(x, t, mask=mask, x_sc=x_sc)
    assert (out[m] - ref[m]).abs().max() > 1e-3
    # with weighted length inputs, chain 1 (14 residues padded to 20) still equals the same chain unpadded: the
    # features read N = 14 from the mask, not the padded width
    head = big(x[1:, :14], t[1:], mask=mask[1:, :14], x_sc=x_sc[1:, :14])
    assert torch.allclose(head[0], out[1, :14], atol=1e-9)
    with pytest.raises(ValueError, match="only enlarges"):
        big.grown(length_feats=False)


def test_config_without_length_feats_loads_as_before(tmp_path):
    from flowsci.checkpoint import save_module
    from flowsci.domains.proteins.flow import ReQFlow

    torch.manual_seed(0)
    path = save_module(
        ReQFlow(net=IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1)), tmp_path / "a.pt"
    )
    blob = torch.load(path, weights_only=True)
    assert blob["flowsci"]["net"]["config"]["length_feats"] is False
    del blob["flowsci"]["net"]["config"]["length_feats"]  # a file written before the option existed
    torch.save(blob, tmp_path / "old.pt")
    old = ReQFlow.from_checkpoint(tmp_path / "old.pt")
    assert not old.net.length_feats and old.net.node_embed.in_features == 64 + 64 + 1
