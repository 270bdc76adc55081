"""MovieLens data: loaders, download + checksum + cache, the two protocols, batching (numpy / scipy.sparse).

Public API (what the models, the harness and the tests call)
------------------------------------------------------------
Loading
    load_dataset(name_or_path, data_dir=None) -> Dataset
        name: "ml-1m", "ml-1m-neumf", "ml-100k", "ml-latest-small", "synthetic"; or a local path to a
        folder, a GroupLens zip, or one ratings file (ratings.dat, u.data, ratings.csv, *.train.rating).
    synthetic(n_users=6040, n_items=3706, n_ratings=1_000_209, seed=0) -> Dataset   (ML-1M shaped)
    data_dir(explicit=None) -> Path       $POINCARE_PARITY_DATA, else the user cache directory
    Dataset: name, users, items (int64 contiguous indices), ratings (float32), timestamps (int64 or
        None), user_ids, item_ids (index -> the dataset's own id), implicit, duplicates_dropped,
        source, neumf_test (NeuMFTest or None); n_users, n_items, n_ratings; matrix() -> CSR.

Protocols (a Split: everything one run needs; every matrix is users x items, scipy CSR, float32)
    split_seed(data, quantile=0.98, validation_quantile=None) -> Split
    split_neumf(data, validation_seed=0, n_negatives=99, negatives_seed=0) -> Split
    make_split(data, config: parity.config.DataConfig) -> Split      (dispatch on config.protocol)
    load_split(config: DataConfig, data_dir=None) -> Split
    Split: protocol, dataset, n_users, n_items,
        train       the matrix the final model trains on (seed: ratings; neumf: 1.0)
        test        HeldOut scored against `train`
        fit         train minus the validation carve-out (for tuning only)
        validation  HeldOut scored against `fit` (carved from training only: the test never tunes)
        info        dict of counts (JSON-able): sizes, the split time, dropped rows and users
        train_users() / fit_users()   rows with at least one entry (the rows an autoencoder trains on)
    HeldOut: protocol, users (int64, the evaluated users, ascending), truth (CSR of the held-out
        entries), seen (the training CSR the scores come from), eligible (bool per item: seed ranks
        only items seen in `seen`), candidates ((len(users), 1 + n_negatives) int64, neumf only:
        column 0 is the held-out item, columns 1.. its fixed negatives).

Batching (the same batches for both frameworks)
    batch_order(n_rows, batch_size, seed, epoch) -> list[np.ndarray]   positions 0..n_rows-1
    dense_rows(csr, rows, dtype=np.float32) -> np.ndarray (len(rows), n_cols)

Download
    download(name=None, data_dir=None, downloader=None) -> list[Path]   pinned hashes, pooch
    REMOTE: dataset -> RemoteFile entries (url, sha256, where it comes from)

Errors (all subclass DataError; the CLI prints them without a traceback)
    DataFormatError (file, line, text), DatasetNotFoundError, ChecksumError, DownloadError

Conventions
-----------
- Ids are remapped to contiguous indices in the order of the dataset's own ids (sorted); the maps
  are kept (`user_ids`, `item_ids`). The NeuMF files are already contiguous (0..6039, 0..3705), and
  their negatives refer to that numbering, so they are kept as they are.
- Duplicate (user, item) pairs keep the latest (by timestamp; on equal or missing timestamps, the
  later line); `duplicates_dropped` says how many went.
- `seed` split: timepoint = the `quantile` of all timestamps (numpy "nearest" method, so it is an
  actual timestamp); rows at or after it are the test. Test rows whose user or item has no
  training row are dropped and counted. A user counts if it keeps at least one held-out item. The
  validation carve-out applies the same rule to the training rows alone.
- `neumf` split: the NeuMF files' held-out item and 99 negatives. Validation: one training item per
  user (users with >= 2): the latest when timestamps exist, else drawn with `validation_seed`; 99
  negatives drawn from the items the user never touched (train, test). Datasets without NeuMF
  files get a leave-latest-out test the same way (negatives drawn with `negatives_seed`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "DataError", "DataFormatError", "DatasetNotFoundError", "ChecksumError", "DownloadError",
    "Dataset", "NeuMFTest", "HeldOut", "Split", "RemoteFile", "REMOTE", "DATASETS",
    "data_dir", "load_dataset", "synthetic", "split_seed", "split_neumf", "make_split", "load_split",
    "batch_order", "dense_rows", "download", "derive_neumf_train", "cli",
]

# Names `load_dataset` resolves without a path.
DATASETS = ("ml-1m", "ml-1m-neumf", "ml-100k", "ml-latest-small", "synthetic")


# ----------------------------------------------------------------------------------------- errors


class DataError(Exception):
    """A problem with the data a user gave or asked for (printed by the CLI without a traceback)."""


class DataFormatError(DataError, ValueError):
    """A malformed or out-of-range line: names the file, the 1-based line number and the text."""

    def __init__(self, path: str | os.PathLike, line: int | None, text: str | None, reason: str):
        self.path, self.line, self.text, self.reason = str(path), line, text, reason
        where = f"{self.path}, line {line}" if line is not None else self.path
        shown = f": {text!r}" if text is not None else ""
        super().__init__(f"{where}: {reason}{shown}")


class DatasetNotFoundError(DataError, FileNotFoundError):
    """No files for a dataset where they were looked for."""


class ChecksumError(DataError):
    """A file's hash is not the pinned one (the file has been removed)."""


class DownloadError(DataError):
    """A file could not be fetched (offline, or the server refused)."""


# --------------------------------------------------------------------------------------- datasets


@dataclasses.dataclass(frozen=True)
class NeuMFTest:
    """The NeuMF held-out data: one item per user and its fixed negatives (NeuMF numbering)."""

    users: np.ndarray  # (n,) int64
    items: np.ndarray  # (n,) int64
    negatives: np.ndarray  # (n, n_negatives) int64


@dataclasses.dataclass(frozen=True)
class Dataset:
    """All interactions of one dataset, as parallel arrays over rows, with the id maps.

    users / items are contiguous indices; `user_ids[u]` / `item_ids[i]` give the dataset's own ids.
    For ml-1m-neumf the rows are the training pairs and `neumf_test` holds the held-out data.
    """

    name: str
    users: np.ndarray  # (n,) int64
    items: np.ndarray  # (n,) int64
    ratings: np.ndarray  # (n,) float32; 1.0 where the file has no rating
    timestamps: np.ndarray | None  # (n,) int64 unix seconds, or None
    user_ids: np.ndarray
    item_ids: np.ndarray
    implicit: bool = False
    duplicates_dropped: int = 0
    source: str = ""
    neumf_test: NeuMFTest | None = None
    unknown_items_dropped: int = 0  # ratings of movies absent from the catalogue beside the file

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_ratings(self) -> int:
        return len(self.users)

    def matrix(self, rows: np.ndarray | None = None, binary: bool | None = None) -> sp.csr_matrix:
        """Users x items CSR (float32) of the selected rows (boolean mask or indices; default all).

        `binary` (default: `implicit`) stores 1.0 instead of the rating.
        """
        binary = self.implicit if binary is None else binary
        sel = slice(None) if rows is None else rows
        values = np.ones(len(self.users[sel]), np.float32) if binary else self.ratings[sel]
        return _csr(self.users[sel], self.items[sel], values, (self.n_users, self.n_items))


