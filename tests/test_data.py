"""parity.data on small files written by the tests: formats, errors, protocols, batching, download."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests

from parity import data as D
from parity.data import formats, remote

# ----------------------------------------------------------------------------------- fixtures

# user, movie, rating, timestamp: user 3 appears only late (unseen in training); movie 40 likewise
ROWS = [
    (1, 10, 5, 100), (1, 20, 3, 110), (1, 30, 4, 120), (2, 10, 2, 105), (2, 30, 5, 130),
    (2, 20, 4, 140), (4, 20, 1, 150), (4, 10, 3, 160), (1, 40, 4, 900), (2, 40, 1, 905),
    (3, 10, 5, 910), (4, 30, 2, 920), (1, 20, 4, 930),  # (1, 20) again, later: the latest is kept
]


def _dat(rows) -> bytes:
    return "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows).encode()


def _udata(rows) -> bytes:
    return "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows).encode()


def _csv(rows) -> bytes:
    return ("userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows)).encode()


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# ------------------------------------------------------------------------------------ loaders


@pytest.mark.parametrize("filename, writer", [("ratings.dat", _dat), ("u.data", _udata), ("ratings.csv", _csv)])
def test_formats_load_the_same_interactions(tmp_path, filename, writer):
    data = D.load_dataset(_write(tmp_path / filename, writer(ROWS)))
    assert (data.n_users, data.n_items, data.n_ratings, data.duplicates_dropped) == (4, 4, 12, 1)
    assert data.user_ids.tolist() == [1, 2, 3, 4] and data.item_ids.tolist() == [10, 20, 30, 40]
    # the map back to the dataset's own ids reproduces every kept row
    got = set(zip(data.user_ids[data.users].tolist(), data.item_ids[data.items].tolist(),
                  data.ratings.tolist(), data.timestamps.tolist()))
    expected = {(u, i, float(r), t) for u, i, r, t in ROWS if (u, i, t) != (1, 20, 110)}
    assert got == expected


def test_duplicates_keep_the_latest_and_on_equal_time_the_later_line(tmp_path):
    rows = [(1, 10, 1, 500), (1, 10, 2, 400), (1, 20, 3, 100), (1, 20, 4, 100), (2, 10, 5, 1)]
    data = D.load_dataset(_write(tmp_path / "u.data", _udata(rows)))
    assert data.duplicates_dropped == 2
    kept = dict(zip(zip(data.users.tolist(), data.items.tolist()), data.ratings.tolist()))
    assert kept == {(0, 0): 1.0, (0, 1): 4.0, (1, 0): 5.0}


def test_zip_and_folder_by_name(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", _dat(ROWS))
    _write(tmp_path / "ml-1m.zip", buf.getvalue())
    from_zip = D.load_dataset("ml-1m", data_dir=tmp_path)
    _write(tmp_path / "ml-100k" / "u.data", _udata(ROWS))
    from_folder = D.load_dataset("ml-100k", data_dir=tmp_path)
    direct_zip = D.load_dataset(tmp_path / "ml-1m.zip")
    for d in (from_zip, direct_zip):
        assert np.array_equal(d.users, from_folder.users) and np.array_equal(d.ratings, from_folder.ratings)


def test_half_star_ratings_csv(tmp_path):
    data = D.load_dataset(_write(tmp_path / "ratings.csv", _csv([(1, 1, 0.5, 1), (1, 2, 4.5, 2), (2, 1, 5.0, 3)])))
    assert data.ratings.tolist() == [0.5, 4.5, 5.0]


def test_catalogue_drops_ratings_of_unknown_movies(tmp_path):
    # latin-1 title, as in ML-1M's movies.dat
    _write(tmp_path / "movies.dat", "10::Caf\xe9 (1999)::Drama\n20::B::C\n30::C::D\n".encode("latin-1"))
    data = D.load_dataset(_write(tmp_path / "ratings.dat", _dat(ROWS)))
    assert data.unknown_items_dropped == 2  # the two ratings of movie 40
    assert data.item_ids.tolist() == [10, 20, 30]
    _write(tmp_path / "csv" / "movies.csv", b'movieId,title,genres\n10,"A, The (1990)",X\n20,B,Y\n30,C,Z\n40,D,W\n')
    assert D.load_dataset(_write(tmp_path / "csv" / "ratings.csv", _csv(ROWS))).unknown_items_dropped == 0


def _neumf_files(folder: Path, four_columns: bool) -> None:
    train = [(0, 0, 5, 1), (0, 1, 3, 2), (0, 2, 4, 3), (1, 0, 2, 4),
             (1, 3, 4, 5), (1, 4, 1, 6), (2, 1, 5, 7), (2, 4, 3, 8)]
    fmt = (lambda u, i, r, t: f"{u}\t{i}\t{r}\t{t}\n") if four_columns else (lambda u, i, r, t: f"{u}\t{i}\n")
    _write(folder / "ml-1m.train.rating", "".join(fmt(*row) for row in train).encode())
    _write(folder / "ml-1m.test.rating", b"0\t3\t5\t9\n1\t1\t4\t9\n2\t5\t3\t9\n")
    _write(folder / "ml-1m.test.negative", b"(0,3)\t4\t5\n(1,1)\t2\t5\n(2,5)\t0\t3\n")


@pytest.mark.parametrize("four_columns", [False, True])
def test_neumf_files_two_or_four_columns(tmp_path, four_columns):
    _neumf_files(tmp_path / "ml-1m-neumf", four_columns)
    data = D.load_dataset("ml-1m-neumf", data_dir=tmp_path)
    assert data.implicit and (data.n_users, data.n_items, data.n_ratings) == (3, 6, 8)
    assert data.neumf_test.items.tolist() == [3, 1, 5]
    assert data.neumf_test.negatives.tolist() == [[4, 5], [2, 5], [0, 3]]
    assert (data.timestamps is not None) == four_columns
    split = D.split_neumf(data, n_negatives=1)
    assert split.train.nnz == 8 and set(split.train.data.tolist()) == {1.0}  # every pair is a positive
    assert split.test.candidates.tolist() == [[3, 4, 5], [1, 2, 5], [5, 0, 3]]


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("content, line, reason", [
    (b"1::10::5::100\n1::20::3\n", 2, "expected 4 fields"),
    (b"1::10::5::100\n1::20::3::110::9\n", 2, "expected 4 fields"),
    (b"1::10::5::100\n1::x::3::110\n", 2, "field 2 is not a number"),
    (b"1::10::5::100\n\n1::20::3::110\n", 2, "expected 4 fields"),  # a blank line inside the file
    (b"1::10::5::100\n1::20::6::110\n", 2, "outside the scale"),
    (b"1::10::0::100\n", 1, "outside the scale"),
    (b"1::10::3.5::100\n", 1, "outside the scale"),  # ML-1M ratings are whole stars
    (b"1::10::5::100\n-2::20::3::110\n", 2, "non-negative integer id"),
    (b"1::10::5::100\n2::-20::3::110\n", 2, "non-negative integer id"),
])
def test_malformed_line_names_file_line_and_text(tmp_path, content, line, reason):
    path = _write(tmp_path / "ratings.dat", content)
    with pytest.raises(D.DataFormatError) as info:
        D.load_dataset(path)
    err = info.value
    assert err.path == str(path) and err.line == line and reason in err.reason
    assert err.text == content.split(b"\n")[line - 1].decode()
    assert str(path) in str(err) and f"line {line}" in str(err)


def test_csv_half_star_grid_and_header_line_numbers(tmp_path):
    path = _write(tmp_path / "ratings.csv", _csv([(1, 1, 4.5, 1), (1, 2, 4.25, 2)]))
    with pytest.raises(D.DataFormatError) as info:
        D.load_dataset(path)
    assert info.value.line == 3 and info.value.text == "1,2,4.25,2"  # line 1 is the header


def test_empty_file(tmp_path):
    for name, content in (("ratings.dat", b""), ("ratings.csv", b"userId,movieId,rating,timestamp\n"),
                          ("u.data", b"\n")):
        with pytest.raises(D.DataFormatError, match="empty"):
            D.load_dataset(_write(tmp_path / name, content))


def test_truncated_zip(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/u.data", _udata(ROWS * 50))
    whole = buf.getvalue()
    _write(tmp_path / "ml-100k.zip", whole[: len(whole) // 2])
    with pytest.raises(D.DataFormatError, match="truncated or corrupt zip"):
        D.load_dataset("ml-100k", data_dir=tmp_path)
    with pytest.raises(D.DataFormatError, match="truncated or corrupt zip"):
        D.load_dataset(tmp_path / "ml-100k.zip")
    # a zip whose data (not its directory) is damaged fails its CRC check the same way
    damaged = bytearray(whole)
    start = whole.find(b"ml-100k/u.data") + len("ml-100k/u.data")
    damaged[start + 5 : start + 25] = bytes(20)
    _write(tmp_path / "ml-100k.zip", bytes(damaged))
    with pytest.raises(D.DataFormatError, match="truncated or corrupt zip"):
        D.load_dataset("ml-100k", data_dir=tmp_path)


def test_neumf_negative_file_must_follow_test_file(tmp_path):
    _neumf_files(tmp_path, four_columns=False)
    _write(tmp_path / "ml-1m.test.negative", b"(0,3)\t4\t5\n(1,2)\t2\t5\n(2,5)\t0\t3\n")
    with pytest.raises(D.DataFormatError) as info:
        D.load_dataset(tmp_path)
    assert info.value.line == 2
    _write(tmp_path / "ml-1m.test.negative", b"(0,3)\t4\t5\n(1,1)\t2\n(2,5)\t0\t3\n")
    with pytest.raises(D.DataFormatError) as info:
        D.load_dataset(tmp_path)
    assert info.value.line == 2 and info.value.text == "(1,1)\t2"


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(D.DatasetNotFoundError, match="poincare-parity download --dataset ml-100k"):
        D.load_dataset("ml-100k", data_dir=tmp_path)
    with pytest.raises(D.DatasetNotFoundError, match="neither a dataset name"):
        D.load_dataset(tmp_path / "nothing-here")


def test_fast_path_parses_a_million_rows_without_the_line_by_line_fallback(tmp_path, monkeypatch):
    """ML-1M-sized ratings.dat: the vectorised parser takes it whole (the slow locator never runs)."""
    import pandas as pd

    syn = D.synthetic()
    frame = pd.DataFrame({"u": syn.users + 1, "i": syn.items + 1, "r": syn.ratings.astype(int), "t": syn.timestamps})
    body = frame.to_csv(sep="\t", header=False, index=False, lineterminator="\n").replace("\t", "::")
    path = _write(tmp_path / "ratings.dat", body.encode())

    def no_fallback(*args, **kwargs):
        raise AssertionError("the line-by-line locator ran on a valid file")

    monkeypatch.setattr(formats, "_locate_bad_line", no_fallback)
    data = D.load_dataset(path)
    assert data.n_ratings == 1_000_209 and (data.n_users, data.n_items) == (6040, 3706)
    assert np.array_equal(data.ratings, syn.ratings)


# ----------------------------------------------------------------------------------- synthetic


def test_synthetic_is_ml1m_shaped_and_seeded():
    a = D.synthetic()
    assert (a.n_users, a.n_items, a.n_ratings) == (6040, 3706, 1_000_209)
    small = dict(n_users=500, n_items=400, n_ratings=30_000)
    b, c, d = D.synthetic(seed=0, **small), D.synthetic(seed=0, **small), D.synthetic(seed=1, **small)
    assert np.array_equal(b.items, c.items) and np.array_equal(b.timestamps, c.timestamps)
    assert not np.array_equal(b.items, d.items)
    assert set(np.unique(a.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert np.bincount(a.users).min() >= 20
    pairs = a.users * a.n_items + a.items
    assert np.unique(pairs).size == pairs.size
    # power law: the most popular 10% of items hold far more than 10% of the ratings
    pop = np.sort(np.bincount(a.items, minlength=a.n_items))[::-1]
    assert pop[: a.n_items // 10].sum() > 0.3 * a.n_ratings
    assert D.split_seed(a).test.n_users > 0


# ----------------------------------------------------------------------------------- protocols


def _small() -> D.Dataset:
    return formats._explicit_dataset("small", "test", np.array(ROWS, np.float64))


def test_seed_split_by_time_with_dropped_counts():
    data = _small()  # 12 rows after the duplicate; timestamps 100..160 early, 900..930 late
    split = D.split_seed(data, quantile=0.6)
    info = split.info
    # sorted timestamps 100 105 120 130 140 150 160 900 905 910 920 930: the 0.6 quantile sits at
    # position 0.6 * 11 = 6.6, "nearest" takes position 7, t = 900; five rows are at or after it
    assert info["test_timepoint"] == 900 and info["test_late_rows"] == 5
    assert info["test_dropped_rows_unseen_user"] == 1 and info["test_dropped_users"] == 1  # user 3
    assert info["test_dropped_rows_unseen_item"] == 2  # movie 40 never appears before 900
    assert info["test_rows"] == 2 and info["train_rows"] == 7
    t = split.test.truth.tocoo()
    held = {(int(data.user_ids[u]), int(data.item_ids[i]), float(r)) for u, i, r in zip(t.row, t.col, t.data)}
    assert held == {(4, 30, 2.0), (1, 20, 4.0)}
    assert split.test.users.tolist() == [0, 3]
    # the test never leaks into training, and the test's ranking excludes exactly the training items
    assert split.train.multiply(split.test.truth).nnz == 0
    assert split.test.seen is split.train
    assert not split.test.eligible[data.item_ids.tolist().index(40)]


def test_seed_validation_is_carved_from_training_only():
    data = D.synthetic(n_users=300, n_items=200, n_ratings=20_000, seed=3)
    split = D.split_seed(data)
    train = split.train.toarray()
    fit, val = split.fit.toarray(), split.validation.truth.toarray()
    assert np.all((fit != 0) <= (train != 0)) and np.all((val != 0) <= (train != 0))
    assert np.all(((fit != 0) & (val != 0)) == 0)
    assert split.validation.seen is split.fit
    assert split.info["validation_timepoint"] < split.info["test_timepoint"]
    again = D.split_seed(data)
    assert (again.fit != split.fit).nnz == 0 and np.array_equal(again.validation.users, split.validation.users)


def test_seed_split_refuses_implicit_or_timeless_data(tmp_path):
    _neumf_files(tmp_path, four_columns=False)
    with pytest.raises(D.DataError, match="timestamps"):
        D.split_seed(D.load_dataset(tmp_path))


def test_neumf_split_from_files_and_its_validation(tmp_path):
    data = D.synthetic(n_users=200, n_items=300, n_ratings=12_000, seed=5)
    split = D.split_neumf(data, validation_seed=7)
    test, val = split.test, split.validation
    assert test.candidates.shape == (len(test.users), 100)
    train = split.train.toarray() != 0
    everything = data.matrix(binary=True).toarray() != 0
    for row, u in enumerate(test.users):
        held, negs = test.candidates[row, 0], test.candidates[row, 1:]
        assert everything[u, held] and not train[u, held]
        assert not everything[u, negs].any() and np.unique(negs).size == negs.size
        # the held-out item is the user's latest rating
        rows = np.flatnonzero(data.users == u)
        assert data.items[rows[np.argmax(data.timestamps[rows])]] == held
    fit = split.fit.toarray() != 0
    test_item = dict(zip(test.users.tolist(), test.candidates[:, 0].tolist()))
    for row, u in enumerate(val.users):
        held, negs = val.candidates[row, 0], val.candidates[row, 1:]
        assert train[u, held] and not fit[u, held]
        # with timestamps, the validation item is the latest training item, as the test is the latest
        rows = np.flatnonzero((data.users == u) & (data.items != test_item.get(u, -1)))
        assert data.items[rows[np.argmax(data.timestamps[rows])]] == held
        assert not train[u, negs].any() and not np.isin(negs, test.candidates[test.users == u, 0]).any()
    assert (split.train - split.fit).nnz == len(val.users)
    same, other = D.split_neumf(data, validation_seed=7), D.split_neumf(data, validation_seed=8)
    assert np.array_equal(same.validation.candidates, val.candidates)
    assert not np.array_equal(other.validation.candidates, val.candidates)
    assert np.array_equal(other.test.candidates, test.candidates)  # the seed moves only the validation


def test_neumf_validation_without_timestamps_is_drawn_with_the_seed(tmp_path):
    data = D.synthetic(n_users=200, n_items=300, n_ratings=12_000, seed=5)
    timeless = D.Dataset("timeless", data.users, data.items, data.ratings, None, data.user_ids, data.item_ids,
                         implicit=True)
    a, b, c = (D.split_neumf(timeless, validation_seed=s) for s in (1, 1, 2))
    assert a.info["validation_item"].startswith("random")
    assert np.array_equal(a.validation.candidates, b.validation.candidates)
    assert not np.array_equal(a.validation.candidates[:, 0], c.validation.candidates[:, 0])
    assert (a.train - a.fit).nnz == a.validation.n_users == 200


def test_neumf_split_needs_room_for_negatives():
    crowded = D.synthetic(n_users=100, n_items=120, n_ratings=5_000, seed=1)  # ~50 of 120 items each
    with pytest.raises(D.DataError, match="untouched items"):
        D.split_neumf(crowded)


def test_make_split_reads_the_config():
    from parity.config import DataConfig

    data = D.synthetic(n_users=200, n_items=300, n_ratings=12_000, seed=5)
    assert D.make_split(data, DataConfig(dataset="synthetic", protocol="seed", quantile=0.9)).info["quantile"] == 0.9
    assert D.make_split(data, DataConfig(dataset="synthetic", protocol="neumf")).protocol == "neumf"
    with pytest.raises(ValueError, match="data.protocol='loo': expected one of seed, neumf"):
        DataConfig(dataset="synthetic", protocol="loo")  # refused before any split is attempted


# ------------------------------------------------------------------------------------ batching


def test_batch_order_is_a_seeded_partition():
    batches = D.batch_order(1000, 256, seed=3, epoch=2)
    assert [len(b) for b in batches] == [256, 256, 256, 232]
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(1000))
    again = D.batch_order(1000, 256, seed=3, epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    assert not np.array_equal(D.batch_order(1000, 256, 3, 3)[0], batches[0])
    assert not np.array_equal(D.batch_order(1000, 256, 4, 2)[0], batches[0])
    assert D.batch_order(0, 8, 0, 0) == []
    with pytest.raises(ValueError):
        D.batch_order(10, 0, 0, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_rows_matches_toarray(dtype):
    data = D.synthetic(n_users=100, n_items=80, n_ratings=3000, seed=2)
    m = data.matrix()
    rows = np.array([5, 0, 99, 5, 42])
    got = D.dense_rows(m, rows, dtype)
    assert got.dtype == dtype and got.flags.c_contiguous
    assert np.array_equal(got, m.toarray()[rows].astype(dtype))
    assert D.dense_rows(m, [], dtype).shape == (0, 80)


# ------------------------------------------------------------------------------------ download


def _remote(content: bytes, fname: str = "toy.zip") -> D.RemoteFile:
    return D.RemoteFile(fname, f"https://example.invalid/{fname}", hashlib.sha256(content).hexdigest(), "a test")


def _serving(content: bytes):
    def downloader(url, output_file, pooch_obj, check_only=False):
        Path(output_file).write_bytes(content) if isinstance(output_file, (str, Path)) else output_file.write(content)

    return downloader


def test_download_checks_the_hash(tmp_path, monkeypatch):
    good = b"the right bytes"
    monkeypatch.setitem(D.REMOTE, "toy", (_remote(good),))
    [path] = D.download("toy", tmp_path, downloader=_serving(good))
    assert path == tmp_path / "toy.zip" and path.read_bytes() == good
    # present and right: not fetched again
    assert D.download("toy", tmp_path, downloader=_serving(b"never used")) == [path]


def test_wrong_checksum_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setitem(D.REMOTE, "toy", (_remote(b"the right bytes"),))
    with pytest.raises(D.ChecksumError, match="has sha256 .* not the pinned"):
        D.download("toy", tmp_path, downloader=_serving(b"tampered bytes"))
    assert list(tmp_path.iterdir()) == []
    # a wrong file already in place is moved aside, never deleted, even when the new download fails too
    _write(tmp_path / "toy.zip", b"stale")
    with pytest.raises(D.ChecksumError, match="moved aside"):
        D.download("toy", tmp_path, downloader=_serving(b"tampered bytes"))
    aside = tmp_path / f"toy.zip.mismatch-{hashlib.sha256(b'stale').hexdigest()[:8]}"
    assert list(tmp_path.iterdir()) == [aside] and aside.read_bytes() == b"stale"


def test_offline_fails_at_once_naming_file_source_and_destination(tmp_path, monkeypatch):
    remote = _remote(b"x")
    monkeypatch.setitem(D.REMOTE, "toy", (remote,))

    def offline(url, output_file, pooch_obj, check_only=False):
        raise requests.exceptions.ConnectionError("Failed to resolve 'example.invalid'")

    with pytest.raises(D.DownloadError) as info:
        D.download("toy", tmp_path, downloader=offline)
    message = str(info.value)
    assert "toy.zip" in message and remote.url in message and str(tmp_path / "toy.zip") in message
    assert remote.sha256 in message and list(tmp_path.iterdir()) == []


def test_offline_with_the_real_downloader(tmp_path, monkeypatch):
    """pooch's own HTTP downloader against a closed local port: refused at once, clear error."""
    remote = D.RemoteFile("toy.zip", "http://127.0.0.1:9/toy.zip", "0" * 64, "a test")
    monkeypatch.setitem(D.REMOTE, "toy", (remote,))
    with pytest.raises(D.DownloadError, match="put it at"):
        D.download("toy", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_dataset_for_download(tmp_path):
    with pytest.raises(D.DataError, match="downloadable are"):
        D.download("ml-42m", tmp_path)


def test_remote_table_is_pinned():
    for name in ("ml-1m", "ml-100k", "ml-latest-small", "ml-1m-neumf"):
        for file in D.REMOTE[name]:
            assert len(file.sha256) == 64 and int(file.sha256, 16) >= 0
            assert file.url.startswith("https://")
    assert all(remote.NEUMF_COMMIT in r.url for r in D.REMOTE["ml-1m-neumf"])


def _ml1m_like(n_users=30, n_items=25, seed=0):
    """A ratings.dat sorted by user, movies in a shuffled id order, plus its latest-per-user test rows."""
    rng = np.random.default_rng(seed)
    movie_ids = rng.permutation(np.arange(1, 400))[:n_items]
    rows = []
    for u in range(1, n_users + 1):
        for m in rng.choice(movie_ids, size=rng.integers(4, 10), replace=False):
            rows.append((u, int(m), int(rng.integers(1, 6)), int(rng.integers(10**9, 10**9 + 10**6))))
    return rows


def _neumf_reference(rows):
    """Brute force: NeuMF numbering by first appearance; test = latest row per user; the rest in order."""
    users, items = {}, {}
    for u, i, _, _ in rows:
        users.setdefault(u, len(users))
        items.setdefault(i, len(items))
    latest = {}
    for n, (u, _, _, t) in enumerate(rows):
        if u not in latest or t >= rows[latest[u]][3]:
            latest[u] = n
    test = [(users[rows[n][0]], items[rows[n][1]], rows[n][2], rows[n][3]) for n in sorted(latest.values())]
    train = "".join(f"{users[u]}\t{items[i]}\n" for n, (u, i, _, _) in enumerate(rows) if n not in set(latest.values()))
    return test, train.encode()


def test_derive_neumf_train_matches_brute_force():
    rows = _ml1m_like()
    test, expected = _neumf_reference(rows)
    got = D.derive_neumf_train(_dat(rows), np.array(test, np.float64))
    assert got == expected
    with pytest.raises(D.DataError, match="not ratings of ratings.dat"):
        D.derive_neumf_train(_dat(rows), np.array([(0, 999, 5, 1)], np.float64))


def test_download_neumf_end_to_end_with_derived_train(tmp_path, monkeypatch):
    rows = _ml1m_like(seed=1)
    test, train = _neumf_reference(rows)
    test_bytes = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in test).encode()
    rng = np.random.default_rng(0)
    negative_bytes = "".join(f"({u},{i})\t" + "\t".join(str(x) for x in rng.integers(0, 25, 3)) + "\n"
                             for u, i, _, _ in test).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", _dat(rows))
    served = {"ml-1m.zip": buf.getvalue(), "ml-1m.test.rating": test_bytes, "ml-1m.test.negative": negative_bytes}
    monkeypatch.setitem(D.REMOTE, "ml-1m", (_remote(served["ml-1m.zip"], "ml-1m.zip"),))
    monkeypatch.setitem(D.REMOTE, "ml-1m-neumf", (
        _remote(test_bytes, "ml-1m-neumf/ml-1m.test.rating"),
        _remote(negative_bytes, "ml-1m-neumf/ml-1m.test.negative")))
    monkeypatch.setattr(remote, "NEUMF_TRAIN_SHA256", hashlib.sha256(train).hexdigest())

    def downloader(url, output_file, pooch_obj, check_only=False):
        Path(output_file).write_bytes(served[url.rsplit("/", 1)[1]])

    paths = D.download("ml-1m-neumf", tmp_path, downloader=downloader)
    assert (tmp_path / "ml-1m-neumf" / "ml-1m.train.rating").read_bytes() == train
    assert len(paths) == 3
    data = D.load_dataset("ml-1m-neumf", data_dir=tmp_path)
    assert data.n_ratings == len(rows) - len(test)
    # a wrong train file in place is moved aside (not deleted) and derived afresh; a wrong pin writes nothing
    _write(tmp_path / "ml-1m-neumf" / "ml-1m.train.rating", b"0\t0\n")
    notes = []
    D.download("ml-1m-neumf", tmp_path, downloader=downloader, notify=notes.append)
    assert (tmp_path / "ml-1m-neumf" / "ml-1m.train.rating").read_bytes() == train
    sha8 = hashlib.sha256(b"0\t0\n").hexdigest()[:8]
    aside = tmp_path / "ml-1m-neumf" / f"ml-1m.train.rating.mismatch-{sha8}"
    assert aside.read_bytes() == b"0\t0\n" and len(notes) == 1 and str(aside) in notes[0]
    monkeypatch.setattr(remote, "NEUMF_TRAIN_SHA256", "0" * 64)
    with pytest.raises(D.ChecksumError, match="nothing was written"):
        D.download("ml-1m-neumf", tmp_path, downloader=downloader)
    assert not (tmp_path / "ml-1m-neumf" / "ml-1m.train.rating").exists()
    assert len(list((tmp_path / "ml-1m-neumf").glob("ml-1m.train.rating.mismatch-*"))) == 2  # both kept
    assert not list((tmp_path / "ml-1m-neumf").glob("*.part"))


# ------------------------------------------------------------------------------------------ CLI


def test_cli_info_and_user_errors(tmp_path, capsys, monkeypatch):
    from parity.cli import main

    _write(tmp_path / "ml-100k" / "u.data", _udata(ROWS))
    out_json = tmp_path / "info.json"
    assert main(["data", "info", "--dataset", "ml-100k", "--data-dir", str(tmp_path),
                 "--quantile", "0.6", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "test_dropped_users" in printed and "duplicates dropped" in printed
    import json

    assert json.loads(out_json.read_text())["split"]["test_rows"] == 2
    assert main(["data", "info", "--dataset", "ml-1m", "--data-dir", str(tmp_path)]) == 2
    assert "poincare-parity download" in capsys.readouterr().err
    _write(tmp_path / "bad" / "u.data", b"1\t2\t3\n")
    assert main(["data", "info", "--dataset", str(tmp_path / "bad")]) == 2
    assert "line 1" in capsys.readouterr().err
