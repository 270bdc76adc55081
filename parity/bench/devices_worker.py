"""The process `parity.bench.devices` starts for one (preset, framework, device count):
`python -m parity.bench.devices_worker SPEC OUT` reads the JSON SPEC, trains data-parallel, writes the
seconds of each epoch to OUT. Not imported by the package: it runs as its own process, where the
framework starts with the environment the backend asked for (JAX's host devices)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from parity import allocator, backend, convert, sysinfo
from parity.bench.runner import BenchError, preset_run
from parity.files import atomic_write_text


def worker(spec_path: str, out_path: str) -> None:
    """In the new process: build the preset's model, time the epochs, write the seconds to `out_path`."""
    import scipy.sparse

    from parity.data import batch_order, dense_rows, epoch_masks

    allocator.keep_freed_memory()  # as the command that started this process

    spec = json.loads(Path(spec_path).read_text())
    if spec["dtype"] == "float64":
        backend.enable_float64()
    framework = backend.get(spec["framework"])
    problem = framework.select_device(spec["device"], spec["gpu_matmul"])
    if problem:
        raise BenchError(problem)
    arrays = np.load(spec["matrix"])
    matrix = scipy.sparse.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]),
                                     shape=tuple(int(n) for n in arrays["shape"]))
    n_users, n_items = matrix.shape
    run = preset_run(spec["preset"], n_items, dtype=spec["dtype"], hidden_cap=spec["hidden_cap"])
    seed = spec["seed"]
    weights = {k: v.astype(spec["dtype"]) for k, v in convert.init_weights(run.model, seed).items()}
    dense = dense_rows(matrix, np.arange(n_users), spec["dtype"])
    epochs = [(batch_order(n_users, run.train.batch_size, seed, epoch),
               epoch_masks(run.model, run.train, seed, epoch, n_users)) for epoch in range(1 + spec["repeats"])]
    seconds = framework.data_parallel_epoch_seconds(run, weights, dense, epochs, devices=spec["devices"],
                                                    device=spec["device"])
    atomic_write_text(Path(out_path), json.dumps({"seconds": [float(s) for s in seconds],
                                                  "framework_info": sysinfo.framework_info()}))


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
