"""Protein backbones: PDB/mmCIF readers, PDB writer, npz cache, filters and the LightningDataModule.

The domain object is :class:`Backbone` (N, CA, C, O coordinates per residue, Å). Readers use gemmi for parsing
and add a strict coordinate check (gemmi silently truncates malformed numbers), so a malformed file raises one
:class:`StructureFormatError` naming the file and line. Residues with missing backbone atoms or non-standard names
are dropped and reported (``warnings.warn`` naming the file, chain and residue numbers), never kept silently.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from flowsci.domains.proteins.geometry import backbone_from_frames, frames_from_backbone
from flowsci.errors import InputError, require
from flowsci.io import atomic_write, atomic_write_text
from flowsci.manifolds import matrix_to_quaternion

__all__ = [
    "Backbone",
    "StructureFormatError",
    "read_backbones",
    "write_pdb",
    "save_npz",
    "load_npz",
    "bundled_backbones",
    "BUNDLED_NPZ",
    "filter_backbones",
    "crop_backbone",
    "LengthBatchSampler",
    "BackboneDataset",
    "collate_backbones",
    "ProteinDataModule",
    "THREE_TO_ONE",
]

THREE_TO_ONE: dict[str, str] = {
    "ALA": "A",
    "ARG": "R",
    "ASN": "N",
    "ASP": "D",
    "CYS": "C",
    "GLN": "Q",
    "GLU": "E",
    "GLY": "G",
    "HIS": "H",
    "ILE": "I",
    "LEU": "L",
    "LYS": "K",
    "MET": "M",
    "PHE": "F",
    "PRO": "P",
    "SER": "S",
    "THR": "T",
    "TRP": "W",
    "TYR": "Y",
    "VAL": "V",
}
ONE_TO_THREE: dict[str, str] = {v: k for k, v in THREE_TO_ONE.items()}
BACKBONE_ATOMS: tuple[str, ...] = ("N", "CA", "C", "O")
#: Name of the bundled npz (177 real chains; provenance in ``sample_data/PROVENANCE.md``).
BUNDLED_NPZ = "real_backbones_v1.npz"
STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdb.gz", ".ent.gz", ".cif.gz", ".mmcif.gz")


class StructureFormatError(InputError):
    """A structure file could not be parsed; the message names the file and (where known) the line or record.

    A :class:`flowsci.errors.InputError` (so also a ``ValueError``): ``source`` is the file (``path`` or
    ``path:line``), ``problem`` what is wrong. The one-argument form ``StructureFormatError("path: problem")`` is
    kept for compatibility.
    """

    def __init__(self, source: str | os.PathLike, problem: str | None = None) -> None:
        if problem is None:
            source, _, problem = str(source).partition(": ")
        super().__init__(source, problem)


@dataclass
class Backbone:
    """One protein backbone chain.

    Attributes:
        coords: ``[L, 4, 3]`` float32 positions of N, CA, C, O (Å).
        seq: One-letter sequence of length L; empty for generated backbones (stored as ``"G" * L`` and flagged
            ``meta["generated"]``, written as poly-GLY or poly-ALA).
        chain: Chain identifier.
        res_ids: ``[L]`` residue numbers (defaults to 1..L).
        name: Identifier used for file names.
        seed: Seed of the sampler that generated it (None for real chains).
        meta: Free-form metadata (source file, NFE, ...).
    """

    coords: np.ndarray
    seq: str = ""
    chain: str = "A"
    res_ids: np.ndarray | None = None
    name: str = "backbone"
    seed: int | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.float32)
        if self.coords.ndim != 3 or self.coords.shape[1:] != (4, 3):
            raise ValueError(f"Backbone {self.name!r}: coords must be [L, 4, 3] (N, CA, C, O), got {self.coords.shape}")
        if not self.seq:  # no sequence: a generated backbone, written as poly-GLY/ALA
            self.seq = "G" * len(self.coords)
            self.meta.setdefault("generated", True)
        if len(self.seq) != len(self.coords):
            raise ValueError(f"Backbone {self.name!r}: sequence length {len(self.seq)} != {len(self.coords)} residues")
        if self.res_ids is None:
            self.res_ids = np.arange(1, len(self.coords) + 1)
        self.res_ids = np.asarray(self.res_ids, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def ca(self) -> np.ndarray:
        """CA trace ``[L, 3]``."""
        return self.coords[:, 1]

    def frames(self) -> tuple[Tensor, Tensor]:
        """Residue frames ``(quats [L, 4], trans [L, 3])`` (Å, not centred); see :mod:`.geometry`."""
        x = torch.from_numpy(self.coords).double()
        rot, trans = frames_from_backbone(x[:, 0], x[:, 1], x[:, 2])
        return matrix_to_quaternion(rot).float(), trans.float()

    @classmethod
    def from_frames(cls, rot: Tensor, trans: Tensor, **kwargs) -> Backbone:
        """Idealised backbone from frames ``rot [L, 3, 3]``, ``trans [L, 3]`` (Å); kwargs to the
        constructor.
        """
        atoms = backbone_from_frames(rot.detach().double().cpu(), trans.detach().double().cpu())
        return cls(coords=atoms.float().numpy(), **kwargs)

    def to_pdb(self, out: str | os.PathLike, residue: str = "GLY") -> Path:
        """Write this chain as a PDB file (atomic write).

        Args:
            out: A directory (the file is ``out/<name>.pdb``) or a path ending in ``.pdb``.
            residue: Residue name for generated chains without sequence (``"GLY"`` or ``"ALA"``).

        Returns:
            The path written.
        """
        out = Path(out)
        safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", self.name).strip("._") or "backbone"
        path = out if out.suffix.lower() == ".pdb" else out / f"{safe}.pdb"
        return write_pdb(self, path, residue=residue)


# ----------------------------------------------------------------------------------------------- readers


def _open_text(path: Path) -> str:
    """The file's text; PDB and mmCIF are ASCII, so other bytes become ``?`` (gemmi cannot return them)."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # also a truncated or non-gzip .gz
        raise StructureFormatError(f"{path}: cannot read file ({type(exc).__name__}: {exc})") from exc
    if b"\x00" in raw:
        raise StructureFormatError(str(path), "binary data (NUL bytes): not a PDB or mmCIF text file")
    return raw.decode("ascii", errors="replace").replace("\ufffd", "?")


