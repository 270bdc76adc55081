"""parity.data on the real MovieLens files in ../shared/data (skipped without them, failed under CI).

The figures asserted here were measured on these exact files (md5s in ../shared/data/README.md);
the splits are deterministic, so counts are asserted exactly.
"""

from __future__ import annotations

import hashlib

import numpy as np

from parity import data as D
from parity.data import formats, remote


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ml100k_counts_and_seed_split(require_dataset):
    root = require_dataset("ml-100k").parent
    data = D.load_dataset("ml-100k", data_dir=root)
    assert (data.n_users, data.n_items, data.n_ratings, data.duplicates_dropped) == (943, 1682, 100_000, 0)
    info = D.split_seed(data).info
    assert {k: info[k] for k in ("train_rows", "test_rows", "test_users", "test_late_rows",
                                 "test_dropped_rows_unseen_user", "test_dropped_rows_unseen_item",
                                 "test_dropped_users", "fit_rows", "validation_rows", "validation_users")} == {
        "train_rows": 97_997, "test_rows": 1_378, "test_users": 41, "test_late_rows": 2_003,
        "test_dropped_rows_unseen_user": 618, "test_dropped_rows_unseen_item": 7, "test_dropped_users": 8,
        "fit_rows": 96_035, "validation_rows": 887, "validation_users": 51,
    }


def test_ml_latest_small_counts_and_seed_split(require_dataset):
    root = require_dataset("ml-latest-small").parent
    data = D.load_dataset("ml-latest-small", data_dir=root)
    # The shared ratings.csv ends with one extra line, "999,999999,5.0,1493846415": user 999 and
    # movie 999999 exist nowhere else (movie 999999 is not in movies.csv). Dropping ratings of
    # movies outside the catalogue restores GroupLens's own counts (610 users, 100,836 ratings).
    assert data.unknown_items_dropped == 1
    assert (data.n_users, data.n_items, data.n_ratings) == (610, 9_724, 100_836)
    assert 999 not in data.user_ids and set(np.unique(data.ratings).tolist()) == set(np.arange(1, 11) / 2)
    info = D.split_seed(data).info
    assert (info["train_rows"], info["test_rows"], info["test_users"]) == (98_818, 189, 14)
    assert (info["test_dropped_rows_unseen_user"], info["test_dropped_rows_unseen_item"],
            info["test_dropped_users"]) == (1_779, 50, 15)
    assert (info["validation_rows"], info["validation_users"]) == (571, 19)


def test_ml1m_neumf_counts_and_split(require_dataset, monkeypatch):
    root = require_dataset("ml-1m-neumf").parent

    def no_fallback(*args, **kwargs):
        raise AssertionError("the line-by-line locator ran on a valid file")

    monkeypatch.setattr(formats, "_locate_bad_line", no_fallback)  # the vectorised path read every file
    data = D.load_dataset("ml-1m-neumf", data_dir=root)
    assert (data.n_users, data.n_items, data.n_ratings) == (6040, 3706, 994_169)
    assert data.timestamps is None and data.implicit
    split = D.split_neumf(data)
    assert split.test.candidates.shape == (6040, 100)
    assert np.array_equal(split.test.candidates[:, 0], data.neumf_test.items)
    assert split.info["test_negatives_repeating_heldout"] == 156
    assert split.info["validation_item"].startswith("random")
    assert split.fit.nnz == 994_169 - 6040 and split.validation.n_users == 6040


def test_pinned_hashes_are_those_of_the_shared_files(require_dataset):
    """The download pins name exactly the files this project was measured on."""
    folder = require_dataset("ml-1m-neumf")
    pins = {r.fname.split("/")[-1]: r for r in D.REMOTE["ml-1m-neumf"]}
    for name in ("ml-1m.test.rating", "ml-1m.test.negative"):
        assert _sha256(folder / name) == pins[name].sha256
        assert hashlib.md5((folder / name).read_bytes()).hexdigest() == pins[name].md5
    assert _sha256(folder / "ml-1m.train.rating") == remote.NEUMF_TRAIN_SHA256
    assert hashlib.md5((folder / "ml-1m.train.rating").read_bytes()).hexdigest() == remote.NEUMF_TRAIN_MD5


def test_neumf_numbering_is_first_appearance_in_ratings_dat(require_dataset):
    """Evidence for deriving ml-1m.train.rating from ml-1m.zip (see parity.data.derive_neumf_train).

    If items are numbered by first appearance in ratings.dat (test rows included) and the train
    file keeps ratings.dat's order, then walking the train file, each new item id is the next
    unused number, except for numbers taken by a test item of the current or an earlier user
    (whose first appearance was that test row). The shared train file satisfies this exactly.
    """
    folder = require_dataset("ml-1m-neumf")
    train = formats.read_neumf_rating(folder / "ml-1m.train.rating").astype(np.int64)
    test = formats.read_neumf_rating(folder / "ml-1m.test.rating").astype(np.int64)
    users, items = train[:, 0], train[:, 1]
    assert np.all(np.diff(users) >= 0)  # grouped by user, users in ratings.dat order (UserID - 1)
    assert np.array_equal(test[:, 0], np.arange(6040))
    uniq, first = np.unique(items, return_index=True)  # first train position of each item
    # the first user whose test row holds each item (a later test row cannot be a first appearance)
    first_test_user = {}
    for u, i in zip(test[:, 0].tolist(), test[:, 1].tolist()):
        first_test_user.setdefault(i, u)
    skipped, next_id, prev_user = set(), 0, 0
    order = np.argsort(first)
    for item, position in zip(uniq[order].tolist(), first[order].tolist()):  # by first train appearance
        user = int(users[position])
        if item < next_id:  # seen before only as a test row
            assert item in skipped
            continue
        while next_id < item:  # numbers passed over: first seen as a test row between the two users
            assert prev_user <= first_test_user.get(next_id, -1) <= user
            skipped.add(next_id)
            next_id += 1
        next_id, prev_user = item + 1, user
    for rest in range(next_id, 3706):  # numbers after the last new train item: test rows too
        assert first_test_user.get(rest, -1) >= prev_user
    assert len(skipped) > 0  # the rule was exercised (test items that were first appearances)
