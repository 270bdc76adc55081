"""MovieLens data: loaders, download + checksum + cache, the two protocols, batching (numpy / scipy.sparse).

Modules: `formats` (files and loading), `remote` (download), `synthetic`, `protocols`, `batching`, `dataset`,
`errors`; this package re-exports their public names.

Public API (what the models, the harness and the tests call)
------------------------------------------------------------
Loading
    load_dataset(name_or_path, data_dir=None) -> Dataset
        name: "ml-1m", "ml-1m-neumf", "ml-100k", "ml-latest-small", "synthetic"; or a local path to a
        folder, a GroupLens zip, or one ratings file (ratings.dat, u.data, ratings.csv, *.train.rating).
    synthetic(n_users=6040, n_items=3706, n_ratings=1_000_209, seed=0) -> Dataset   (ML-1M shaped)
    resolve_data_dir(explicit=None) -> Path   `explicit`, else $POINCARE_PARITY_DATA, else the user cache directory
    Dataset: name, users, items (int64 contiguous indices), ratings (float32), timestamps (int64 or
        None), user_ids, item_ids (index -> the dataset's own id), implicit, duplicates_dropped,
        source, neumf_test (NeuMFTest or None); n_users, n_items, n_ratings; matrix() -> CSR.

Protocols (a Split: everything one run needs; every matrix is users x items, scipy CSR, float32)
    split_seed(data, quantile=0.98, validation_quantile=None) -> Split
    split_neumf(data, validation_seed=0, n_negatives=99, negatives_seed=0) -> Split
    make_split(data, config: parity.config.DataConfig) -> Split      (dispatch on config.protocol)
    default_protocol(dataset) -> "neumf" | "seed"   the protocol a dataset gets when none is named
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
    epoch_masks(model, train, seed, epoch, n_rows) -> dropout keep-masks of one epoch

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

from parity.data.batching import batch_order, dense_rows, epoch_masks
from parity.data.dataset import Dataset, NeuMFTest
from parity.data.errors import (
    ChecksumError,
    DataError,
    DataFormatError,
    DatasetNotFoundError,
    DownloadError,
)
from parity.data.formats import DATASETS, load_dataset, resolve_data_dir
from parity.data.protocols import (
    HeldOut,
    Split,
    default_protocol,
    load_split,
    make_split,
    split_neumf,
    split_seed,
)
from parity.data.remote import REMOTE, RemoteFile, derive_neumf_train, download
from parity.data.synthetic import synthetic

__all__ = [
    "DataError", "DataFormatError", "DatasetNotFoundError", "ChecksumError", "DownloadError",
    "Dataset", "NeuMFTest", "HeldOut", "Split", "RemoteFile", "REMOTE", "DATASETS",
    "resolve_data_dir", "load_dataset", "synthetic", "split_seed", "split_neumf", "make_split", "load_split",
    "default_protocol", "batch_order", "dense_rows", "epoch_masks", "download", "derive_neumf_train",
]
