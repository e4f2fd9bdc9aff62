"""Crystal data: readers, writers, graph conversion and a LightningDataModule.

A crystal is a triple ``M = (A, F, L)``: atom types ``A`` (atomic numbers, ``[N]``), fractional coordinates
``F ∈ [0, 1)^{N×3}`` and a lattice ``L ∈ R^{3×3}`` whose ROWS are the lattice vectors (pymatgen convention, so
Cartesian positions are ``X = F L``).

Readers accept the CDVAE/DiffCSP CSV format (a ``cif`` column of P1 CIF strings plus ``material_id`` and property
columns; Perov-5, Carbon-24, MP-20, MPTS-52 splits, optionally xz/gz compressed), directories of ``*.cif`` files and
pymatgen ``Structure`` / ASE ``Atoms`` objects. Every structure is canonicalised the way CDVAE does it: optional
primitive cell, Niggli reduction, lattice rebuilt from its six parameters (``Lattice.from_parameters``, a fixed
orientation) and fractional coordinates wrapped to ``[0, 1)``.

Crystals are batched with torch-geometric: one :class:`torch_geometric.data.Data` per crystal with fields
``atom_types [N] long``, ``frac_coords [N, 3] float``, ``lattice [1, 3, 3] float``, ``num_atoms [1] long``.
``Batch`` concatenates atoms and keeps a ``batch`` vector, so nothing is padded.

pymatgen, ASE and torch-geometric are imported lazily (the ``crystals`` extra).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytorch_lightning as pl
import torch

from flowsci.io import atomic_write, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from pymatgen.core import Structure
    from torch_geometric.data import Batch, Data

__all__ = [
    "CrystalDataError",
    "SAMPLE_DATASETS",
    "sample_data_path",
    "canonicalize",
    "parse_cif",
    "read_csv",
    "read_cif_dir",
    "read_structures",
    "from_ase",
    "structure_to_data",
    "data_to_structure",
    "batch_to_structures",
    "structures_to_batch",
    "write_cif",
    "write_cifs",
    "CrystalDataset",
    "CrystalDataModule",
]

#: Bundled CSV files (name -> file in ``flowsci/domains/crystals/sample_data``); see its PROVENANCE.md.
SAMPLE_DATASETS: dict[str, str] = {
    "perov_5_val": "perov_5_val.csv.xz",
    "perov_5_test_subset": "perov_5_test_subset.csv.xz",
    "carbon_24_val": "carbon_24_val.csv.xz",
    "carbon_24_test_subset": "carbon_24_test_subset.csv.xz",
    "mp20_test_sample": "mp20_test_sample.csv.xz",
}

MAX_ATOMIC_NUMBER = 100


class CrystalDataError(ValueError):
    """Raised for unreadable crystal input; the message names the file (and row) and the problem."""


def sample_data_path(name: str) -> Path:
    """Path of a bundled dataset.

    Args:
        name: a key of :data:`SAMPLE_DATASETS` (e.g. ``"perov_5_val"``) or a file name inside ``sample_data``.

    Returns:
        The absolute path of the file.
    """
    fname = SAMPLE_DATASETS.get(name, name)
    root = importlib.resources.files(__package__ or "flowsci.domains.crystals") / "sample_data"
    path = Path(str(root / fname))
    if not path.is_file():
        raise CrystalDataError(f"{path}: no bundled crystal dataset named {name!r}; known: {sorted(SAMPLE_DATASETS)}")
    return path


def _resolve(source: str | os.PathLike) -> Path:
    """A user path, or a bundled dataset name."""
    p = Path(source)
    if p.exists():
        return p
    if str(source) in SAMPLE_DATASETS:
        return sample_data_path(str(source))
    raise CrystalDataError(f"{source}: no such file or directory (and not a bundled dataset {sorted(SAMPLE_DATASETS)})")


# --------------------------------------------------------------------------------------------- structures


def canonicalize(structure: Structure, niggli: bool = True, primitive: bool = True) -> Structure:
    """Canonical cell of a crystal (CDVAE convention).

    Args:
        structure: any pymatgen ``Structure`` (ordered; disordered sites are rejected).
        niggli: Niggli-reduce the cell.
        primitive: first reduce to the primitive cell (``Structure.get_primitive_structure``).

    Returns:
        A new ``Structure`` whose lattice is ``Lattice.from_parameters(a, b, c, α, β, γ)`` of the reduced cell
        (fixed orientation) with fractional coordinates wrapped to ``[0, 1)``.
    """
    from pymatgen.core import Lattice, Structure

    if not structure.is_ordered:
        raise CrystalDataError("disordered structure (partial occupancies) is not supported")
    s = structure
    if primitive:
        s = s.get_primitive_structure()
    if niggli:
        s = s.get_reduced_structure()
    frac = np.mod(s.frac_coords, 1.0)
    frac[frac >= 1.0] = 0.0  # mod can round to exactly 1.0 in float64
    return Structure(Lattice.from_parameters(*s.lattice.parameters), s.species, frac, coords_are_cartesian=False)


def parse_cif(text: str, *, source: str = "<string>", niggli: bool = True, primitive: bool = True) -> Structure:
    """Parse one CIF string into a canonical ``Structure``.

    Args:
        text: CIF text.
        source: where it came from (file name and row), used in the error message.
        niggli: see :func:`canonicalize`.
        primitive: see :func:`canonicalize`.

    Raises:
        CrystalDataError: naming ``source`` if pymatgen cannot parse the CIF or it has no sites.
    """
    import warnings

    from pymatgen.core import Structure

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_str(text, fmt="cif")
    except Exception as exc:  # pymatgen raises many exception types for bad CIFs
        raise CrystalDataError(f"{source}: pymatgen cannot parse the CIF ({type(exc).__name__}: {exc})") from exc
    if len(s) == 0:
        raise CrystalDataError(f"{source}: the CIF has no atomic sites")
    try:
        return canonicalize(s, niggli=niggli, primitive=primitive)
    except CrystalDataError as exc:
        raise CrystalDataError(f"{source}: {exc}") from exc


def read_csv(
    path: str | os.PathLike,
    *,
    cif_column: str = "cif",
    id_column: str = "material_id",
    limit: int | None = None,
    niggli: bool = True,
    primitive: bool = True,
    progress: bool = False,
) -> tuple[list[Structure], list[str]]:
    """Read a CDVAE/DiffCSP-style CSV (``material_id``, ``cif``, ... columns; .csv, .csv.xz, .csv.gz).

    Args:
        path: file path or a bundled dataset name (:data:`SAMPLE_DATASETS`).
        cif_column: column holding CIF strings.
        id_column: column of identifiers (row numbers are used if absent).
        limit: read only the first ``limit`` rows.
        niggli: see :func:`canonicalize`.
        primitive: see :func:`canonicalize`.
        progress: show a tqdm progress bar.

    Returns:
        ``(structures, ids)``.

    Raises:
        CrystalDataError: naming the file (and row) when the file is unreadable, the column is missing or a CIF is
            invalid.
    """
    import pandas as pd

    p = _resolve(path)
    try:
        df = pd.read_csv(p, nrows=limit)
    except Exception as exc:
        raise CrystalDataError(f"{p}: cannot read as CSV ({type(exc).__name__}: {exc})") from exc
    if cif_column not in df.columns:
        raise CrystalDataError(f"{p}: no column {cif_column!r} (columns: {list(df.columns)})")
    ids = [str(x) for x in df[id_column]] if id_column in df.columns else [str(i) for i in range(len(df))]
    rows: Iterable[int] = range(len(df))
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc=f"parsing {p.name}")
    structures = []
    for i in rows:
        text = df[cif_column].iloc[i]
        src = f"{p}, row {i} ({id_column}={ids[i]})"
        if not isinstance(text, str):
            raise CrystalDataError(f"{src}: empty {cif_column!r} cell")
        structures.append(parse_cif(text, source=src, niggli=niggli, primitive=primitive))
    return structures, ids


def read_cif_dir(
    directory: str | os.PathLike, *, niggli: bool = True, primitive: bool = True, limit: int | None = None
) -> tuple[list[Structure], list[str]]:
    """Read every ``*.cif`` file of a directory (sorted by name); ids are the file stems.

    Raises:
        CrystalDataError: naming the file if one cannot be parsed, or if the directory holds no CIF.
    """
    d = Path(directory)
    if not d.is_dir():
        raise CrystalDataError(f"{d}: not a directory")
    files = sorted(d.glob("*.cif"))[:limit]
    if not files:
        raise CrystalDataError(f"{d}: no *.cif files")
    structures = [parse_cif(f.read_text(), source=str(f), niggli=niggli, primitive=primitive) for f in files]
    return structures, [f.stem for f in files]


def from_ase(atoms: Any) -> Structure:
    """Convert an ASE ``Atoms`` (periodic in all three directions) to a pymatgen ``Structure``."""
    from pymatgen.io.ase import AseAtomsAdaptor

    if not all(atoms.pbc):
        raise CrystalDataError("ASE Atoms must be periodic in all three directions (pbc=True)")
    return AseAtomsAdaptor.get_structure(atoms)


def read_structures(
    source: str | os.PathLike | Sequence[Any],
    *,
    niggli: bool = True,
    primitive: bool = True,
    limit: int | None = None,
) -> tuple[list[Structure], list[str]]:
    """Read crystals from a CSV file, a CIF file, a CIF directory, a bundled name, or a list of objects.

    Args:
        source: path / bundled dataset name, or a sequence of pymatgen ``Structure`` or ASE ``Atoms``.
        niggli: see :func:`canonicalize`.
        primitive: see :func:`canonicalize`.
        limit: maximum number of crystals.

    Returns:
        ``(structures, ids)`` with canonical structures.
    """
    if isinstance(source, (str, os.PathLike)):
        p = _resolve(source)
        if p.is_dir():
            return read_cif_dir(p, niggli=niggli, primitive=primitive, limit=limit)
        if p.suffix.lower() == ".cif":
            return [parse_cif(p.read_text(), source=str(p), niggli=niggli, primitive=primitive)], [p.stem]
        return read_csv(p, niggli=niggli, primitive=primitive, limit=limit)
    from pymatgen.core import Structure

    out = []
    for i, obj in enumerate(list(source)[:limit]):
        s = obj if isinstance(obj, Structure) else from_ase(obj) if hasattr(obj, "get_cell") else None
        if s is None:
            raise CrystalDataError(f"item {i}: expected a pymatgen Structure or ASE Atoms, got {type(obj).__name__}")
        try:
            out.append(canonicalize(s, niggli=niggli, primitive=primitive))
        except CrystalDataError as exc:
            raise CrystalDataError(f"item {i}: {exc}") from exc
    return out, [str(i) for i in range(len(out))]


# --------------------------------------------------------------------------------------------- graphs


def structure_to_data(structure: Structure, material_id: str | None = None) -> Data:
    """One crystal as a torch-geometric ``Data`` (no canonicalisation; call :func:`canonicalize` first).

    Returns:
        ``Data`` with ``atom_types [N]`` (atomic numbers), ``frac_coords [N, 3]`` (wrapped to [0, 1)),
        ``lattice [1, 3, 3]`` (rows = lattice vectors, Å), ``num_atoms [1]`` and ``num_nodes = N``.
    """
    from torch_geometric.data import Data

    z = [site.specie.Z for site in structure]
    if max(z) > MAX_ATOMIC_NUMBER:
        raise CrystalDataError(f"{material_id or structure.formula}: atomic number > {MAX_ATOMIC_NUMBER}")
    frac = np.mod(structure.frac_coords, 1.0)
    frac[frac >= 1.0] = 0.0
    d = Data(
        atom_types=torch.tensor(z, dtype=torch.long),
        frac_coords=torch.tensor(frac, dtype=torch.float32),
        lattice=torch.tensor(structure.lattice.matrix, dtype=torch.float32).unsqueeze(0),
        num_atoms=torch.tensor([len(z)], dtype=torch.long),
        num_nodes=len(z),
    )
    if material_id is not None:
        d.material_id = material_id
    return d


def data_to_structure(atom_types: torch.Tensor, frac_coords: torch.Tensor, lattice: torch.Tensor) -> Structure:
    """Build a pymatgen ``Structure`` from ``atom_types [N]`` (Z), ``frac_coords [N, 3]``, ``lattice [3, 3]``."""
    from pymatgen.core import Lattice, Structure

    lat = lattice.detach().double().cpu().reshape(3, 3).numpy()
    frac = np.mod(frac_coords.detach().double().cpu().numpy(), 1.0)
    z = [int(v) for v in atom_types.detach().cpu().tolist()]
    return Structure(Lattice(lat), z, frac, coords_are_cartesian=False)


def batch_to_structures(
    atom_types: torch.Tensor, frac_coords: torch.Tensor, lattice: torch.Tensor, num_atoms: torch.Tensor
) -> list[Structure]:
    """Split a batch (``[ΣN]``, ``[ΣN, 3]``, ``[B, 3, 3]``, ``[B]``) into ``B`` Structures."""
    out = []
    start = 0
    for b, n in enumerate(num_atoms.tolist()):
        sl = slice(start, start + int(n))
        out.append(data_to_structure(atom_types[sl], frac_coords[sl], lattice[b]))
        start += int(n)
    return out


def structures_to_batch(structures: Sequence[Structure]) -> Batch:
    """Batch Structures (as given; canonicalise first if needed) into a torch-geometric ``Batch``."""
    from torch_geometric.data import Batch

    return Batch.from_data_list([structure_to_data(s) for s in structures])


# --------------------------------------------------------------------------------------------- writers


def write_cif(structure: Structure, path: str | os.PathLike, symprec: float | None = None) -> Path:
    """Write one CIF atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        structure: the crystal.
        path: destination file.
        symprec: if given, symmetrise with this tolerance (pymatgen ``CifWriter(symprec=...)``); P1 otherwise.

    Returns:
        The written path.
    """
    from pymatgen.io.cif import CifWriter

    return atomic_write_text(path, str(CifWriter(structure, symprec=symprec)))


def write_cifs(structures: Sequence[Structure], out_dir: str | os.PathLike, prefix: str = "sample") -> list[Path]:
    """Write ``out_dir/{prefix}_{i:05d}_{formula}.cif`` for each structure (atomic writes)."""
    out = Path(out_dir)
    paths = []
    for i, s in enumerate(structures):
        formula = s.composition.reduced_formula.replace(" ", "")
        paths.append(write_cif(s, out / f"{prefix}_{i:05d}_{formula}.cif"))
    return paths


# --------------------------------------------------------------------------------------------- datasets


class CrystalDataset(torch.utils.data.Dataset):
    """A list of crystal ``Data`` objects read from a source, cached on disk after the first parse.

    Args:
        source: see :func:`read_structures` (path, bundled name or objects).
        niggli: see :func:`canonicalize`.
        primitive: see :func:`canonicalize`.
        limit: keep the first ``limit`` crystals.
        cache_dir: folder for a parsed cache (``None``: ``$FLOWSCI_CACHE`` or ``~/.cache/flowsci/crystals``;
            ``False`` disables caching). The cache key is the file's sha256 plus the options.
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[Any],
        niggli: bool = True,
        primitive: bool = True,
        limit: int | None = None,
        cache_dir: str | os.PathLike | bool | None = None,
    ) -> None:
        super().__init__()
        cache = _cache_file(source, niggli, primitive, limit, cache_dir)
        if cache is not None and cache.is_file():
            blob = torch.load(cache, weights_only=False)
            self.ids: list[str] = blob["ids"]
            self.data: list[Data] = [
                _make_data(z, f, lat, i)
                for z, f, lat, i in zip(blob["z"], blob["f"], blob["l"], self.ids, strict=False)
            ]
            return
        structures, ids = read_structures(source, niggli=niggli, primitive=primitive, limit=limit)
        self.ids = ids
        self.data = [structure_to_data(s, i) for s, i in zip(structures, ids, strict=False)]
        if cache is not None:
            blob = {
                "ids": ids,
                "z": [d.atom_types for d in self.data],
                "f": [d.frac_coords for d in self.data],
                "l": [d.lattice for d in self.data],
            }
            atomic_write(cache, lambda tmp: torch.save(blob, tmp))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Data:
        return self.data[i]

    def structures(self) -> list[Structure]:
        """The crystals as pymatgen Structures."""
        return [data_to_structure(d.atom_types, d.frac_coords, d.lattice[0]) for d in self.data]


