"""`poincare-parity download`: the MovieLens files from their public homes, each checked against a pinned sha256."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from parity.data.errors import ChecksumError, DataError, DownloadError
from parity.data.formats import (
    ML1M_FORMAT,
    parse_table,
    read_bytes,
    read_neumf_rating,
    resolve_data_dir,
)

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
                   f"NeuMF authors' repository at commit {NEUMF_COMMIT[:12]}",
                   128039, "0970f5997be60425205b85a6af9d3051"),
        RemoteFile("ml-1m-neumf/ml-1m.test.negative", f"{_NEUMF_RAW}/ml-1m.test.negative",
                   "127853228a76b7d21c0481e8ef8d00dd009cd5c88670dbdd9e9debfdb9f93de4",
                   f"NeuMF authors' repository at commit {NEUMF_COMMIT[:12]}",
                   2891424, "ae0af08bac7fea5a1de4744821015321"),
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


def _move_aside(path: Path, actual_sha256: str) -> Path:
    """Rename a file whose hash is not the pinned one to `<name>.mismatch-<sha8>` beside it (a free name;
    never over another file): a file someone put here by hand is never deleted."""
    aside = path.with_name(f"{path.name}.mismatch-{actual_sha256[:8]}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.mismatch-{actual_sha256[:8]}-{n}")
    path.rename(aside)
    return aside


def _set_aside(target: Path, actual: str, expected: str, notify: Callable[[str], None] | None) -> str:
    """Move `target` (sha256 `actual`, not the pinned `expected`) aside; -> a sentence saying so, also
    handed to `notify`."""
    aside = _move_aside(target, actual)
    note = (f"the file already at {target} has sha256 {actual}, not the pinned {expected}: "
            f"moved aside to {aside} (not deleted)")
    if notify is not None:
        notify(note)
    return note


def _fetch(remote: RemoteFile, root: Path, downloader: Callable | None,
           notify: Callable[[str], None] | None = None) -> Path:
    """Fetch one file: downloaded to a temporary file of ours beside the target, its sha256 checked,
    then renamed into place. A file already at the target with the pinned hash is kept; with another
    hash it is moved aside (`_move_aside`), never deleted. On any failure, only our own temporary
    file is removed."""
    import requests  # lazily: requests is slow to import

    target = root / remote.fname
    moved = ""
    if target.exists():
        actual = _file_hash(target)
        if actual == remote.sha256:
            return target
        moved = _set_aside(target, actual, remote.sha256, notify)
    target.parent.mkdir(parents=True, exist_ok=True)
    if downloader is None:
        import pooch

        downloader = pooch.HTTPDownloader(progressbar=sys.stderr.isatty(), timeout=30)
    part = target.with_name(f".{target.name}.{os.getpid()}.part")  # ours alone: removed whatever happens
    also = f" ({moved})" if moved else ""
    try:
        try:
            downloader(remote.url, str(part), None)
        except (requests.exceptions.RequestException, OSError) as err:
            raise DownloadError(
                f"could not download {remote.fname} from {remote.url} ({type(err).__name__}: {err}).\n"
                f"Offline? Fetch it by hand from {remote.url} ({remote.source}) and put it at {target}; "
                f"its sha256 must be {remote.sha256}{also}."
            ) from err
        actual = _file_hash(part)
        if actual != remote.sha256:
            raise ChecksumError(f"{remote.fname} downloaded from {remote.url} has sha256 {actual}, not the pinned "
                                f"{remote.sha256}; the download was discarded and nothing was put at {target}{also}")
        os.replace(part, target)
    finally:
        if part.exists():
            part.unlink()
    return target


def derive_neumf_train(ratings_dat: bytes, test_rating: np.ndarray) -> bytes:
    """ML-1M ratings.dat + the NeuMF test rows -> the 2-column `ml-1m.train.rating` bytes.

    NeuMF numbering: users and items in order of first appearance in ratings.dat (users are then
    UserID - 1). Each test row (user, item) must be a rating of ratings.dat; all other ratings are
    written, in ratings.dat order, as "user<TAB>item".
    """
    table = parse_table(ratings_dat, "ratings.dat", ML1M_FORMAT, 4, float_columns=(2,))
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
        table = read_neumf_rating(path)
    except DataError:
        return None
    frame = pd.DataFrame({"u": table[:, 0].astype(np.int64), "i": table[:, 1].astype(np.int64)})
    return hashlib.sha256(frame.to_csv(sep="\t", header=False, index=False, lineterminator="\n").encode()).hexdigest()


def _derive_neumf(root: Path, downloader: Callable | None, notify: Callable[[str], None] | None = None) -> Path:
    """ml-1m.train.rating: kept if it (or its first two columns) has the pinned hash, else derived (a file
    with another hash already there is moved aside, never deleted)."""
    target = root / "ml-1m-neumf" / "ml-1m.train.rating"
    moved = ""
    if target.exists():
        # the 2-column file, or the authors' 4-column file put here by hand, whose pairs match
        actual = _file_hash(target)
        if actual == NEUMF_TRAIN_SHA256 or _two_column_sha256(target) == NEUMF_TRAIN_SHA256:
            return target
        moved = _set_aside(target, actual, NEUMF_TRAIN_SHA256, notify)
    also = f" ({moved})" if moved else ""
    try:
        zip_path = _fetch(REMOTE["ml-1m"][0], root, downloader, notify)
    except DownloadError as err:
        raise DownloadError(f"{err}\nml-1m-neumf's ml-1m.train.rating is derived from ml-1m.zip (all ratings "
                            f"minus the test rows). Or put the NeuMF authors' ml-1m.train.rating "
                            f"({_NEUMF_RAW}/ml-1m.train.rating) at {target}; the sha256 of its first two columns "
                            f"(user<TAB>item lines) must be {NEUMF_TRAIN_SHA256}{also}.") from err
    ratings = read_bytes(zip_path, "ml-1m/ratings.dat")
    test = read_neumf_rating(root / "ml-1m-neumf" / "ml-1m.test.rating")
    derived = derive_neumf_train(ratings, test)
    sha = hashlib.sha256(derived).hexdigest()
    if sha != NEUMF_TRAIN_SHA256:
        raise ChecksumError(f"the derived {target} has sha256 {sha}, not the pinned {NEUMF_TRAIN_SHA256}; "
                            f"nothing was written{also}")
    part = target.with_name(f".{target.name}.{os.getpid()}.part")  # ours alone: removed whatever happens
    try:
        part.write_bytes(derived)
        os.replace(part, target)
    finally:
        if part.exists():
            part.unlink()
    return target


def download(name: str | None = None, data_dir: str | os.PathLike | None = None,
             downloader: Callable | None = None, notify: Callable[[str], None] | None = None) -> list[Path]:
    """Fetch `name` (default: every dataset) into the data directory, checking pinned hashes.

    `downloader(url, output_file, pooch)` fetches one file (default: pooch's HTTP downloader; tests
    give a fake one). A file already in place with another hash than the pinned one is moved aside to
    `<name>.mismatch-<sha8>` and `notify` (if given) is called with a sentence saying so: nothing a user
    put in the data directory is ever deleted. Returns the local files.
    """
    names = list(REMOTE) if name is None else [name]
    for n in names:
        if n not in REMOTE:
            raise DataError(f"unknown dataset {n!r}: downloadable are {', '.join(REMOTE)}")
    root = resolve_data_dir(data_dir)
    got: list[Path] = []
    for n in names:
        for remote in REMOTE[n]:
            got.append(_fetch(remote, root, downloader, notify))
        if n == "ml-1m-neumf":
            got.append(_derive_neumf(root, downloader, notify))
    return got