def _is_cif(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(".cif") or name.endswith(".mmcif")


def _check_pdb_text(text: str, path: Path) -> None:
    """Strict column check of ATOM/HETATM records (gemmi would silently accept ``13.7x1``)."""
    n_atoms = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        rec = line[:6]
        if rec not in ("ATOM  ", "HETATM"):
            continue
        if len(line.rstrip()) < 54:
            raise StructureFormatError(f"{path}:{lineno}: {rec.strip()} record too short for x/y/z columns 31-54")
        for lo, hi, axis in ((30, 38, "x"), (38, 46, "y"), (46, 54, "z")):
            field_ = line[lo:hi]
            try:
                val = float(field_)
            except ValueError:
                raise StructureFormatError(
                    f"{path}:{lineno}: malformed {axis} coordinate {field_!r} (columns {lo + 1}-{hi})"
                ) from None
            if not math.isfinite(val):
                raise StructureFormatError(f"{path}:{lineno}: non-finite {axis} coordinate {field_!r}")
        try:
            int(line[22:26])
        except ValueError:
            raise StructureFormatError(
                f"{path}:{lineno}: malformed residue number {line[22:26]!r} (columns 23-26)"
            ) from None
        n_atoms += 1
    if n_atoms == 0:
        raise StructureFormatError(f"{path}: no ATOM/HETATM records (not a PDB file?)")


#: Coordinates beyond this (Å) are rejected as implausible (the PDB format's limit is 9999.999).
MAX_COORDINATE = 1e5
_ESD = re.compile(r"\(\d+\)$")


def _check_cif_block(block, path: Path) -> None:
    """Strict check of the ``_atom_site`` coordinates (gemmi reads ``nan``, ``inf``, ``?`` and ``1e999`` silently)."""
    cols = [block.find_values(f"_atom_site.Cartn_{axis}") for axis in "xyz"]
    ids = block.find_values("_atom_site.id")
    for axis, col in zip("xyz", cols, strict=True):
        for i in range(len(col)):
            raw = col[i]
            where = f"_atom_site record {i + 1}" + (f" (id {ids[i]})" if i < len(ids) else "")
            try:
                val = float(_ESD.sub("", raw))
            except ValueError:
                raise StructureFormatError(str(path), f"{where}: malformed {axis} coordinate {raw!r}") from None
            if not math.isfinite(val):
                raise StructureFormatError(str(path), f"{where}: non-finite {axis} coordinate {raw!r}")
            if abs(val) > MAX_COORDINATE:
                raise StructureFormatError(
                    str(path), f"{where}: implausible {axis} coordinate {raw!r} (beyond {MAX_COORDINATE:g} A)"
                )


def _parse_structure(path: Path):
    gemmi = require("gemmi", "proteins")

    text = _open_text(path)
    try:
        if _is_cif(path):
            doc = gemmi.cif.read_string(text)
            if len(doc) == 0:
                raise StructureFormatError(str(path), "no data block (empty or not an mmCIF file)")
            block = doc.sole_block()
            _check_cif_block(block, path)
            st = gemmi.make_structure_from_block(block)
        else:
            _check_pdb_text(text, path)
            st = gemmi.read_pdb_string(text)
    except StructureFormatError:
        raise
    except (ValueError, RuntimeError, IndexError) as exc:
        msg = str(exc)
        # gemmi reports "<string>:LINE:COL..." for strings; name the real file instead.
        if msg.startswith("string:") or msg.startswith("<string>"):
            msg = msg.split(":", 1)[1]
        raise StructureFormatError(f"{path}:{msg}") from exc
    st.setup_entities()
    if len(st) == 0:
        raise StructureFormatError(f"{path}: file contains no model")
    return st


def read_backbones(
    path: str | os.PathLike,
    chains: Sequence[str] | None = None,
    split_breaks: bool = True,
    min_length: int = 1,
    max_break: float = 2.0,
) -> list[Backbone]:
    """Read protein chains from a PDB or mmCIF file (optionally gzipped) as backbones.

    First model only, first altloc, hydrogens ignored. Residues whose name is not one of the 20 standard amino
    acids or that lack any of N, CA, C, O are dropped and reported with ``warnings.warn`` (file, chain,
    residue
    numbers). With ``split_breaks``, a chain is cut where C(i)–N(i+1) > ``max_break`` Å and its longest
    contiguous segment is kept (as in the staged data), and the cut is reported.

    Args:
        path: ``.pdb``, ``.ent``, ``.cif``/``.mmcif`` file, optionally ``.gz``.
        chains: Chain ids to keep (default: all protein chains).
        split_breaks: Keep only the longest contiguous segment of each chain.
        min_length: Chains shorter than this (after dropping) are skipped.
        max_break: Peptide-bond length above which the chain is considered broken (Å).

    Returns:
        One :class:`Backbone` per chain, named ``<file stem>_<chain>``.

    Raises:
        StructureFormatError: the file is malformed (message names file and line) or holds no usable chain.
    """
    path = Path(path)
    if not path.exists():
        raise StructureFormatError(f"{path}: no such file")
    st = _parse_structure(path)
    stem = path.name.split(".")[0]
    out: list[Backbone] = []
    for ch in st[0]:
        if chains is not None and ch.name not in chains:
            continue
        coords, seq, rid, dropped = [], [], [], []
        for res in ch:
            name = res.name.upper()
            is_polymer_aa = gemmi_is_amino_acid(name)
            if name not in THREE_TO_ONE:
                if is_polymer_aa:
                    dropped.append(f"{name}{res.seqid.num}(non-standard)")
                continue
            atoms = {}
            for at in res:
                if at.name in BACKBONE_ATOMS and at.name not in atoms:
                    atoms[at.name] = (at.pos.x, at.pos.y, at.pos.z)
            missing = [a for a in BACKBONE_ATOMS if a not in atoms]
            if missing:
                dropped.append(f"{name}{res.seqid.num}(missing {','.join(missing)})")
                continue
            coords.append([atoms[a] for a in BACKBONE_ATOMS])
            seq.append(THREE_TO_ONE[name])
            rid.append(res.seqid.num)
        if dropped:
            warnings.warn(
                f"{path}: chain {ch.name}: dropped {len(dropped)} residue(s): {', '.join(dropped[:10])}"
                + (" ..." if len(dropped) > 10 else ""),
                stacklevel=2,
            )
        if not coords:
            continue
        xyz = np.asarray(coords, dtype=np.float32)
        if not np.isfinite(xyz).all():  # a reader path the text checks missed, or float32 overflow
            bad = int(np.argwhere(~np.isfinite(xyz))[0][0])
            raise StructureFormatError(
                str(path), f"chain {ch.name} residue {rid[bad]}: non-finite backbone coordinate {xyz[bad].tolist()}"
            )
        seq_s, rid_a = "".join(seq), np.asarray(rid)
        if split_breaks and len(xyz) > 1:
            pep = np.linalg.norm(xyz[1:, 0] - xyz[:-1, 2], axis=-1)
            cuts = np.nonzero(pep > max_break)[0]
            if len(cuts):
                bounds = np.concatenate([[0], cuts + 1, [len(xyz)]])
                seg = int(np.argmax(np.diff(bounds)))
                lo, hi = int(bounds[seg]), int(bounds[seg + 1])
                warnings.warn(
                    f"{path}: chain {ch.name}: {len(cuts)} chain break(s) (C-N > {max_break} A); "
                    "kept residues "
                    f"{rid_a[lo]}-{rid_a[hi - 1]} ({hi - lo} of {len(xyz)})",
                    stacklevel=2,
                )
                xyz, seq_s, rid_a = xyz[lo:hi], seq_s[lo:hi], rid_a[lo:hi]
        if len(xyz) < min_length:
            continue
        out.append(Backbone(xyz, seq_s, ch.name, rid_a, name=f"{stem}_{ch.name}", meta={"source": str(path)}))
    if not out:
        raise StructureFormatError(f"{path}: no protein chain with complete backbone atoms (N, CA, C, O)")
    return out


def gemmi_is_amino_acid(name: str) -> bool:
    """Whether gemmi's residue table knows ``name`` as an amino acid (standard or modified)."""
    gemmi = require("gemmi", "proteins")

    info = gemmi.find_tabulated_residue(name)
    return bool(info is not None and info.is_amino_acid())


# ----------------------------------------------------------------------------------------------- writers


def _pdb_lines(bb: Backbone, residue: str, serial0: int = 1) -> list[str]:
    lines, serial = [], serial0
    for i in range(len(bb)):
        aa = bb.seq[i]
        resn = residue if bb.meta.get("generated") else ONE_TO_THREE.get(aa, "UNK")
        for a, name in enumerate(BACKBONE_ATOMS):
            x, y, z = (float(v) for v in bb.coords[i, a])
            if max(abs(x), abs(y), abs(z)) >= 1e4:
                raise ValueError(f"Backbone {bb.name!r}: coordinate {x:.1f},{y:.1f},{z:.1f} does not fit PDB columns")
            resid = int(bb.res_ids[i]) % 10000
            lines.append(
                f"ATOM  {serial % 100000:5d} {name:^4s}{' '}{resn:>3s} {bb.chain[:1]:1s}{resid:4d}"
                f"    {x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{0.0:6.2f}          {name[0]:>2s}"
            )
            serial += 1
    lines.append(f"TER   {serial % 100000:5d}      {resn:>3s} {bb.chain[:1]:1s}{int(bb.res_ids[-1]) % 10000:4d}")
    return lines


def write_pdb(backbones: Backbone | Sequence[Backbone], path: str | os.PathLike, residue: str = "GLY") -> Path:
    """Write one backbone, or several as a multi-model PDB (e.g. a sampling trajectory); atomic.

    Args:
        backbones: A :class:`Backbone` or a sequence of them (one MODEL each).
        path: Output ``.pdb`` path.
        residue: Residue name of generated chains (``meta["generated"]``): ``"GLY"`` or ``"ALA"``; real
            sequences are written as they are.

    Returns:
        The path written.
    """
    if residue not in ("GLY", "ALA"):
        raise ValueError(f"residue must be 'GLY' or 'ALA', got {residue!r}")
    single = isinstance(backbones, Backbone)
    bbs = [backbones] if single else list(backbones)
    if not bbs:
        raise ValueError("write_pdb: nothing to write")
    lines = [f"REMARK   1 GENERATED BY FLOWSCI {bbs[0].name}"]
    if bbs[0].seed is not None:
        lines.append(f"REMARK   2 SEED {bbs[0].seed}")
    for k, bb in enumerate(bbs):
        if not single:
            lines.append(f"MODEL     {k + 1:4d}")
        lines.extend(_pdb_lines(bb, residue))
        if not single:
            lines.append("ENDMDL")
    lines.append("END")
    return atomic_write_text(path, "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------- npz cache


def save_npz(backbones: Sequence[Backbone], path: str | os.PathLike) -> Path:
    """Save backbones in the staged-data npz layout (``coords [ΣL,4,3]``, ``lengths``, ``offsets``, ``seqs``,
    ``ids``); atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.asarray([len(b) for b in backbones], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        coords=np.concatenate([b.coords for b in backbones]).astype(np.float32)
        if backbones
        else np.zeros((0, 4, 3), np.float32),
        lengths=lengths,
        offsets=offsets,
        seqs=np.asarray([b.seq for b in backbones]),
        ids=np.asarray([b.name for b in backbones]),
        chain=np.asarray([b.chain for b in backbones]),
        res_ids=np.concatenate([b.res_ids for b in backbones]) if backbones else np.zeros(0, np.int64),
    )
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


def load_npz(path: str | os.PathLike) -> list[Backbone]:
    """Load backbones saved by :func:`save_npz` or the staged ``real_backbones_v1.npz``."""
    path = Path(path)
    try:
        d = np.load(path, allow_pickle=False)
        coords, offsets = d["coords"], d["offsets"]
        seqs, ids = d["seqs"], d["ids"]
        chain = d["chain"] if "chain" in d.files else np.asarray(["A"] * len(seqs))
        res_ids = d["res_ids"] if "res_ids" in d.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise StructureFormatError(str(path), f"not a backbone npz cache ({type(exc).__name__}: {exc})") from exc
    if coords.dtype.kind != "f" or not np.isfinite(coords).all():
        raise StructureFormatError(str(path), "backbone npz cache holds non-finite or non-numeric coordinates")
    if len(offsets) != len(seqs) + 1 or np.any(np.diff(offsets) < 0) or (len(offsets) and offsets[-1] > len(coords)):
        raise StructureFormatError(str(path), "backbone npz cache has inconsistent offsets (truncated?)")
    out = []
    for i in range(len(seqs)):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        try:
            out.append(
                Backbone(
                    coords=coords[lo:hi],
                    seq=str(seqs[i]),
                    chain=str(chain[i]) or "A",
                    res_ids=None if res_ids is None else res_ids[lo:hi],
                    name=str(ids[i]),
                    meta={"source": str(path), "index": i},
                )
            )
        except ValueError as exc:
            raise StructureFormatError(str(path), f"record {i}: {exc}") from exc
    return out


def bundled_backbones() -> list[Backbone]:
    """The 177 real single-chain backbones shipped in ``flowsci/domains/proteins/sample_data`` (see its
    ``PROVENANCE.md``: PDB-derived chains, lengths 40–251).
    """
    ref = resources.files("flowsci.domains.proteins") / "sample_data" / BUNDLED_NPZ
    with resources.as_file(ref) as p:
        return load_npz(p)


# ----------------------------------------------------------------------------------------------- filters


def filter_backbones(
    backbones: Sequence[Backbone],
    min_length: int = 40,
    max_length: int = 512,
    max_coil: float | None = 0.5,
    max_rg_factor: float | None = None,
) -> list[Backbone]:
    """FrameFlow/ReQFlow filters: length range, maximum DSSP coil fraction, radius-of-gyration cutoff.

    Args:
        backbones: Input chains.
        min_length: Minimum residues.
        max_length: Maximum residues.
        max_coil: Maximum coil fraction (pydssp 3-state); None disables.
        max_rg_factor: Keep chains with CA :math:`R_g \\le f \\cdot 2.2 L^{0.38}` Å; None disables.

    Returns:
        The chains that pass, in order.
    """
    from flowsci.domains.proteins.metrics import radius_of_gyration, secondary_structure

    kept = []
    for bb in backbones:
        if not (min_length <= len(bb) <= max_length):
            continue
        if max_coil is not None and secondary_structure(bb.coords)["coil"] > max_coil:
            continue
        if max_rg_factor is not None and radius_of_gyration(bb.ca) > max_rg_factor * 2.2 * len(bb) ** 0.38:
            continue
        kept.append(bb)
    return kept


def crop_backbone(bb: Backbone, length: int, rng: np.random.Generator) -> Backbone:
    """A random contiguous window of ``length`` residues (the whole chain if it is not longer)."""
    if len(bb) <= length:
        return bb
    s = int(rng.integers(0, len(bb) - length + 1))
    return Backbone(
        bb.coords[s : s + length],
        bb.seq[s : s + length],
        bb.chain,
        bb.res_ids[s : s + length],
        name=bb.name,
        meta=dict(bb.meta, crop_start=s),
    )


# ----------------------------------------------------------------------------------------------- torch data


class BackboneDataset(Dataset):
    """Backbones as frame dictionaries, with optional random crops.

    Each item: ``trans [L, 3]`` (Å, CA centroid removed), ``rotmats [L, 3, 3]``, ``quats [L, 4]``,
    ``res_idx [L]``, ``length``.

    Args:
        backbones: The chains.
        crop_length: Random contiguous crops of this many residues (None: whole chains).
        seed: Seed of the crops.
        res_idx_from: ``"chain"`` (default): the crop's positions in its full chain (crop start + 0..L−1), so a
            model trained on short crops has seen the residue indices of longer samples (FrameFlow feeds chain
            residue indices); ``"crop"``: 0..L−1 within the crop (the network then never sees indices ≥ the
            crop length in training, and samples longer than the crop degrade; README).
    """

    def __init__(
        self,
        backbones: Sequence[Backbone],
        crop_length: int | None = None,
        seed: int = 0,
        res_idx_from: str = "chain",
    ) -> None:
        if res_idx_from not in ("crop", "chain"):
            raise ValueError(f"res_idx_from must be 'crop' or 'chain', got {res_idx_from!r}")
        self.backbones = list(backbones)
        self.res_idx_from = res_idx_from
        self.crop_length = crop_length
        self.seed = seed
        self._draws = 0

    def __len__(self) -> int:
        return len(self.backbones)

    def item_length(self, i: int) -> int:
        n = len(self.backbones[i])
        return n if self.crop_length is None else min(n, self.crop_length)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        bb = self.backbones[i]
        start = 0
        if self.crop_length is not None:
            # a fresh, reproducible crop per draw; DataLoader workers get a new seed every epoch
            info = torch.utils.data.get_worker_info()
            self._draws += 1
            rng = np.random.default_rng([self.seed, i, self._draws, 0 if info is None else info.seed % 2**63])
            bb = crop_backbone(bb, self.crop_length, rng)
            start = int(bb.meta.get("crop_start", 0)) if self.res_idx_from == "chain" else 0
        x = torch.from_numpy(bb.coords).double()
        rot, ca = frames_from_backbone(x[:, 0], x[:, 1], x[:, 2])
        ca = ca - ca.mean(0, keepdim=True)
        return {
            "trans": ca.float(),
            "rotmats": rot.float(),
            "quats": matrix_to_quaternion(rot).float(),
            "res_idx": torch.arange(len(bb)) + start,
            "length": torch.tensor(len(bb)),
        }


def collate_backbones(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Pad to the longest chain; adds ``mask [B, L]`` (1 = residue). Padded frames: identity at 0."""
    n = max(int(it["length"]) for it in items)
    b = len(items)
    out = {
        "trans": torch.zeros(b, n, 3),
        "rotmats": torch.eye(3).expand(b, n, 3, 3).clone(),
        "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(b, n, 4).clone(),
        "res_idx": torch.zeros(b, n, dtype=torch.long),
        "mask": torch.zeros(b, n),
    }
    for k, it in enumerate(items):
        m = int(it["length"])
        for key in ("trans", "rotmats", "quats", "res_idx"):
            out[key][k, :m] = it[key]
        out["mask"][k, :m] = 1.0
    return out


class LengthBatchSampler(Sampler[list[int]]):
    """Length-aware batches: indices sorted by length are cut into batches of similar length.

    A batch holds at most ``batch_size`` chains, at most ``max_residues`` padded residues
    (``batch_len × longest``) and at most ``max_res_squared`` padded residue pairs (``batch_len × longest²``, the
    memory of the pair features; FrameFlow/ReQFlow's ``max_num_res_squared``). Batch order is shuffled each
    epoch (seeded by ``seed + epoch``). Under DDP each rank takes every ``world_size``-th batch (ranks read from
    ``torch.distributed`` when initialised); the list is first padded by repeating its first batches so every
    rank runs the same number of steps (as ``DistributedSampler`` pads), else DDP would wait forever on the rank
    with one batch more.

    Args:
        lengths: Per-item lengths (after cropping).
        batch_size: Maximum chains per batch.
        max_residues: Optional cap on ``batch × max length``.
        shuffle: Shuffle batches (and ties within a length) each epoch.
        seed: Base seed.
        max_res_squared: Optional cap on ``batch × max length²``.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        max_residues: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        max_res_squared: int | None = None,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.max_res_squared = max_res_squared
        self.batch_size = batch_size
        self.max_residues = max_residues
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        tie = rng.random(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        order = np.lexsort((tie, self.lengths))
        batches, cur = [], []
        for i in order:
            longest = max([self.lengths[j] for j in cur] + [self.lengths[i]])
            too_many = self.max_residues is not None and (len(cur) + 1) * longest > self.max_residues
            too_many |= self.max_res_squared is not None and (len(cur) + 1) * longest**2 > self.max_res_squared
            if cur and (len(cur) >= self.batch_size or too_many):
                batches.append(cur)
                cur = []
            cur.append(int(i))
        if cur:
            batches.append(cur)
        if self.shuffle:
            perm = rng.permutation(len(batches))
            batches = [batches[p] for p in perm]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ws, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
            batches = (batches * ws)[: -(-len(batches) // ws) * ws][rank::ws]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        return len(self._batches())


class ProteinDataModule(pl.LightningDataModule):
    """Backbone data for frame flows: PDB/mmCIF directories, a processed npz cache, or the bundled chains.

    Structure files are parsed once and cached as ``<cache_dir>/<name>.npz`` (keyed by the file list and
    filter settings), so re-runs do not re-parse. A chain-level split (seeded) gives the validation set.

    Args:
        source: None or ``"bundled"`` (the 177 shipped chains), a ``.npz`` cache, a structure file, or a
            directory searched recursively for ``.pdb/.ent/.cif/.mmcif`` (optionally ``.gz``).
        cache_dir: Where parsed directories are cached (default ``<source>/.flowsci_cache``).
        min_length: Minimum chain length kept.
        max_length: Maximum chain length kept.
        max_coil: Maximum DSSP coil fraction (None disables; FrameFlow uses 0.5).
        max_rg_factor: Radius-of-gyration cutoff factor (see :func:`filter_backbones`; None disables).
        crop_length: Random contiguous crops of this many residues for training (None: whole chains).
        batch_size: Chains per batch.
        max_residues: Optional cap on padded residues per batch.
        max_res_squared: Optional cap on padded residue pairs per batch (``batch × longest²``; FrameFlow and
            ReQFlow use 5e5 on SCOPe, 1e6 on the PDB).
        val_fraction: Fraction of chains held out for validation.
        seed: Seed of the split, crops and batch order.
        num_workers: DataLoader workers.
        res_idx_from: Residue indices of crops: ``"chain"`` (positions in the full chain, default) or ``"crop"``
            (0..L−1); see :class:`BackboneDataset`.
    """

    def __init__(
        self,
        source: str | None = None,
        cache_dir: str | None = None,
        min_length: int = 40,
        max_length: int = 512,
        max_coil: float | None = 0.5,
        max_rg_factor: float | None = None,
        crop_length: int | None = 64,
        batch_size: int = 8,
        max_residues: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        res_idx_from: str = "chain",
        max_res_squared: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.source = source
        self.cache_dir = cache_dir
        self.train_backbones: list[Backbone] = []
        self.val_backbones: list[Backbone] = []

    def load_all(self) -> list[Backbone]:
        """Read (or load from cache) and filter all chains of ``source``."""
        hp = self.hparams
        src = self.source
        if src is None or src == "bundled":
            raw = bundled_backbones()
        else:
            p = Path(src)
            if p.suffix == ".npz":
                raw = load_npz(p)
            elif p.is_file():
                raw = read_backbones(p, min_length=hp.min_length)
            elif p.is_dir():
                raw = self._read_dir_cached(p)
            else:
                raise FileNotFoundError(f"ProteinDataModule: source {src!r} is not a file or directory")
        kept = filter_backbones(raw, hp.min_length, hp.max_length, hp.max_coil, hp.max_rg_factor)
        if not kept:
            raise ValueError(f"ProteinDataModule: no chain of {src or 'bundled data'} passes the filters")
        return kept

    def _read_dir_cached(self, root: Path) -> list[Backbone]:
        files = sorted(f for f in root.rglob("*") if f.is_file() and f.name.lower().endswith(STRUCTURE_SUFFIXES))
        if not files:
            raise FileNotFoundError(f"ProteinDataModule: no PDB/mmCIF files under {root}")
        import hashlib

        key = hashlib.sha1(
            "\n".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files).encode()
        ).hexdigest()[:12]
        cache = Path(self.cache_dir or root / ".flowsci_cache") / f"backbones_{key}.npz"
        if cache.exists():
            return load_npz(cache)
        out: list[Backbone] = []
        for f in files:
            try:
                out.extend(read_backbones(f, min_length=self.hparams.min_length))
            except StructureFormatError as exc:
                warnings.warn(f"skipping {exc}", stacklevel=2)
        save_npz(out, cache)
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.train_backbones:
            return
        chains = self.load_all()
        rng = np.random.default_rng(self.hparams.seed)
        perm = rng.permutation(len(chains))
        n_val = int(round(self.hparams.val_fraction * len(chains)))
        if len(chains) > 1:
            n_val = max(1, min(n_val, len(chains) - 1)) if self.hparams.val_fraction > 0 else 0
        self.val_backbones = [chains[i] for i in sorted(perm[:n_val])]
        self.train_backbones = [chains[i] for i in sorted(perm[n_val:])]

    def _loader(self, bbs: list[Backbone], train: bool) -> DataLoader:
        ds = BackboneDataset(
            bbs,
            self.hparams.crop_length,
            seed=self.hparams.seed + (0 if train else 1),
            res_idx_from=self.hparams.get("res_idx_from", "chain"),
        )
        sampler = LengthBatchSampler(
            [ds.item_length(i) for i in range(len(ds))],
            self.hparams.batch_size,
            self.hparams.max_residues,
            shuffle=train,
            seed=self.hparams.seed,
            max_res_squared=self.hparams.get("max_res_squared"),
        )
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_backbones, num_workers=self.hparams.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_backbones, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_backbones, False)