def _make_data(z: torch.Tensor, f: torch.Tensor, lat: torch.Tensor, mid: str) -> Data:
    from torch_geometric.data import Data

    return Data(
        atom_types=z, frac_coords=f, lattice=lat, num_atoms=torch.tensor([len(z)]), num_nodes=len(z), material_id=mid
    )


def _cache_file(
    source: Any, niggli: bool, primitive: bool, limit: int | None, cache_dir: str | os.PathLike | bool | None
) -> Path | None:
    if cache_dir is False or not isinstance(source, (str, os.PathLike)):
        return None
    p = _resolve(source)
    if not p.is_file():
        return None
    h = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    root = (
        Path(os.environ.get("FLOWSCI_CACHE", Path.home() / ".cache" / "flowsci")) / "crystals"
        if cache_dir is None or cache_dir is True
        else Path(cache_dir)
    )
    return root / f"{p.name}.{h}.n{int(niggli)}p{int(primitive)}.l{limit}.pt"


class CrystalDataModule(pl.LightningDataModule):
    """LightningDataModule over crystal CSVs / CIF folders / bundled datasets.

    Batches are torch-geometric ``Batch`` objects (fields of :func:`structure_to_data` plus ``batch``, ``ptr``).

    Args:
        train: training source (default: the bundled Perov-5 validation split, used as a training set because the
            upstream train split is not bundled).
        val: validation source.
        test: test source.
        batch_size: crystals per batch.
        num_workers: DataLoader workers.
        niggli: Niggli-reduce cells.
        primitive: reduce to primitive cells.
        max_train: keep the first ``max_train`` training crystals.
        max_val: keep the first ``max_val`` validation crystals.
        max_test: keep the first ``max_test`` test crystals.
        cache_dir: parsed-data cache folder (see :class:`CrystalDataset`).
    """

    def __init__(
        self,
        train: str | None = "perov_5_val",
        val: str | None = "perov_5_test_subset",
        test: str | None = "perov_5_test_subset",
        batch_size: int = 128,
        num_workers: int = 0,
        niggli: bool = True,
        primitive: bool = True,
        max_train: int | None = None,
        max_val: int | None = 256,
        max_test: int | None = 500,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_set: CrystalDataset | None = None
        self.val_set: CrystalDataset | None = None
        self.test_set: CrystalDataset | None = None

    def _load(self, src: str | None, limit: int | None) -> CrystalDataset | None:
        if src is None:
            return None
        h = self.hparams
        return CrystalDataset(src, niggli=h.niggli, primitive=h.primitive, limit=limit, cache_dir=h.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        """Parse (or load cached) datasets."""
        h = self.hparams
        if self.train_set is None:
            self.train_set = self._load(h.train, h.max_train)
        if self.val_set is None and stage in (None, "fit", "validate"):
            self.val_set = self._load(h.val, h.max_val)
        if self.test_set is None and stage in (None, "test", "predict"):
            self.test_set = self._load(h.test, h.max_test)

    # statistics used by the flows -------------------------------------------------------------------------
    def lattice_scale(self) -> float:
        """``sqrt(mean L_ij²)`` over the training crystals (scalar, so standardisation commutes with rotations)."""
        self.setup("fit")
        lat = torch.cat([d.lattice for d in self.train_set.data])
        return float(lat.pow(2).mean().sqrt())

    def num_atoms_distribution(self) -> torch.Tensor:
        """Empirical distribution ``p(N)`` of atoms per crystal in the training set, shape ``[N_max + 1]``."""
        self.setup("fit")
        n = torch.tensor([int(d.num_atoms) for d in self.train_set.data])
        return torch.bincount(n).float() / len(n)

    def _loader(self, ds: CrystalDataset | None, shuffle: bool) -> Any:
        from torch_geometric.loader import DataLoader

        if ds is None:
            raise CrystalDataError("this split was not configured (None)")
        return DataLoader(
            ds,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            exclude_keys=["material_id"],
        )

    def train_dataloader(self) -> Any:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> Any:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> Any:
        return self._loader(self.test_set, False)

    def predict_dataloader(self) -> Any:
        return self._loader(self.test_set, False)
