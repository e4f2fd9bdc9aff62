"""Readers/writers, frames round trips, cache and DataModule of the proteins domain."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("gemmi", reason="proteins extra (gemmi) not installed")

from flowsci.domains.proteins.data import (  # noqa: E402
    Backbone,
    LengthBatchSampler,
    ProteinDataModule,
    StructureFormatError,
    bundled_backbones,
    load_npz,
    read_backbones,
    save_npz,
    write_pdb,
)
from flowsci.domains.proteins.geometry import (  # noqa: E402
    IDEAL,
    backbone_from_frames,
    frames_from_backbone,
)
from flowsci.manifolds import quaternion_to_matrix  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def chains() -> list[Backbone]:
    return bundled_backbones()


def _angle(a, b, c):
    u, v = a - b, c - b
    return torch.rad2deg(torch.arccos((u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))))


def test_bundled_data_matches_provenance(chains):
    assert len(chains) == 177
    lengths = np.array([len(b) for b in chains])
    assert lengths.min() == 40 and lengths.max() == 251 and lengths.sum() == 21423
    d = np.concatenate([np.linalg.norm(np.diff(b.ca, axis=0), axis=-1) for b in chains])
    assert abs(d.mean() - 3.805) < 0.01


def test_frames_atoms_frames_round_trip_is_exact(chains):
    for bb in chains[:30]:
        x = torch.from_numpy(bb.coords).double()
        rot, ca = frames_from_backbone(x[:, 0], x[:, 1], x[:, 2])
        # frames are proper rotations
        eye = torch.eye(3, dtype=torch.float64)
        assert torch.allclose(rot.transpose(-1, -2) @ rot, eye.expand_as(rot), atol=1e-12)
        assert torch.allclose(torch.linalg.det(rot), torch.ones(len(bb), dtype=torch.float64), atol=1e-12)
        atoms = backbone_from_frames(rot, ca)
        rot2, ca2 = frames_from_backbone(atoms[:, 0], atoms[:, 1], atoms[:, 2])
        assert torch.allclose(rot2, rot, atol=1e-10) and torch.allclose(ca2, ca, atol=1e-12)


def test_idealised_atoms_close_to_real_and_have_ideal_geometry(chains):
    err_n, err_c, err_o = [], [], []
    for bb in chains[:40]:
        x = torch.from_numpy(bb.coords).double()
        rot, ca = frames_from_backbone(x[:, 0], x[:, 1], x[:, 2])
        a = backbone_from_frames(rot, ca)
        e = (a - x).norm(dim=-1)
        err_n.append(e[:, 0].mean())
        err_c.append(e[:, 2].mean())
        err_o.append(e[:-1, 3].mean())
        n, c_, c, o = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
        assert torch.allclose((n - c_).norm(dim=-1), torch.full((len(bb),), IDEAL["N_CA"], dtype=torch.float64))
        assert torch.allclose((c - c_).norm(dim=-1), torch.full((len(bb),), IDEAL["CA_C"], dtype=torch.float64))
        assert torch.allclose((o - c).norm(dim=-1), torch.full((len(bb),), IDEAL["C_O"], dtype=torch.float64))
        assert torch.allclose(_angle(n, c_, c), torch.full((len(bb),), IDEAL["N_CA_C"], dtype=torch.float64))
        assert torch.allclose(_angle(c_, c, o), torch.full((len(bb),), IDEAL["CA_C_O"], dtype=torch.float64))
        # O is in the peptide plane (CA_i, C_i, N_i+1), on the side opposite N_i+1
        nrm = torch.cross(c_[:-1] - c[:-1], n[1:] - c[:-1], dim=-1)
        assert ((o[:-1] - c[:-1]) * nrm).sum(-1).abs().max() < 1e-8 * nrm.norm(dim=-1).max() + 1e-9
        assert (_angle(o[:-1], c[:-1], n[1:]) > 110).all()
    assert float(torch.stack(err_n).mean()) < 0.1
    assert float(torch.stack(err_c).mean()) < 0.06
    assert float(torch.stack(err_o).mean()) < 0.2


def test_pdb_write_read_round_trip(chains, tmp_path):
    bb = chains[3]
    p = bb.to_pdb(tmp_path)
    assert p.parent == tmp_path and p.suffix == ".pdb" and "/" not in p.name
    back = read_backbones(p)
    assert len(back) == 1
    assert back[0].seq == bb.seq
    assert np.abs(back[0].coords - bb.coords).max() < 1e-3 + 1e-6
    # generated (poly-GLY / poly-ALA) and a multi-model trajectory
    gen = Backbone(bb.coords[:30], name="gen", seed=7)
    p2 = write_pdb(gen, tmp_path / "gen.pdb", residue="ALA")
    assert "ALA" in p2.read_text() and "SEED 7" in p2.read_text()
    traj = write_pdb([gen, gen], tmp_path / "traj.pdb")
    txt = traj.read_text()
    assert txt.count("MODEL") == 2 and txt.count("ENDMDL") == 2
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files
    # the poly-ALA option never rewrites a real sequence (its glycines stay GLY)
    assert "G" in bb.seq
    real_ala = read_backbones(write_pdb(bb, tmp_path / "real.pdb", residue="ALA"))[0]
    assert real_ala.seq == bb.seq
    assert read_backbones(p2)[0].seq == "A" * 30


def test_mmcif_read_matches_pdb(chains, tmp_path):
    gemmi = pytest.importorskip("gemmi")
    p = chains[5].to_pdb(tmp_path)
    st = gemmi.read_structure(str(p))
    st.setup_entities()
    cif = tmp_path / "x.cif"
    st.make_mmcif_document().write_file(str(cif))
    a, b = read_backbones(p)[0], read_backbones(cif)[0]
    assert a.seq == b.seq and np.abs(a.coords - b.coords).max() < 1e-4


def test_malformed_pdb_names_file_and_line(chains, tmp_path):
    p = chains[0].to_pdb(tmp_path)
    lines = p.read_text().splitlines()
    lines[6] = lines[6][:32] + "x" + lines[6][33:]  # corrupt the x coordinate of the 6th atom (line 7)
    bad = tmp_path / "bad.pdb"
    bad.write_text("\n".join(lines))
    with pytest.raises(StructureFormatError, match=r"bad\.pdb:7: malformed x coordinate"):
        read_backbones(bad)
    empty = tmp_path / "empty.pdb"
    empty.write_text("HEADER nothing\n")
    with pytest.raises(StructureFormatError, match="empty.pdb"):
        read_backbones(empty)


def test_malformed_cif_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.cif"
    bad.write_text("data_x\n_cell.length_a 10\n_cell.length_b 'abc\n")
    with pytest.raises(StructureFormatError, match=r"bad\.cif:3.*unterminated"):
        read_backbones(bad)
    bad.write_text("data_x\nloop_\n_atom_site.id\n_atom_site.Cartn_x\n1 2 3\n")
    with pytest.raises(StructureFormatError, match=r"bad\.cif:2.*loop"):
        read_backbones(bad)


def test_missing_atoms_nonstandard_and_breaks_are_reported_and_dropped(chains, tmp_path):
    bb = chains[0]
    p = bb.to_pdb(tmp_path)
    lines = p.read_text().splitlines()
    atom_lines = [i for i, ln in enumerate(lines) if ln.startswith("ATOM")]
    # residue 3: drop its O; residue 10: rename to MSE (non-standard)
    drop_o = atom_lines[2 * 4 + 3]
    for k in range(4):
        i = atom_lines[9 * 4 + k]
        lines[i] = lines[i][:17] + "MSE" + lines[i][20:]
    del lines[drop_o]
    p2 = tmp_path / "edited.pdb"
    p2.write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = read_backbones(p2, split_breaks=False)
    msgs = " ".join(str(w.message) for w in rec)
    assert "edited.pdb" in msgs and "missing O" in msgs and "MSE" in msgs and "non-standard" in msgs
    assert len(out[0]) == len(bb) - 2
    # with split_breaks the two gaps cut the chain; the longest piece is kept and the cut reported
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = read_backbones(p2, split_breaks=True)
    assert any("chain break" in str(w.message) for w in rec)
    assert len(out[0]) == len(bb) - 10


def test_npz_cache_round_trip(chains, tmp_path):
    p = save_npz(chains[:5], tmp_path / "c.npz")
    back = load_npz(p)
    assert [b.name for b in back] == [b.name for b in chains[:5]]
    for a, b in zip(back, chains[:5], strict=True):
        assert a.seq == b.seq and np.array_equal(a.coords, b.coords)


def test_length_batch_sampler_groups_lengths():
    lengths = np.random.default_rng(0).integers(20, 200, size=101)
    s = LengthBatchSampler(lengths, batch_size=8, max_residues=600, seed=1)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(101))
    for b in batches:
        assert len(b) <= 8 and len(b) * lengths[b].max() <= 600 or len(b) == 1
    # sorted-by-length cutting: the spread inside a batch is small compared to the overall spread
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.15 * np.ptp(lengths)
    assert [sorted(b) for b in batches] != [sorted(b) for b in list(s)]  # reshuffled next epoch


def test_length_batch_sampler_pair_cap_matches_frameflow_rule():
    # FrameFlow/ReQFlow: a batch of length-L chains holds at most max_num_res_squared / L² chains
    lengths = np.array([250] * 20 + [50] * 300)
    s = LengthBatchSampler(lengths, batch_size=128, max_res_squared=500_000, shuffle=False)
    sizes: dict[int, list[int]] = {}
    for b in s:
        sizes.setdefault(int(lengths[b].max()), []).append(len(b))
    assert sizes == {250: [8, 8, 4], 50: [128, 128, 44]}  # 8 × 250² = 5e5; 200 × 50² would fit but the chain cap is 128


def test_length_batch_sampler_ranks_get_equal_batch_counts(monkeypatch):
    # DDP hangs when one rank has a batch more: shards are padded to equal counts, covering every batch
    lengths = np.random.default_rng(3).integers(20, 200, size=37)
    full = LengthBatchSampler(lengths, batch_size=4, seed=2)._batches()
    assert len(full) % 3 != 0
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 3)
    shards = []
    for rank in range(3):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda r=rank: r)
        shards.append(LengthBatchSampler(lengths, batch_size=4, seed=2)._batches())
    assert len({len(sh) for sh in shards}) == 1 and len(shards[0]) == -(-len(full) // 3)
    seen = sorted(i for sh in shards for b in sh for i in b)
    assert set(seen) == set(range(37)) and len(seen) <= 37 + 2 * 4  # all items, at most 2 padded batches


def test_datamodule_bundled_batches_and_directory_cache(chains, tmp_path):
    dm = ProteinDataModule(crop_length=48, batch_size=4, max_coil=None, seed=0)
    dm.setup("fit")
    assert len(dm.train_backbones) + len(dm.val_backbones) == 177 and len(dm.val_backbones) == 18
    batch = next(iter(dm.train_dataloader()))
    b, n = batch["mask"].shape
    assert b <= 4 and n <= 48
    m = batch["mask"].bool()
    com = (batch["trans"] * m[..., None]).sum(1) / m.sum(1, keepdim=True)
    assert com.abs().max() < 1e-4  # centred
    assert torch.allclose(quaternion_to_matrix(batch["quats"][m]), batch["rotmats"][m], atol=1e-5)
    # directory source: parsed once, then served from the npz cache
    for bb in chains[:3]:
        bb.to_pdb(tmp_path / "pdbs")
    dm2 = ProteinDataModule(source=str(tmp_path / "pdbs"), max_coil=None, crop_length=None, val_fraction=0.0)
    first = dm2.load_all()
    caches = list((tmp_path / "pdbs" / ".flowsci_cache").glob("*.npz"))
    assert len(caches) == 1 and len(first) == 3
    again = ProteinDataModule(source=str(tmp_path / "pdbs"), max_coil=None).load_all()
    assert [a.seq for a in again] == [a.seq for a in first]


def test_random_crops_change_per_draw_and_are_reproducible(chains):
    from flowsci.domains.proteins.data import BackboneDataset

    long_chain = [b for b in chains if len(b) > 200][:1]
    a = BackboneDataset(long_chain, crop_length=20, seed=3)
    b = BackboneDataset(long_chain, crop_length=20, seed=3)
    xa = [a[0]["trans"] for _ in range(4)]
    xb = [b[0]["trans"] for _ in range(4)]
    assert all(torch.equal(u, v) for u, v in zip(xa, xb, strict=True))
    assert not all(torch.equal(xa[0], u) for u in xa[1:])
    assert all(u.shape == (20, 3) for u in xa)


def test_chain_residue_indices_locate_the_crop_in_its_chain(chains):
    from flowsci.domains.proteins.data import BackboneDataset

    chain = [b for b in chains if len(b) > 200][0]
    ca = torch.from_numpy(chain.ca).double()
    ds = BackboneDataset([chain], crop_length=30, seed=1)  # default: chain residue indices
    starts = set()
    for _ in range(6):
        item = ds[0]
        idx = item["res_idx"]
        assert torch.equal(idx, torch.arange(30) + idx[0])
        starts.add(int(idx[0]))
        # the indices point at the crop's residues: the chain's CA trace at those positions, centred, is the crop
        ref = ca[idx] - ca[idx].mean(0)
        assert torch.allclose(item["trans"].double(), ref, atol=1e-4)
    assert len(starts) > 1 and max(starts) <= len(chain) - 30
    crop = BackboneDataset([chain], crop_length=30, seed=1, res_idx_from="crop")[0]["res_idx"]
    assert torch.equal(crop, torch.arange(30))
    short = BackboneDataset([chain], crop_length=None, res_idx_from="chain")[0]["res_idx"]
    assert torch.equal(short, torch.arange(len(chain)))
    with pytest.raises(ValueError, match="res_idx_from"):
        BackboneDataset([chain], res_idx_from="pdb")


def _cif_of(chain, tmp_path, name="x.cif"):
    gemmi = pytest.importorskip("gemmi")
    st = gemmi.read_structure(str(chain.to_pdb(tmp_path)))
    st.setup_entities()
    cif = tmp_path / name
    st.make_mmcif_document().write_file(str(cif))
    return cif


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "?", "1.2x3", "3e7"])
def test_mmcif_nonfinite_or_malformed_coordinate_names_file_and_record(chains, tmp_path, value):
    from flowsci.errors import InputError

    cif = _cif_of(chains[5], tmp_path)
    text = cif.read_text()
    loop = text.index("_atom_site.")
    lines = text[loop:].splitlines()
    header = [ln for ln in lines if ln.startswith("_atom_site.")]
    x_col = [h.strip() for h in header].index("_atom_site.Cartn_x")
    row = lines[len(header) + 2]  # the third atom record
    fields = row.split()
    fields[x_col] = value
    bad = tmp_path / "bad.cif"
    bad.write_text(text.replace(row, " ".join(fields), 1))
    with pytest.raises(InputError, match=r"bad\.cif: _atom_site record 3 \(id 3\): .* x coordinate") as err:
        read_backbones(bad)
    assert isinstance(err.value, StructureFormatError) and err.value.source == str(bad)


def test_truncated_or_garbage_gzip_and_npz_are_structure_format_errors(chains, tmp_path):
    import gzip

    from flowsci.domains.proteins.data import load_npz, save_npz

    gz = tmp_path / "x.pdb.gz"
    gz.write_bytes(gzip.compress(chains[0].to_pdb(tmp_path).read_bytes())[:200])
    with pytest.raises(StructureFormatError, match=r"x\.pdb\.gz: cannot read file"):
        read_backbones(gz)
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(StructureFormatError, match=r"x\.pdb\.gz"):
        read_backbones(gz)
    npz = save_npz(chains[:3], tmp_path / "c.npz")
    npz.write_bytes(npz.read_bytes()[:300])
    with pytest.raises(StructureFormatError, match=r"c\.npz: not a backbone npz cache"):
        load_npz(npz)
    import dataclasses

    bad = dataclasses.replace(chains[0], coords=chains[0].coords.copy())  # the fixture stays intact
    bad.coords[2, 1, 0] = np.nan
    with pytest.raises(StructureFormatError, match="non-finite"):
        load_npz(save_npz([bad], tmp_path / "n.npz"))


def test_structure_format_error_is_an_input_error_with_both_call_forms():
    from flowsci.errors import InputError

    old = StructureFormatError("a.pdb:3: bad")
    new = StructureFormatError("a.pdb", "line 3: bad")
    assert isinstance(old, InputError) and isinstance(old, ValueError)
    assert (old.source, old.problem, str(old)) == ("a.pdb:3", "bad", "a.pdb:3: bad")
    assert str(new) == "a.pdb: line 3: bad"