def _csr(users: np.ndarray, items: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR with sorted indices; (user, item) pairs are unique by construction, so nothing sums."""
    m = sp.csr_matrix((np.asarray(values, np.float32), (users, items)), shape=shape, dtype=np.float32)
    m.sort_indices()
    return m


# ---------------------------------------------------------------------------------- file formats


@dataclasses.dataclass(frozen=True)
class _Format:
    """One ratings file layout."""

    name: str
    sep: bytes
    header: bool
    rating_min: float
    rating_max: float
    rating_step: float


_ML1M = _Format("ml-1m ratings.dat (UserID::MovieID::Rating::Timestamp)", b"::", False, 1, 5, 1)
_ML100K = _Format("ml-100k u.data (user<TAB>item<TAB>rating<TAB>timestamp)", b"\t", False, 1, 5, 1)
_CSV = _Format("ratings.csv (userId,movieId,rating,timestamp)", b",", True, 0.5, 5, 0.5)
# NeuMF files: ids 0-based, ratings (when present) on ML-1M's 1..5 scale.
_NEUMF = _Format("NeuMF *.rating (user<TAB>item[<TAB>rating<TAB>timestamp])", b"\t", False, 1, 5, 1)


def _read_bytes(path: Path, member: str | None = None) -> bytes:
    """The bytes of `path`, or of `member` inside the zip `path`; a bad zip is a DataFormatError."""
    if member is None:
        return path.read_bytes()
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.read(member)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:  # truncated: bad directory, data or CRC
        raise DataFormatError(path, None, None, f"truncated or corrupt zip ({err}); delete it and download again") from err
    except KeyError as err:
        raise DataFormatError(path, None, None, f"the zip has no member {member!r}") from err


def _normalise_newlines(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n") if b"\r" in raw else raw


def _lines(raw: bytes) -> list[bytes]:
    lines = raw.split(b"\n")
    return lines[:-1] if lines and lines[-1] == b"" else lines


def _parse_table(raw: bytes, path: str, fmt: _Format, n_columns: int, float_columns: Sequence[int] = ()) -> np.ndarray:
    """Parse a delimited numeric table fast (pandas C engine); on any failure, find the bad line.

    Returns an (n_rows, n_columns) float64 array (exact for ids and unix timestamps < 2**53).
    """
    raw = _normalise_newlines(raw)
    body = raw
    first_line = 1
    if fmt.header:
        cut = raw.find(b"\n")
        body = b"" if cut < 0 else raw[cut + 1 :]
        first_line = 2
    if not body.strip():
        raise DataFormatError(path, None, None, "the file has no ratings (it is empty)")
    n_lines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
    # Every line has exactly n_columns - 1 separators; a blank, short or long line breaks the count.
    if body.count(fmt.sep) == (n_columns - 1) * n_lines:
        text = body.replace(fmt.sep, b"\t") if fmt.sep != b"\t" else body
        try:
            table = pd.read_csv(
                io.BytesIO(text), sep="\t", header=None, dtype=np.float64, engine="c",
                na_filter=True, skip_blank_lines=False,
            ).to_numpy()
        except (ValueError, pd.errors.ParserError):
            table = None
        if table is not None and table.shape == (n_lines, n_columns) and np.isfinite(table).all():
            return table
    _locate_bad_line(body, path, fmt, n_columns, first_line, float_columns)
    raise DataFormatError(path, None, None, "could not parse the file")  # not reached: the locator raises


def _locate_bad_line(body: bytes, path: str, fmt: _Format, n_columns: int, first_line: int,
                     float_columns: Sequence[int]) -> None:
    """Slow path, run only after the fast parse failed: raise for the first malformed line."""
    sep = fmt.sep
    for offset, line in enumerate(_lines(body)):
        text = line.decode("latin-1")
        fields = line.split(sep)
        if len(fields) != n_columns:
            raise DataFormatError(path, first_line + offset, text,
                                  f"expected {n_columns} fields separated by {sep.decode()!r}, found {len(fields)} ({fmt.name})")
        for col, field in enumerate(fields):
            try:
                value = float(field) if col in float_columns else int(field)
            except ValueError:
                raise DataFormatError(path, first_line + offset, text, f"field {col + 1} is not a number") from None
            if not np.isfinite(value):
                raise DataFormatError(path, first_line + offset, text, f"field {col + 1} is not finite")


def _line_text(raw: bytes, fmt: _Format, row: int) -> tuple[int, str]:
    """(1-based line number, text) of data row `row` (used only to report an error)."""
    lines = _lines(_normalise_newlines(raw))
    index = row + (1 if fmt.header else 0)
    return index + 1, lines[index].decode("latin-1")


def _check_values(raw: bytes, path: str, fmt: _Format, table: np.ndarray, id_columns: Sequence[int],
                  rating_column: int | None) -> None:
    """Ids (and timestamps) are non-negative integers; ratings lie on the format's scale and grid."""
    for col in id_columns:
        bad = np.flatnonzero((table[:, col] < 0) | (table[:, col] != np.round(table[:, col])))
        if bad.size:
            line, text = _line_text(raw, fmt, int(bad[0]))
            what = "timestamp" if col == 3 else "id"
            raise DataFormatError(path, line, text, f"field {col + 1} must be a non-negative integer {what}")
    if rating_column is not None:
        r = table[:, rating_column]
        on_grid = np.isclose((r - fmt.rating_min) / fmt.rating_step, np.round((r - fmt.rating_min) / fmt.rating_step))
        bad = np.flatnonzero((r < fmt.rating_min) | (r > fmt.rating_max) | ~on_grid)
        if bad.size:
            line, text = _line_text(raw, fmt, int(bad[0]))
            raise DataFormatError(path, line, text,
                                  f"rating {r[bad[0]]:g} is outside the scale {fmt.rating_min:g}..{fmt.rating_max:g} "
                                  f"in steps of {fmt.rating_step:g}")


def _explicit_dataset(name: str, source: str, table: np.ndarray) -> Dataset:
    """user, item, rating, timestamp columns -> Dataset (ids remapped, duplicates: latest kept)."""
    raw_users = table[:, 0].astype(np.int64)
    raw_items = table[:, 1].astype(np.int64)
    ratings = table[:, 2].astype(np.float32)
    timestamps = table[:, 3].astype(np.int64)
    keep = _latest_unique(raw_users, raw_items, timestamps)
    user_ids, users = np.unique(raw_users[keep], return_inverse=True)
    item_ids, items = np.unique(raw_items[keep], return_inverse=True)
    return Dataset(
        name=name, users=users.astype(np.int64), items=items.astype(np.int64), ratings=ratings[keep],
        timestamps=timestamps[keep], user_ids=user_ids, item_ids=item_ids, implicit=False,
        duplicates_dropped=int(len(raw_users) - keep.size), source=source,
    )


def _latest_unique(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None) -> np.ndarray:
    """Row indices (in file order) keeping, per (user, item), the latest row; later line wins ties."""
    line = np.arange(len(users))
    keys = (line,) if timestamps is None else (line, timestamps)
    order = np.lexsort(keys + (items, users))  # last key is primary: user, item, then time, then line
    u, i = users[order], items[order]
    last_of_pair = np.ones(len(order), bool)
    last_of_pair[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    return np.sort(order[last_of_pair])


def _load_ratings_file(name: str, path: Path, fmt: _Format, member: str | None = None) -> Dataset:
    raw = _read_bytes(path, member)
    shown = f"{path}!{member}" if member else str(path)
    table = _parse_table(raw, shown, fmt, 4, float_columns=(2,))
    _check_values(raw, shown, fmt, table, id_columns=(0, 1, 3), rating_column=2)
    catalogue = _read_catalogue(path, member)
    unknown = 0
    if catalogue is not None:
        known = np.isin(table[:, 1].astype(np.int64), catalogue)
        unknown = int((~known).sum())
        table = table[known]
        if not len(table):
            raise DataFormatError(shown, None, None, "no rating refers to a movie of the catalogue beside it")
    return dataclasses.replace(_explicit_dataset(name, shown, table), unknown_items_dropped=unknown)


def _read_catalogue(path: Path, member: str | None) -> np.ndarray | None:
    """Movie ids of the catalogue beside a ratings file (movies.dat, u.item, movies.csv), if present.

    Ratings of movies missing from it are dropped and counted: GroupLens ratings always refer to
    the catalogue, so an orphan row is damage (the shared ml-latest-small has one appended line).
    """
    filename = Path(member).name if member else path.name
    if filename not in _CATALOGUE:
        return None
    cat_name, sep, header = _CATALOGUE[filename]
    if member is None:
        cat_path = path.parent / cat_name
        if not cat_path.exists():
            return None
        raw = cat_path.read_bytes()
    else:
        cat_member = str(Path(member).parent / cat_name) if "/" in member else cat_name
        with zipfile.ZipFile(path) as zf:
            if cat_member not in zf.namelist():
                return None
        raw = _read_bytes(path, cat_member)
    lines = _lines(_normalise_newlines(raw))[1 if header else 0 :]
    try:  # the id is the first field; titles after it may hold the separator, but never before it
        return np.array([int(line.split(sep, 1)[0]) for line in lines if line.strip()], np.int64)
    except ValueError:
        return None  # not a catalogue we understand: keep every rating


def _load_neumf(folder: Path, prefix: str, name: str) -> Dataset:
    """`<prefix>.train.rating` (2 or 4 columns), `.test.rating`, `.test.negative` from `folder`."""
    train_path = folder / f"{prefix}.train.rating"
    test_path = folder / f"{prefix}.test.rating"
    neg_path = folder / f"{prefix}.test.negative"
    for p in (train_path, test_path, neg_path):
        if not p.exists():
            raise DatasetNotFoundError(f"{p} is missing: the NeuMF protocol needs {prefix}.train.rating, "
                                       f"{prefix}.test.rating and {prefix}.test.negative in {folder}")
    train = _read_neumf_rating(train_path)
    test = _read_neumf_rating(test_path)
    neg_raw = _normalise_newlines(neg_path.read_bytes())
    # "(user,item)<TAB>neg_1<TAB>...": drop the parentheses, the comma becomes one more field
    neg_text = neg_raw.replace(b"(", b"").replace(b")", b"").replace(b",", b"\t")
    n_fields = neg_text[: neg_text.find(b"\n")].count(b"\t") + 1 if b"\n" in neg_text else neg_text.count(b"\t") + 1
    try:
        neg = _parse_table(neg_text, str(neg_path), _NEUMF, n_fields)
    except DataFormatError as err:  # report the line as written, not as rewritten
        if err.line is not None:
            text = _lines(neg_raw)[err.line - 1].decode("latin-1")
            raise DataFormatError(neg_path, err.line, text, err.reason + " (expected '(user,item)<TAB>neg_1<TAB>...')") from None
        raise
    _check_values(neg_text, str(neg_path), _NEUMF, neg, id_columns=range(n_fields), rating_column=None)
    neg = neg.astype(np.int64)
    t_users, t_items = test[:, 0].astype(np.int64), test[:, 1].astype(np.int64)
    if len(neg) != len(test) or not (np.array_equal(neg[:, 0], t_users) and np.array_equal(neg[:, 1], t_items)):
        bad = next((r for r in range(min(len(neg), len(test))) if (neg[r, 0], neg[r, 1]) != (t_users[r], t_items[r])),
                   min(len(neg), len(test)))
        raise DataFormatError(neg_path, bad + 1, None,
                              f"line {bad + 1} must be the (user,item) of line {bad + 1} of {test_path.name} "
                              f"({len(neg)} lines here, {len(test)} there)")
    users = train[:, 0].astype(np.int64)
    items = train[:, 1].astype(np.int64)
    n_users = int(max(users.max(), t_users.max())) + 1
    n_items = int(max(items.max(), t_items.max(), neg[:, 2:].max())) + 1
    has_rating = train.shape[1] == 4
    timestamps = train[:, 3].astype(np.int64) if has_rating else None
    keep = _latest_unique(users, items, timestamps)
    ratings = (train[:, 2] if has_rating else np.ones(len(train))).astype(np.float32)
    return Dataset(
        name=name, users=users[keep], items=items[keep], ratings=ratings[keep],
        timestamps=None if timestamps is None else timestamps[keep],
        user_ids=np.arange(n_users, dtype=np.int64), item_ids=np.arange(n_items, dtype=np.int64),
        implicit=True, duplicates_dropped=int(len(users) - keep.size), source=str(folder),
        neumf_test=NeuMFTest(users=t_users, items=t_items, negatives=neg[:, 2:]),
    )


def _read_neumf_rating(path: Path) -> np.ndarray:
    """A NeuMF `*.rating` file, 2 columns (user, item) or 4 (user, item, rating, timestamp)."""
    raw = _normalise_newlines(path.read_bytes())
    if not raw.strip():
        raise DataFormatError(path, None, None, "the file has no ratings (it is empty)")
    n_columns = raw[: raw.find(b"\n")].count(b"\t") + 1 if b"\n" in raw else raw.count(b"\t") + 1
    if n_columns not in (2, 4):
        raise DataFormatError(path, 1, _lines(raw)[0].decode("latin-1"),
                              "a NeuMF rating file has 2 columns (user, item) or 4 (user, item, rating, timestamp)")
    table = _parse_table(raw, str(path), _NEUMF, n_columns, float_columns=(2,) if n_columns == 4 else ())
    _check_values(raw, str(path), _NEUMF, table, id_columns=(0, 1, 3) if n_columns == 4 else (0, 1),
                  rating_column=2 if n_columns == 4 else None)
    return table


# ------------------------------------------------------------------------- names, paths, loading


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where data lives: `explicit`, else $POINCARE_PARITY_DATA, else the user cache directory."""
    return _data_root(explicit)


def _data_root(explicit: str | os.PathLike | None) -> Path:
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("POINCARE_PARITY_DATA")
    if env:
        return Path(env).expanduser()
    import pooch  # only here: importing pooch pulls in requests

    return Path(pooch.os_cache("poincare-parity"))


# file inside the dataset folder, and the member inside the GroupLens zip
_LAYOUT = {
    "ml-1m": ("ratings.dat", "ml-1m/ratings.dat", _ML1M),
    "ml-100k": ("u.data", "ml-100k/u.data", _ML100K),
    "ml-latest-small": ("ratings.csv", "ml-latest-small/ratings.csv", _CSV),
}
# the movie catalogue that sits beside each ratings file: (file name, field separator, header line)
_CATALOGUE = {"ratings.dat": ("movies.dat", b"::", False), "u.data": ("u.item", b"|", False),
              "ratings.csv": ("movies.csv", b",", True)}


def load_dataset(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name (looked up under the data directory) or from a local path.

    A name finds `<dir>/<name>/` (the extracted files) or `<dir>/<name>.zip` (the GroupLens zip).
    A path may be a folder, a GroupLens zip, or one ratings file; its format is told by file name.
    """
    text = str(name_or_path)
    if text == "synthetic":
        return synthetic()
    if text in _LAYOUT or text == "ml-1m-neumf":
        return _load_named(text, _data_root(data_dir))
    path = Path(text).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(f"{text!r} is neither a dataset name ({', '.join(DATASETS)}) nor an existing path")
    return _load_path(path)


def _load_named(name: str, root: Path) -> Dataset:
    folder = root / name
    if name == "ml-1m-neumf":
        if (folder / "ml-1m.train.rating").exists() or (folder / "ml-1m.test.rating").exists():
            return _load_neumf(folder, "ml-1m", name)
        raise DatasetNotFoundError(_missing_message(name, folder))
    filename, member, fmt = _LAYOUT[name]
    if (folder / filename).exists():
        return _load_ratings_file(name, folder / filename, fmt)
    zip_path = root / f"{name}.zip"
    if zip_path.exists():
        return _load_ratings_file(name, zip_path, fmt, member)
    raise DatasetNotFoundError(_missing_message(name, folder, zip_path))


def _missing_message(name: str, folder: Path, zip_path: Path | None = None) -> str:
    where = f"{folder}/" + (f" or {zip_path}" if zip_path else "")
    return (f"dataset {name!r} not found at {where}. Run `poincare-parity download --dataset {name}`, "
            f"or set POINCARE_PARITY_DATA to the folder that holds it.")


def _load_path(path: Path) -> Dataset:
    if path.is_dir():
        trains = sorted(path.glob("*.train.rating"))
        if trains:
            prefix = trains[0].name[: -len(".train.rating")]
            return _load_neumf(path, prefix, path.name)
        for candidate in (path, *sorted(p for p in path.iterdir() if p.is_dir())):
            for filename, _, fmt in _LAYOUT.values():
                if (candidate / filename).exists():
                    return _load_ratings_file(path.name, candidate / filename, fmt)
        raise DatasetNotFoundError(f"{path} holds no ratings.dat, u.data, ratings.csv or *.train.rating")
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise DataFormatError(path, None, None, f"truncated or corrupt zip ({err}); delete it and download again") from err
        for filename, _, fmt in _LAYOUT.values():
            members = [n for n in names if n == filename or n.endswith("/" + filename)]
            if members:
                return _load_ratings_file(path.stem, path, fmt, members[0])
        raise DataFormatError(path, None, None, "the zip holds no ratings.dat, u.data or ratings.csv")
    if path.name.endswith(".train.rating"):
        return _load_neumf(path.parent, path.name[: -len(".train.rating")], path.parent.name)
    by_name = {"ratings.dat": _ML1M, "u.data": _ML100K, "ratings.csv": _CSV}
    fmt = by_name.get(path.name) or {".dat": _ML1M, ".data": _ML100K, ".csv": _CSV}.get(path.suffix)
    if fmt is None:
        raise DataFormatError(path, None, None, "unknown file type: expected ratings.dat, u.data, ratings.csv, "
                              "*.train.rating, a GroupLens zip or a folder")
    return _load_ratings_file(path.stem, path, fmt)


# -------------------------------------------------------------------------------------- synthetic


def synthetic(n_users: int = 6040, n_items: int = 3706, n_ratings: int = 1_000_209, seed: int = 0,
              min_per_user: int = 20) -> Dataset:
    """An ML-1M-shaped dataset, generated (vectorised) from `seed`: for offline runs and throughput.

    Item popularity follows a power law (Zipf exponent 0.8 over a random item order); user activity
    is log-normal, at least `min_per_user` (ML-1M's minimum is 20); each user's items are drawn
    without replacement in proportion to popularity (exponential race); ratings 1..5 come from a
    user bias + item bias + noise; timestamps spread each user over a window in ML-1M's span.
    Measured against ML-1M: the top 10% of items hold 42% of the ratings (ML-1M 44%), the median
    item has 152 (122); the head is flatter-topped (drawing without replacement saturates it) and
    the tail thinner (no item under 10 ratings; ML-1M has 450). Exponent 1.0 gave 51% and 120.
    """
    if min_per_user * n_users > n_ratings or n_ratings > n_users * n_items // 2:
        raise ValueError("synthetic: need min_per_user * n_users <= n_ratings <= n_users * n_items / 2")
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity = popularity[rng.permutation(n_items)]
    activity = rng.lognormal(mean=0.0, sigma=1.0, size=n_users)
    extra = n_ratings - min_per_user * n_users
    counts = min_per_user + np.floor(activity / activity.sum() * extra).astype(np.int64)
    cap = n_items // 2
    counts = np.minimum(counts, cap)
    short = n_ratings - counts.sum()  # rounding and the cap: hand the rest to users below the cap
    while short > 0:
        room = np.flatnonzero(counts < cap)
        add = rng.choice(room, size=min(short, room.size), replace=False)
        counts[add] += 1
        short -= add.size
    users_out, items_out = [], []
    for start in range(0, n_users, 512):  # chunks bound memory to 512 x n_items
        stop = min(start + 512, n_users)
        race = rng.exponential(size=(stop - start, n_items)) / popularity  # smallest = drawn first
        order = np.argsort(race, axis=1)
        take = np.arange(n_items)[None, :] < counts[start:stop, None]
        rows, cols = np.nonzero(take)
        users_out.append(rows + start)
        items_out.append(order[rows, cols])
    users = np.concatenate(users_out).astype(np.int64)
    items = np.concatenate(items_out).astype(np.int64)
    user_bias = rng.normal(0.0, 0.5, n_users)
    item_bias = rng.normal(0.0, 0.5, n_items) + 0.3 * np.log(popularity / popularity.mean())
    raw = 3.6 + user_bias[users] + 0.5 * item_bias[items] + rng.normal(0.0, 0.9, len(users))
    ratings = np.clip(np.rint(raw), 1, 5).astype(np.float32)
    t0, t1 = 956_703_932, 1_046_454_590  # ML-1M's first and last timestamps
    start_t = rng.integers(t0, t1 - 86_400, n_users)
    span = np.minimum(rng.exponential(30 * 86_400, n_users).astype(np.int64) + 3_600, t1 - start_t)
    timestamps = start_t[users] + (rng.random(len(users)) * span[users]).astype(np.int64)
    return Dataset(
        name="synthetic", users=users, items=items, ratings=ratings, timestamps=timestamps,
        user_ids=np.arange(1, n_users + 1, dtype=np.int64), item_ids=np.arange(1, n_items + 1, dtype=np.int64),
        implicit=False, duplicates_dropped=0, source=f"synthetic(seed={seed})",
    )


# -------------------------------------------------------------------------------------- protocols


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Held-out data of one evaluation, and what the scores it is compared with were fitted on."""

    protocol: str  # "seed" | "neumf"
    users: np.ndarray  # (n_eval,) int64 ascending: the users this evaluation counts
    truth: sp.csr_matrix  # (n_users, n_items): held-out entries (seed: rating; neumf: 1.0)
    seen: sp.csr_matrix  # the training matrix of this evaluation: seed excludes its items per user
    eligible: np.ndarray  # (n_items,) bool: seed ranks only items with a training entry
    candidates: np.ndarray | None = None  # neumf: (n_eval, 1 + n_neg), column 0 the held-out item

    @property
    def n_users(self) -> int:
        return len(self.users)


@dataclasses.dataclass(frozen=True)
class Split:
    """One protocol applied to one dataset: train/test for the result, fit/validation for tuning."""

    protocol: str
    dataset: str
    train: sp.csr_matrix
    test: HeldOut
    fit: sp.csr_matrix
    validation: HeldOut
    info: dict[str, Any]

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    def train_users(self) -> np.ndarray:
        """Rows of `train` with at least one entry (the rows an autoencoder trains on)."""
        return np.flatnonzero(np.diff(self.train.indptr) > 0)

    def fit_users(self) -> np.ndarray:
        return np.flatnonzero(np.diff(self.fit.indptr) > 0)


def _time_holdout(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, rows: np.ndarray,
                  quantile: float, n_items: int) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Global time split of `rows` (indices): -> (train rows, held-out rows, counts).

    Held-out rows are those at or after the `quantile` timepoint whose user and item both have a
    training row; the others at or after it are dropped and counted.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    ts = timestamps[rows]
    timepoint = int(np.quantile(ts, quantile, method="nearest"))
    late = ts >= timepoint
    train_rows, late_rows = rows[~late], rows[late]
    if train_rows.size == 0 or late_rows.size == 0:
        raise DataError(f"the {quantile} time quantile leaves an empty side ({train_rows.size} training rows, "
                        f"{late_rows.size} held-out rows)")
    user_seen = np.zeros(int(users.max()) + 1, bool)
    user_seen[users[train_rows]] = True
    item_seen = np.zeros(n_items, bool)
    item_seen[items[train_rows]] = True
    ok_user = user_seen[users[late_rows]]
    ok_item = item_seen[items[late_rows]]
    held = late_rows[ok_user & ok_item]
    counts = {
        "timepoint": timepoint,
        "late_rows": int(late_rows.size),
        "dropped_rows_unseen_user": int((~ok_user).sum()),
        "dropped_rows_unseen_item": int((ok_user & ~ok_item).sum()),
        "dropped_users": int(np.unique(users[late_rows[~ok_user]]).size),
    }
    return train_rows, held, counts


def _heldout(protocol: str, truth: sp.csr_matrix, seen: sp.csr_matrix, users: np.ndarray,
             candidates: np.ndarray | None = None) -> HeldOut:
    eligible = np.zeros(seen.shape[1], bool)
    eligible[seen.indices] = True
    return HeldOut(protocol=protocol, users=np.asarray(users, np.int64), truth=truth, seen=seen,
                   eligible=eligible, candidates=candidates)


def split_seed(data: Dataset, quantile: float = 0.98, validation_quantile: float | None = None) -> Split:
    """The `seed` protocol: explicit ratings, one global time split (see the module docstring)."""
    if data.timestamps is None:
        raise DataError(f"{data.name}: the seed protocol splits by time, and this dataset has no timestamps")
    if data.implicit:
        raise DataError(f"{data.name}: the seed protocol needs explicit ratings; use --protocol neumf")
    vq = quantile if validation_quantile is None else validation_quantile
    shape = (data.n_users, data.n_items)
    all_rows = np.arange(data.n_ratings)
    train_rows, test_rows, test_counts = _time_holdout(data.users, data.items, data.timestamps, all_rows,
                                                       quantile, data.n_items)
    fit_rows, val_rows, val_counts = _time_holdout(data.users, data.items, data.timestamps, train_rows,
                                                   vq, data.n_items)

    def mat(rows: np.ndarray) -> sp.csr_matrix:
        return _csr(data.users[rows], data.items[rows], data.ratings[rows], shape)

    train, fit = mat(train_rows), mat(fit_rows)
    test = _heldout("seed", mat(test_rows), train, np.unique(data.users[test_rows]))
    validation = _heldout("seed", mat(val_rows), fit, np.unique(data.users[val_rows]))
    info = {
        "protocol": "seed", "dataset": data.name, "quantile": quantile, "validation_quantile": vq,
        "n_users": data.n_users, "n_items": data.n_items, "n_ratings": data.n_ratings,
        "duplicates_dropped": data.duplicates_dropped, "unknown_items_dropped": data.unknown_items_dropped,
        "train_rows": int(train_rows.size), "test_rows": int(test_rows.size), "test_users": int(test.n_users),
        **{f"test_{k}": v for k, v in test_counts.items()},
        "fit_rows": int(fit_rows.size), "validation_rows": int(val_rows.size),
        "validation_users": int(validation.n_users),
        **{f"validation_{k}": v for k, v in val_counts.items()},
    }
    return Split("seed", data.name, train, test, fit, validation, info)


def _sample_negatives(touched: sp.csr_matrix, users: np.ndarray, n_negatives: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each user, `n_negatives` distinct items it never touched -> (kept users, (n, n_neg))."""
    n_items = touched.shape[1]
    all_items = np.arange(n_items)
    kept, rows = [], []
    for u in users:  # one draw per user, in user order: deterministic for a given rng
        row = touched.indices[touched.indptr[u] : touched.indptr[u + 1]]
        free = np.setdiff1d(all_items, row, assume_unique=True)
        if free.size < n_negatives:
            continue
        kept.append(u)
        rows.append(rng.choice(free, size=n_negatives, replace=False))
    negatives = np.asarray(rows, np.int64).reshape(len(rows), n_negatives)
    return np.asarray(kept, np.int64), negatives


def _leave_one_out(matrix: sp.csr_matrix, pick: np.ndarray, users: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Remove entry offset `pick[j]` of row `users[j]` -> (matrix without them, removed items)."""
    positions = matrix.indptr[users] + pick
    items = matrix.indices[positions].astype(np.int64)
    keep = np.ones(matrix.nnz, bool)
    keep[positions] = False
    coo = matrix.tocoo()
    rest = _csr(coo.row[keep], coo.col[keep], coo.data[keep], matrix.shape)
    return rest, items


def _latest_rows(users: np.ndarray, timestamps: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """Of `rows` (indices), the latest per user (on equal or missing times, the later line)."""
    t = np.zeros(rows.size, np.int64) if timestamps is None else timestamps[rows]
    order = np.lexsort((rows, t, users[rows]))
    u = users[rows][order]
    last = np.ones(order.size, bool)
    last[:-1] = u[1:] != u[:-1]
    return rows[order[last]]


def split_neumf(data: Dataset, validation_seed: int = 0, n_negatives: int = 99, negatives_seed: int = 0) -> Split:
    """The `neumf` protocol: implicit feedback, one held-out item + fixed negatives per user.

    Test: the NeuMF files' held-out item and negatives, or (other datasets) each user's latest
    interaction with `n_negatives` drawn from the items it never touched. Validation, carved from
    training: each user's latest training item when timestamps exist (as the test is), else one
    drawn at random (the shared 2-column NeuMF file has no timestamps, so there validation items are
    random and validation HR runs higher than test HR; use it to compare settings, not as a result).
    """
    shape = (data.n_users, data.n_items)
    all_rows = np.arange(data.n_ratings)
    per_user = np.bincount(data.users, minlength=data.n_users)
    if data.neumf_test is not None:
        nt = data.neumf_test
        order = np.argsort(nt.users, kind="stable")
        test_users, test_items, test_negs = nt.users[order], nt.items[order], nt.negatives[order]
        if np.unique(test_users).size != test_users.size:
            raise DataError(f"{data.name}: a user has more than one NeuMF test line")
        train_rows = all_rows
        source = "NeuMF files"
    else:
        latest = _latest_rows(data.users, data.timestamps, all_rows)
        latest = latest[per_user[data.users[latest]] >= 2]  # a user needs something left to train on
        train_rows = np.setdiff1d(all_rows, latest, assume_unique=True)
        test_users, test_negs = _sample_negatives(data.matrix(binary=True), data.users[latest], n_negatives,
                                                  np.random.default_rng(negatives_seed))
        test_items = data.items[latest][np.isin(data.users[latest], test_users)]
        if test_users.size == 0:
            raise DataError(f"{data.name}: no user has {n_negatives} untouched items to draw negatives from")
        source = f"leave-latest-out, negatives drawn with seed {negatives_seed}"
    train = data.matrix(rows=train_rows, binary=True)
    test_truth = _csr(test_users, test_items, np.ones(len(test_users)), shape)
    test = _heldout("neumf", test_truth, train, test_users, np.column_stack([test_items, test_negs]))

    # validation: one training item per user with >= 2, negatives from items never touched
    rng = np.random.default_rng(validation_seed)
    counts = np.diff(train.indptr)
    if data.timestamps is not None:
        chosen = _latest_rows(data.users, data.timestamps, train_rows)
        chosen = chosen[counts[data.users[chosen]] >= 2]
        val_users = data.users[chosen]
        flat_keys = np.repeat(np.arange(data.n_users, dtype=np.int64), counts) * data.n_items + train.indices
        pick = np.searchsorted(flat_keys, val_users * data.n_items + data.items[chosen]) - train.indptr[val_users]
        rule = "latest training item"
    else:
        val_users = np.flatnonzero(counts >= 2)
        pick = np.floor(rng.random(val_users.size) * counts[val_users]).astype(np.int64)
        rule = f"random training item (seed {validation_seed}; no timestamps)"
    fit, val_items = _leave_one_out(train, pick, val_users)
    touched = (train + test_truth).tocsr()
    touched.sort_indices()
    kept, val_negs = _sample_negatives(touched, val_users, n_negatives, rng)
    val_items = val_items[np.isin(val_users, kept)]
    val_truth = _csr(kept, val_items, np.ones(len(kept)), shape)
    validation = _heldout("neumf", val_truth, fit, kept, np.column_stack([val_items, val_negs]))
    info = {
        "protocol": "neumf", "dataset": data.name, "test_source": source, "validation_item": rule,
        "validation_seed": validation_seed,
        "n_users": data.n_users, "n_items": data.n_items, "n_ratings": data.n_ratings,
        "duplicates_dropped": data.duplicates_dropped,
        "train_rows": int(train.nnz), "test_users": int(test.n_users), "n_negatives": int(test_negs.shape[1]),
        # NeuMF's file draws negatives from items outside the user's training set only, so the
        # held-out item itself appears among them for some users; the metrics ignore that repeat
        "test_negatives_repeating_heldout": int((test_negs == test_items[:, None]).any(axis=1).sum()),
        "fit_rows": int(fit.nnz), "validation_users": int(validation.n_users),
    }
    return Split("neumf", data.name, train, test, fit, validation, info)


def make_split(data: Dataset, config: Any) -> Split:
    """Apply the protocol named in a `parity.config.DataConfig` (fields protocol, quantile, validation_seed)."""
    if config.protocol == "seed":
        return split_seed(data, quantile=config.quantile)
    if config.protocol == "neumf":
        return split_neumf(data, validation_seed=config.validation_seed)
    raise ValueError(f"unknown protocol {config.protocol!r}: expected 'seed' or 'neumf'")


def load_split(config: Any, data_dir: str | os.PathLike | None = None) -> Split:
    """`make_split(load_dataset(config.dataset, data_dir), config)`."""
    return make_split(load_dataset(config.dataset, data_dir), config)


# -------------------------------------------------------------------------------------- batching


def batch_order(n_rows: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch: a permutation of 0..n_rows-1 cut into `batch_size` pieces.

    A function of (seed, epoch) only, so both frameworks, and a resumed run, see the same batches.
    The last batch is short when batch_size does not divide n_rows.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch]))
    order = rng.permutation(n_rows).astype(np.int64)
    return [order[i : i + batch_size] for i in range(0, n_rows, batch_size)]


def dense_rows(csr: sp.csr_matrix, rows: np.ndarray | Sequence[int], dtype: Any = np.float32) -> np.ndarray:
    """Rows of a CSR matrix as a dense C-contiguous (len(rows), n_cols) array of `dtype`."""
    rows = np.asarray(rows, np.int64)
    out = np.zeros((rows.size, csr.shape[1]), dtype=dtype)
    if rows.size:
        block = csr[rows]  # scipy's row gather keeps CSR; scatter its entries into the dense block
        out[np.repeat(np.arange(rows.size), np.diff(block.indptr)), block.indices] = block.data
    return out


# -------------------------------------------------------------------------------------- download

# Pinned 2026-11. GroupLens zips: sha256 and sizes as pinned by tensorflow_datasets
# (tensorflow_datasets/url_checksums/movielens.txt); their md5s agree with other projects' pins.
# NeuMF files: the authors' repository at the commit of its last update (README "Last Update Date:
# January 25, 2021"); sha256 computed here from files whose md5s equal the ones published in the
# shared data README (byte-identical to the authors' files).
NEUMF_COMMIT = "0e678eea159f715991ffbb6d511752f62cf2ef31"
_NEUMF_RAW = f"https://raw.githubusercontent.com/hexiangnan/neural_collaborative_filtering/{NEUMF_COMMIT}/Data"
_GROUPLENS = "https://files.grouplens.org/datasets/movielens"


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: where from, its pinned hash, and where it lands under the data directory."""

    fname: str  # path relative to the data directory
    url: str
    sha256: str
    source: str
    size: int | None = None
    md5: str | None = None


REMOTE: dict[str, tuple[RemoteFile, ...]] = {
    "ml-1m": (RemoteFile("ml-1m.zip", f"{_GROUPLENS}/ml-1m.zip",
                         "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20", "GroupLens",
                         5917549, "c4d9eecfca2ab87c1945afe126590906"),),
    "ml-100k": (RemoteFile("ml-100k.zip", f"{_GROUPLENS}/ml-100k.zip",
                           "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229", "GroupLens",
                           4924029, "0e33842e24a9c977be4e0107933c0723"),),
    "ml-latest-small": (RemoteFile("ml-latest-small.zip", f"{_GROUPLENS}/ml-latest-small.zip",
                                   "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436", "GroupLens",
                                   978202),),
    "ml-1m-neumf": (
        RemoteFile("ml-1m-neumf/ml-1m.test.rating", f"{_NEUMF_RAW}/ml-1m.test.rating",
                   "231ae11eb060b643a8c58c063cd17ffc743b54f569afb073d1abb6cf126b88b5",
                   f"NeuMF authors' repository at commit {NEUMF_COMMIT[:12]}", 128039, "0970f5997be60425205b85a6af9d3051"),
        RemoteFile("ml-1m-neumf/ml-1m.test.negative", f"{_NEUMF_RAW}/ml-1m.test.negative",
                   "127853228a76b7d21c0481e8ef8d00dd009cd5c88670dbdd9e9debfdb9f93de4",
                   f"NeuMF authors' repository at commit {NEUMF_COMMIT[:12]}", 2891424, "ae0af08bac7fea5a1de4744821015321"),
    ),
}

# ml-1m.train.rating (2 columns) is derived, not fetched: the authors' 4-column file has no
# published hash. "All ML-1M ratings minus the test rows, in NeuMF numbering" (users: UserID - 1;
# items: order of first appearance in ratings.dat; lines in ratings.dat order) reproduces the
# shared file; these are its hashes (md5 as published in the shared data README).
NEUMF_TRAIN_SHA256 = "8c6de39f15a1a983f2662f8e6103dfdc72ae88d056dc0669c49ab5e257478fec"
NEUMF_TRAIN_MD5 = "e62dbbe2d98cc60e5c4312d7b6b87a19"


def _file_hash(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(remote: RemoteFile, root: Path, downloader: Callable | None) -> Path:
    """Fetch one file with pooch (hash checked before the file is moved into place)."""
    import pooch  # lazily: requests is slow to import
    import requests

    target = root / remote.fname
    if target.exists():
        if _file_hash(target) == remote.sha256:
            return target
        target.unlink()  # a wrong file never stays in the cache
    target.parent.mkdir(parents=True, exist_ok=True)
    pooch.get_logger().setLevel("WARNING")
    if downloader is None:
        downloader = pooch.HTTPDownloader(progressbar=sys.stderr.isatty(), timeout=30)
    try:
        got = pooch.retrieve(remote.url, known_hash=f"sha256:{remote.sha256}", fname=target.name,
                             path=target.parent, downloader=downloader)
    except ValueError as err:  # pooch: hash mismatch; it has already deleted the download
        if target.exists():
            target.unlink()
        raise ChecksumError(f"{remote.fname} from {remote.url} does not match its pinned sha256 "
                            f"{remote.sha256}; the file was removed ({err})") from err
    except (requests.exceptions.RequestException, OSError) as err:
        if target.exists() and _file_hash(target) != remote.sha256:
            target.unlink()
        raise DownloadError(
            f"could not download {remote.fname} from {remote.url} ({type(err).__name__}: {err}).\n"
            f"Offline? Fetch it by hand from {remote.url} ({remote.source}) and put it at {target}; "
            f"its sha256 must be {remote.sha256}."
        ) from err
    return Path(got)


def derive_neumf_train(ratings_dat: bytes, test_rating: np.ndarray) -> bytes:
    """ML-1M ratings.dat + the NeuMF test rows -> the 2-column `ml-1m.train.rating` bytes.

    NeuMF numbering: users and items in order of first appearance in ratings.dat (users are then
    UserID - 1). Each test row (user, item) must be a rating of ratings.dat; all other ratings are
    written, in ratings.dat order, as "user<TAB>item".
    """
    table = _parse_table(ratings_dat, "ratings.dat", _ML1M, 4, float_columns=(2,))
    raw_users = table[:, 0].astype(np.int64)
    raw_items = table[:, 1].astype(np.int64)
    users = _first_appearance_index(raw_users)
    items = _first_appearance_index(raw_items)
    key = users * (items.max() + 1) + items
    test_key = test_rating[:, 0].astype(np.int64) * (items.max() + 1) + test_rating[:, 1].astype(np.int64)
    is_test = np.isin(key, test_key)
    if is_test.sum() != len(test_key):
        raise DataError(f"{len(test_key) - int(is_test.sum())} NeuMF test rows are not ratings of ratings.dat: "
                        "this ratings.dat is not the one the NeuMF split was made from")
    frame = pd.DataFrame({"u": users[~is_test], "i": items[~is_test]})
    return frame.to_csv(sep="\t", header=False, index=False, lineterminator="\n").encode("ascii")


def _first_appearance_index(ids: np.ndarray) -> np.ndarray:
    """Map ids to 0.. in order of first appearance."""
    uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty(uniq.size, np.int64)
    rank[np.argsort(first)] = np.arange(uniq.size)
    return rank[inverse]


def _two_column_sha256(path: Path) -> str | None:
    """sha256 of "user<TAB>item" lines of a NeuMF rating file (None if it does not parse)."""
    try:
        table = _read_neumf_rating(path)
    except DataError:
        return None
    frame = pd.DataFrame({"u": table[:, 0].astype(np.int64), "i": table[:, 1].astype(np.int64)})
    return hashlib.sha256(frame.to_csv(sep="\t", header=False, index=False, lineterminator="\n").encode()).hexdigest()


def _derive_neumf(root: Path, downloader: Callable | None) -> Path:
    """ml-1m.train.rating: kept if it (or its first two columns) has the pinned hash, else derived."""
    target = root / "ml-1m-neumf" / "ml-1m.train.rating"
    if target.exists():
        # the 2-column file, or the authors' 4-column file put here by hand, whose pairs match
        if _file_hash(target) == NEUMF_TRAIN_SHA256 or _two_column_sha256(target) == NEUMF_TRAIN_SHA256:
            return target
        target.unlink()  # a wrong file never stays in the cache
    try:
        zip_path = _fetch(REMOTE["ml-1m"][0], root, downloader)
    except DownloadError as err:
        raise DownloadError(f"{err}\nml-1m-neumf's ml-1m.train.rating is derived from ml-1m.zip (all ratings "
                            f"minus the test rows). Or put the NeuMF authors' ml-1m.train.rating "
                            f"({_NEUMF_RAW}/ml-1m.train.rating) at {target}.") from err
    ratings = _read_bytes(zip_path, "ml-1m/ratings.dat")
    test = _read_neumf_rating(root / "ml-1m-neumf" / "ml-1m.test.rating")
    derived = derive_neumf_train(ratings, test)
    sha = hashlib.sha256(derived).hexdigest()
    if sha != NEUMF_TRAIN_SHA256:
        raise ChecksumError(f"the derived {target} has sha256 {sha}, not the pinned {NEUMF_TRAIN_SHA256}; "
                            "nothing was written")
    tmp = target.with_suffix(".rating.part")
    tmp.write_bytes(derived)
    tmp.replace(target)
    return target


def download(name: str | None = None, data_dir: str | os.PathLike | None = None,
             downloader: Callable | None = None) -> list[Path]:
    """Fetch `name` (default: every dataset) into the data directory, checking pinned hashes.

    `downloader` is passed to pooch (tests give a fake one). Returns the local files.
    """
    names = list(REMOTE) if name is None else [name]
    for n in names:
        if n not in REMOTE:
            raise DataError(f"unknown dataset {n!r}: downloadable are {', '.join(REMOTE)}")
    root = _data_root(data_dir)
    got: list[Path] = []
    for n in names:
        for remote in REMOTE[n]:
            got.append(_fetch(remote, root, downloader))
        if n == "ml-1m-neumf":
            got.append(_derive_neumf(root, downloader))
    return got


# ------------------------------------------------------------------------------------------- CLI


def _describe(data: Dataset) -> list[tuple[str, str]]:
    density = data.n_ratings / max(1, data.n_users * data.n_items)
    rows = [
        ("dataset", data.name), ("source", data.source), ("users", f"{data.n_users:,}"),
        ("items", f"{data.n_items:,}"), ("ratings", f"{data.n_ratings:,}"), ("density", f"{density:.4%}"),
        ("duplicates dropped", f"{data.duplicates_dropped:,}"),
        ("unknown movies dropped", f"{data.unknown_items_dropped:,}"),
        ("feedback", "implicit" if data.implicit else
         f"explicit, {data.ratings.min():g}..{data.ratings.max():g}, mean {data.ratings.mean():.3f}"),
    ]
    if data.timestamps is not None:
        rows.append(("time span", f"{pd.to_datetime(data.timestamps.min(), unit='s').date()} .. "
                                  f"{pd.to_datetime(data.timestamps.max(), unit='s').date()}"))
    return rows


def _table(rows: Iterable[tuple[str, Any]]) -> str:
    rows = [(str(a), str(b)) for a, b in rows]
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"  {a:<{width}}  {b}" for a, b in rows)


def default_protocol(data: Dataset) -> str:
    return "neumf" if data.implicit else "seed"


def _split_from_args(args: Any, data: Dataset) -> Split:
    protocol = getattr(args, "protocol", None) or default_protocol(data)
    if protocol == "seed":
        quantile = getattr(args, "quantile", 0.98)
        if not 0.0 < quantile < 1.0:
            raise DataError(f"--quantile must lie strictly between 0 and 1, got {quantile}")
        return split_seed(data, quantile=quantile)
    return split_neumf(data, validation_seed=getattr(args, "validation_seed", 0))


def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        import json

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
        print(f"wrote {path}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def _info(args: Any) -> int:
    data = load_dataset(args.dataset, getattr(args, "data_dir", None))
    split = _split_from_args(args, data)
    print(f"{data.name}\n{_table(_describe(data))}\n\n{split.protocol} protocol\n{_table(split.info.items())}")
    _write_json(getattr(args, "json", None), {"dataset": dict(_describe(data)), "split": split.info})
    return 0


def cli(args: Any) -> int:
    """`poincare-parity download` and `poincare-parity data {info,baselines}`."""
    try:
        if args.command == "download":
            paths = download(args.dataset, getattr(args, "data_dir", None))
            for p in paths:
                print(f"ok  {p}")
            return 0
        if args.data_command == "info":
            return _info(args)
        if args.data_command == "baselines":
            from parity import baselines

            return baselines.cli(args)
        raise DataError(f"unknown data command {args.data_command!r}")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
