"""MovieLens file formats and loading: GroupLens ml-1m / ml-100k / ml-latest-small (folders or zips), the NeuMF
files, a local path; the data directory."""

from __future__ import annotations

import dataclasses
import io
import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from parity.data.dataset import Dataset, NeuMFTest
from parity.data.errors import DataFormatError, DatasetNotFoundError
from parity.data.synthetic import synthetic

# Names `load_dataset` resolves without a path.
DATASETS = ("ml-1m", "ml-1m-neumf", "ml-100k", "ml-latest-small", "synthetic")



@dataclasses.dataclass(frozen=True)
class _Format:
    """One ratings file layout."""

    name: str
    sep: bytes
    header: bool
    rating_min: float
    rating_max: float
    rating_step: float


ML1M_FORMAT = _Format("ml-1m ratings.dat (UserID::MovieID::Rating::Timestamp)", b"::", False, 1, 5, 1)
ML100K_FORMAT = _Format("ml-100k u.data (user<TAB>item<TAB>rating<TAB>timestamp)", b"\t", False, 1, 5, 1)
CSV_FORMAT = _Format("ratings.csv (userId,movieId,rating,timestamp)", b",", True, 0.5, 5, 0.5)
# NeuMF files: ids 0-based, ratings (when present) on ML-1M's 1..5 scale.
NEUMF_FORMAT = _Format("NeuMF *.rating (user<TAB>item[<TAB>rating<TAB>timestamp])", b"\t", False, 1, 5, 1)


def read_bytes(path: Path, member: str | None = None) -> bytes:
    """The bytes of `path`, or of `member` inside the zip `path`; a bad zip is a DataFormatError."""
    if member is None:
        return path.read_bytes()
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.read(member)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:  # truncated: bad directory, data or CRC
        raise DataFormatError(path, None, None,
                              f"truncated or corrupt zip ({err}); delete it and download again") from err
    except KeyError as err:
        raise DataFormatError(path, None, None, f"the zip has no member {member!r}") from err


def _normalise_newlines(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n") if b"\r" in raw else raw


def _lines(raw: bytes) -> list[bytes]:
    lines = raw.split(b"\n")
    return lines[:-1] if lines and lines[-1] == b"" else lines


def parse_table(raw: bytes, path: str, fmt: _Format, n_columns: int, float_columns: Sequence[int] = ()) -> np.ndarray:
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
                                  f"expected {n_columns} fields separated by {sep.decode()!r}, "
                                  f"found {len(fields)} ({fmt.name})")
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
    raw = read_bytes(path, member)
    shown = f"{path}!{member}" if member else str(path)
    table = parse_table(raw, shown, fmt, 4, float_columns=(2,))
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
        raw = read_bytes(path, cat_member)
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
    train = read_neumf_rating(train_path)
    test = read_neumf_rating(test_path)
    neg_raw = _normalise_newlines(neg_path.read_bytes())
    # "(user,item)<TAB>neg_1<TAB>...": drop the parentheses, the comma becomes one more field
    neg_text = neg_raw.replace(b"(", b"").replace(b")", b"").replace(b",", b"\t")
    n_fields = neg_text[: neg_text.find(b"\n")].count(b"\t") + 1 if b"\n" in neg_text else neg_text.count(b"\t") + 1
    try:
        neg = parse_table(neg_text, str(neg_path), NEUMF_FORMAT, n_fields)
    except DataFormatError as err:  # report the line as written, not as rewritten
        if err.line is not None:
            text = _lines(neg_raw)[err.line - 1].decode("latin-1")
            raise DataFormatError(neg_path, err.line, text,
                                  err.reason + " (expected '(user,item)<TAB>neg_1<TAB>...')") from None
        raise
    _check_values(neg_text, str(neg_path), NEUMF_FORMAT, neg, id_columns=range(n_fields), rating_column=None)
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


def read_neumf_rating(path: Path) -> np.ndarray:
    """A NeuMF `*.rating` file, 2 columns (user, item) or 4 (user, item, rating, timestamp)."""
    raw = _normalise_newlines(path.read_bytes())
    if not raw.strip():
        raise DataFormatError(path, None, None, "the file has no ratings (it is empty)")
    n_columns = raw[: raw.find(b"\n")].count(b"\t") + 1 if b"\n" in raw else raw.count(b"\t") + 1
    if n_columns not in (2, 4):
        raise DataFormatError(path, 1, _lines(raw)[0].decode("latin-1"),
                              "a NeuMF rating file has 2 columns (user, item) or 4 (user, item, rating, timestamp)")
    table = parse_table(raw, str(path), NEUMF_FORMAT, n_columns, float_columns=(2,) if n_columns == 4 else ())
    _check_values(raw, str(path), NEUMF_FORMAT, table, id_columns=(0, 1, 3) if n_columns == 4 else (0, 1),
                  rating_column=2 if n_columns == 4 else None)
    return table




def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where data lives: `explicit`, else $POINCARE_PARITY_DATA, else the user cache directory."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("POINCARE_PARITY_DATA")
    if env:
        return Path(env).expanduser()
    import pooch  # only here: importing pooch pulls in requests

    return Path(pooch.os_cache("poincare-parity"))


# file inside the dataset folder, and the member inside the GroupLens zip
_LAYOUT = {
    "ml-1m": ("ratings.dat", "ml-1m/ratings.dat", ML1M_FORMAT),
    "ml-100k": ("u.data", "ml-100k/u.data", ML100K_FORMAT),
    "ml-latest-small": ("ratings.csv", "ml-latest-small/ratings.csv", CSV_FORMAT),
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
        return _load_named(text, resolve_data_dir(data_dir))
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
            raise DataFormatError(path, None, None,
                              f"truncated or corrupt zip ({err}); delete it and download again") from err
        for filename, _, fmt in _LAYOUT.values():
            members = [n for n in names if n == filename or n.endswith("/" + filename)]
            if members:
                return _load_ratings_file(path.stem, path, fmt, members[0])
        raise DataFormatError(path, None, None, "the zip holds no ratings.dat, u.data or ratings.csv")
    if path.name.endswith(".train.rating"):
        return _load_neumf(path.parent, path.name[: -len(".train.rating")], path.parent.name)
    by_name = {"ratings.dat": ML1M_FORMAT, "u.data": ML100K_FORMAT, "ratings.csv": CSV_FORMAT}
    fmt = by_name.get(path.name) or {".dat": ML1M_FORMAT, ".data": ML100K_FORMAT, ".csv": CSV_FORMAT}.get(path.suffix)
    if fmt is None:
        raise DataFormatError(path, None, None, "unknown file type: expected ratings.dat, u.data, ratings.csv, "
                              "*.train.rating, a GroupLens zip or a folder")
    return _load_ratings_file(path.stem, path, fmt)
