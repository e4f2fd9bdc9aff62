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
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytorch_lightning as pl
import torch

from flowsci.errors import InputError
from flowsci.io import atomic_write, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from pymatgen.core import Structure
    from torch_geometric.data import Batch, Data

__all__ = [
    "CrystalDataError",
    "SAMPLE_DATASETS",
    "sample_data_path",
    "canonicalize",
    "check_cell",
    "parse_composition",
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
    "read_compositions",
    "prediction_file_names",
    "write_predictions",
    "read_predictions",
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


class CrystalDataError(InputError):
    """Unreadable crystal input; the message names the file (and row) or argument, and the problem.

    A :class:`flowsci.errors.InputError` (so also a ``ValueError``). The one-argument form
    ``CrystalDataError("source: problem")`` is kept for compatibility.
    """

    def __init__(self, source: str | os.PathLike, problem: str | None = None) -> None:
        if problem is None:
            source, sep, problem = str(source).partition(": ")
            if not sep:
                source, problem = "crystal input", source
        super().__init__(source, problem)


#: Largest number of atoms a composition may ask for (far beyond any dataset; guards ``"Na1e9Cl"``).
MAX_COMPOSITION_ATOMS = 1000


def parse_composition(composition: Any, source: str = "composition") -> list[int]:
    """Atomic numbers of every atom of a chemical formula (``"SrTiO3"`` → ``[38, 22, 8, 8, 8]``).

    Args:
        composition: A formula string or a pymatgen ``Composition``.
        source: What the error names (``"--set composition"``).

    Raises:
        CrystalDataError: An empty or malformed formula (``""``, ``"NaCl-"``), an unknown element (``"Xx2O3"``),
            a non-integer, non-finite or negative amount, an element beyond Z = 100, or more than
            :data:`MAX_COMPOSITION_ATOMS` atoms.
    """
    from pymatgen.core import Composition, Element

    if hasattr(composition, "element_composition"):
        comp = composition
    else:
        text = str(composition).strip()
        if not text:
            raise CrystalDataError(source, f"empty formula {composition!r}")
        for symbol in re.findall(r"[A-Z][a-z]*", text):
            if not Element.is_valid_symbol(symbol):
                raise CrystalDataError(source, f"unknown element {symbol!r} in formula {composition!r}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                comp = Composition(text)
        except Exception as exc:  # pymatgen raises ValueError, KeyError, ... for malformed formulas
            raise CrystalDataError(source, f"malformed formula {composition!r} ({exc})") from exc
    z: list[int] = []
    for el, amt in comp.element_composition.items():
        number = getattr(el, "Z", 0)
        if not isinstance(el, Element) or number < 1:
            raise CrystalDataError(source, f"unknown element {str(el)!r} in formula {composition!r}")
        if number > MAX_ATOMIC_NUMBER:
            raise CrystalDataError(source, f"element {el} (Z = {number}) in {composition!r} is beyond Z = 100")
        if not math.isfinite(amt) or amt < 0 or abs(amt - round(amt)) > 1e-6:
            raise CrystalDataError(source, f"formula {composition!r} has a non-integer amount of {el}: {amt}")
        if len(z) + round(amt) > MAX_COMPOSITION_ATOMS:
            raise CrystalDataError(source, f"formula {composition!r} has more than {MAX_COMPOSITION_ATOMS} atoms")
        z += [number] * int(round(amt))
    if not z:
        raise CrystalDataError(source, f"formula {composition!r} has no atoms")
    return z


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


_CELL_KEYS = ("_cell_length_a", "_cell_length_b", "_cell_length_c", "_cell_angle_alpha", "_cell_angle_beta")
_CELL_KEYS = (*_CELL_KEYS, "_cell_angle_gamma")
#: A cell whose volume is below this fraction of ``a·b·c`` is singular (its vectors are (nearly) coplanar).
SINGULAR_VOLUME_FRACTION = 1e-6


def _cif_number(raw: str) -> float:
    return float(re.sub(r"\(\d+\)$", "", raw.strip().strip("'\"")))


def check_cell(lengths: Sequence[float], angles: Sequence[float], source: str = "lattice", what: str = "cell") -> None:
    """Raise :class:`CrystalDataError` unless ``a, b, c > 0`` are finite and the angles give a non-singular cell.

    Args:
        lengths: ``(a, b, c)`` in Å.
        angles: ``(alpha, beta, gamma)`` in degrees.
        source: What the error names (the file and row).
        what: What the numbers are, in the message.
    """
    values = [*lengths, *angles]
    names = ["a", "b", "c", "alpha", "beta", "gamma"]
    for name, v in zip(names, values, strict=True):
        if not math.isfinite(v):
            raise CrystalDataError(source, f"non-finite {what} parameter {name} = {v}")
    for name, v in zip(names[:3], lengths, strict=True):
        if v <= 0:
            raise CrystalDataError(source, f"{what} length {name} = {v} is not positive")
    for name, v in zip(names[3:], angles, strict=True):
        if not 0 < v < 180:
            raise CrystalDataError(source, f"{what} angle {name} = {v} is not between 0 and 180 degrees")
    ca, cb, cg = (math.cos(math.radians(v)) for v in angles)
    frac = 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg
    if frac <= SINGULAR_VOLUME_FRACTION**2:
        raise CrystalDataError(
            source,
            f"singular lattice: the {what} angles {tuple(angles)} give (nearly) zero volume (coplanar lattice vectors)",
        )


def _check_cif_cell(text: str, source: str) -> None:
    """Check the cell parameters of a CIF before pymatgen (which hides a singular lattice as "no structures")."""
    found = {}
    for key in _CELL_KEYS:
        m = re.search(rf"^\s*{key}\s+(\S+)", text, flags=re.MULTILINE)
        if m is None:
            return  # pymatgen will say what is missing
        try:
            found[key] = _cif_number(m.group(1))
        except ValueError:
            raise CrystalDataError(source, f"malformed {key} {m.group(1)!r}") from None
    values = list(found.values())
    check_cell(values[:3], values[3:], source)


def _check_structure(s: Structure, source: str) -> None:
    lattice = np.asarray(s.lattice.matrix, dtype=float)
    frac = np.asarray(s.frac_coords, dtype=float)
    if not np.isfinite(lattice).all():
        raise CrystalDataError(source, "non-finite lattice")
    if not np.isfinite(frac).all():
        row = int(np.argwhere(~np.isfinite(frac))[0][0])
        raise CrystalDataError(source, f"non-finite fractional coordinate of site {row} ({s[row].species_string})")
    check_cell(s.lattice.abc, s.lattice.angles, source)
    for i, site in enumerate(s):
        for sp in site.species:
            z = getattr(sp, "Z", 0)
            if not isinstance(z, int) or not 1 <= z <= MAX_ATOMIC_NUMBER:
                raise CrystalDataError(source, f"site {i}: unknown or unsupported element {str(sp)!r}")


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
    from pymatgen.core import Structure

    if not isinstance(text, str) or not text.strip():
        raise CrystalDataError(source, "empty CIF")
    if "\x00" in text:
        raise CrystalDataError(source, "not a CIF (binary data)")
    _check_cif_cell(text, source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            s = Structure.from_str(text, fmt="cif")
        except Exception as exc:  # pymatgen raises many exception types for bad CIFs
            hint = "; ".join(dict.fromkeys(str(w.message) for w in caught))[:300]
            raise CrystalDataError(
                source, f"pymatgen cannot parse the CIF ({type(exc).__name__}: {exc})" + (f"; {hint}" if hint else "")
            ) from exc
    if len(s) == 0:
        raise CrystalDataError(source, "the CIF has no atomic sites")
    _check_structure(s, source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = canonicalize(s, niggli=niggli, primitive=primitive)
    except CrystalDataError as exc:
        raise CrystalDataError(source, exc.problem) from exc
    except Exception as exc:  # pymatgen's reductions on degenerate cells
        raise CrystalDataError(source, f"cannot reduce the cell ({type(exc).__name__}: {exc})") from exc
    _check_structure(out, source)
    return out


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
    structures = [parse_cif(_read_text(f), source=str(f), niggli=niggli, primitive=primitive) for f in files]
    return structures, [f.stem for f in files]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CrystalDataError(str(path), f"cannot read the file ({type(exc).__name__}: {exc})") from exc


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
            return [parse_cif(_read_text(p), source=str(p), niggli=niggli, primitive=primitive)], [p.stem]
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


#: Characters kept in a CIF file name made from a ``material_id`` (others become ``_``).
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+=-]")
#: Columns a CSV without CIFs may give its compositions in (checked in this order).
FORMULA_COLUMNS = ("formula", "composition", "pretty_formula")


def _file_stem(material_id: str, source: str) -> str:
    stem = _SAFE_NAME.sub("_", str(material_id).strip())
    if not stem.strip("._"):
        raise CrystalDataError(source, f"material_id {material_id!r} gives no usable file name")
    return stem


def read_compositions(
    source: str | os.PathLike,
    *,
    id_column: str = "material_id",
    cif_column: str = "cif",
    primitive: bool = True,
    limit: int | None = None,
    progress: bool = False,
) -> tuple[list[list[int]], list[str], list[Structure] | None]:
    """The compositions of a CSP input: a CDVAE-style CSV, a folder of CIFs, one CIF or a bundled dataset name.

    Each crystal's cell is read and canonicalised as the training data are (:func:`parse_cif`; primitive cell
    by default, so a conventional cell of Z formula units gives the primitive cell's atoms, as in the CSP
    benchmarks). A CSV without a ``cif_column`` may give formulas instead, in a ``formula``, ``composition`` or
    ``pretty_formula`` column (the cell then holds exactly the atoms of the formula: ``Sr2Ti2O6`` for Z = 2).

    Args:
        source: Path of a ``.csv`` (``.csv.xz``/``.gz``), a ``.cif`` file, a folder of ``*.cif`` files, or a name
            of :data:`SAMPLE_DATASETS`.
        id_column: CSV column of identifiers (row numbers if absent); CIFs are named by their file stem.
        cif_column: CSV column of CIF strings.
        primitive: reduce each CIF to its primitive cell before taking its atoms.
        limit: read only the first ``limit`` crystals.
        progress: a tqdm progress bar while parsing.

    Returns:
        ``(atomic_numbers, ids, structures)``: the atomic numbers of every cell, one identifier per row (unique,
        usable as file names, see :func:`prediction_file_names`) and the parsed crystals (the ground truth a
        prediction can be scored against), or ``None`` when the CSV gives formulas only.

    Raises:
        CrystalDataError: naming the file (and row) for a missing file, an unreadable CSV or CIF, a CSV with
            neither CIFs nor formulas, an unknown element or a duplicate identifier.
    """
    import pandas as pd

    p = _resolve(source)
    structures: list[Structure] | None
    if p.is_dir() or p.suffix.lower() == ".cif":
        structures, ids = read_structures(p, niggli=True, primitive=primitive, limit=limit)
        sources = [str(p / f"{i}.cif") if p.is_dir() else str(p) for i in ids]
    else:
        try:
            df = pd.read_csv(p, nrows=limit)
        except Exception as exc:
            raise CrystalDataError(str(p), f"cannot read as CSV ({type(exc).__name__}: {exc})") from exc
        ids = [str(x) for x in df[id_column]] if id_column in df.columns else [str(i) for i in range(len(df))]
        sources = [f"{p}, row {i} ({id_column}={ids[i]})" for i in range(len(df))]
        if cif_column in df.columns:
            structures, _ = read_csv(
                p, cif_column=cif_column, id_column=id_column, limit=limit, primitive=primitive, progress=progress
            )
        else:
            column = next((c for c in FORMULA_COLUMNS if c in df.columns), None)
            if column is None:
                raise CrystalDataError(
                    str(p),
                    f"no {cif_column!r} column and no formula column {list(FORMULA_COLUMNS)} "
                    f"(columns: {list(df.columns)})",
                )
            structures = None
            zs = [parse_composition(df[column].iloc[i], source=sources[i]) for i in range(len(df))]
    if not ids:
        raise CrystalDataError(str(p), "no crystals to predict")
    if structures is not None:
        zs = [[site.specie.Z for site in s] for s in structures]
    seen: dict[str, int] = {}
    for i, mid in enumerate(ids):
        stem = _file_stem(mid, sources[i]).lower()  # case-insensitive file systems
        if stem in seen:
            raise CrystalDataError(
                sources[i], f"duplicate material_id {mid!r} (also {sources[seen[stem]]}); ids name the output files"
            )
        seen[stem] = i
    return zs, ids, structures


def prediction_file_names(ids: Sequence[str], num_samples: int) -> list[list[str]]:
    """CIF file names of CSP predictions: ``<material_id>.cif`` for one sample, else ``<material_id>_<j>.cif``.

    ``j = 0 … k−1``. Characters other than letters, digits and ``._+=-`` in an identifier become ``_``. This is the
    layout :func:`read_predictions` and :func:`flowsci.domains.crystals.metrics.evaluate_csp_files` score, and the
    one-file-per-crystal layout other CSP scorers read.
    """
    stems = [_file_stem(i, "material_id") for i in ids]
    if num_samples == 1:
        return [[f"{s}.cif"] for s in stems]
    return [[f"{s}_{j}.cif" for j in range(num_samples)] for s in stems]


def write_predictions(
    predictions: Sequence[Sequence[Structure]], ids: Sequence[str], out_dir: str | os.PathLike
) -> list[Path]:
    """Write ``predictions[i]`` (k Structures for crystal ``ids[i]``) as :func:`prediction_file_names` (atomic).

    Raises:
        ValueError: ``predictions`` and ``ids`` differ in length, or crystals have different numbers of samples.
    """
    if len(predictions) != len(ids):
        raise ValueError(f"write_predictions: {len(predictions)} prediction lists for {len(ids)} ids")
    ks = {len(p) for p in predictions}
    if len(ks) > 1:
        raise ValueError(f"write_predictions: every crystal needs the same number of samples, got {sorted(ks)}")
    names = prediction_file_names(ids, ks.pop() if ks else 1)
    out = Path(out_dir)
    pairs = [(s, n) for preds, row in zip(predictions, names, strict=True) for s, n in zip(preds, row, strict=True)]
    return [write_cif(s, out / n) for s, n in pairs]


def read_predictions(directory: str | os.PathLike, ids: Sequence[str]) -> list[list[Structure]]:
    """The predicted crystals of every id in a folder written by :func:`write_predictions` (``[]`` if none).

    Files are ``<id>.cif`` (one sample each: the layout when every id with files has one) or ``<id>_<j>.cif``
    (``j`` sorted numerically); cells are read as written (no reduction).

    Raises:
        CrystalDataError: naming the file if a CIF cannot be parsed, or if ``directory`` is not a folder.
    """
    d = Path(directory)
    if not d.is_dir():
        raise CrystalDataError(str(d), "not a directory")
    by_name = {f.name: f for f in d.glob("*.cif")}
    direct: list[Path | None] = []
    numbered: list[list[Path]] = []
    for mid in ids:
        stem = _file_stem(mid, "material_id")
        direct.append(by_name.get(f"{stem}.cif"))
        pattern = re.compile(rf"{re.escape(stem)}_(\d+)\.cif")
        matches = [(pattern.fullmatch(n), f) for n, f in by_name.items()]
        numbered.append([f for _, f in sorted((int(m.group(1)), f) for m, f in matches if m)])
    # one-file layout iff every id with files has its <id>.cif (ids may themselves end in _<digits>)
    single = all(d_ is not None for d_, n_ in zip(direct, numbered, strict=True) if d_ is not None or n_)
    out: list[list[Structure]] = []
    for d_, n_ in zip(direct, numbered, strict=True):
        found = ([d_] if d_ is not None else []) if single else n_
        out.append([parse_cif(_read_text(f), source=str(f), niggli=False, primitive=False) for f in found])
    return out


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
            loaded = _load_cache(cache)
            if loaded is not None:
                self.ids, self.data = loaded
                return
        if cache is not None:
            _check_cache_dir(cache.parent)  # fail before the parse, not after it
        structures, ids = read_structures(source, niggli=niggli, primitive=primitive, limit=limit)
        self.ids: list[str] = ids
        self.data: list[Data] = [structure_to_data(s, i) for s, i in zip(structures, ids, strict=False)]
        if cache is not None:
            blob = {
                "ids": ids,
                "z": [d.atom_types for d in self.data],
                "f": [d.frac_coords for d in self.data],
                "l": [d.lattice for d in self.data],
            }
            try:
                atomic_write(cache, lambda tmp: torch.save(blob, tmp))
            except OSError as exc:
                raise _cache_error(cache.parent, exc) from exc

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Data:
        return self.data[i]

    def structures(self) -> list[Structure]:
        """The crystals as pymatgen Structures."""
        return [data_to_structure(d.atom_types, d.frac_coords, d.lattice[0]) for d in self.data]


def _cache_error(folder: Path, exc: BaseException) -> CrystalDataError:
    return CrystalDataError(
        str(folder),
        f"cannot write the parsed-data cache here ({type(exc).__name__}: {exc}); choose another folder "
        "(cache_dir=..., or the FLOWSCI_CACHE environment variable) or disable the cache (cache_dir=False)",
    )


def _check_cache_dir(folder: Path) -> None:
    """Create the cache folder and check that it is writable; one :class:`CrystalDataError` if not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission on {folder}")
    except OSError as exc:  # FileExistsError / NotADirectoryError (a file in the way), PermissionError...
        raise _cache_error(folder, exc) from exc


def _load_cache(cache: Path) -> tuple[list[str], list[Data]] | None:
    """The parsed crystals of a cache file (``torch.load(weights_only=True)``), or ``None`` if it is unusable.

    The cache is derived data: a truncated, foreign or non-finite cache is reported and re-made, never trusted.
    """
    try:
        blob = torch.load(cache, weights_only=True, map_location="cpu")
        ids = [str(i) for i in blob["ids"]]
        z, f, lat = list(blob["z"]), list(blob["f"]), list(blob["l"])
        if not len(ids) == len(z) == len(f) == len(lat):
            raise ValueError("inconsistent lengths")
        for zi, fi, li in zip(z, f, lat, strict=True):
            if not (isinstance(zi, torch.Tensor) and isinstance(fi, torch.Tensor) and isinstance(li, torch.Tensor)):
                raise ValueError("not tensors")
            if not (torch.isfinite(fi).all() and torch.isfinite(li).all()) or fi.shape != (len(zi), 3):
                raise ValueError("non-finite or malformed coordinates")
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is re-made from the source
        warnings.warn(
            f"{cache}: ignoring an unusable crystal cache ({type(exc).__name__}: {exc}); re-parsing", stacklevel=3
        )
        return None
    return ids, [_make_data(zi, fi, li, i) for zi, fi, li, i in zip(z, f, lat, ids, strict=True)]


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
