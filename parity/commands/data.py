"""`poincare-parity download` and `poincare-parity data {info,baselines}`."""

from __future__ import annotations

import sys
from typing import Any

import pandas as pd

from parity import baselines
from parity.data import (
    DataError,
    Dataset,
    default_protocol,
    download,
    load_dataset,
    resolve_data_dir,
    split_neumf,
    split_seed,
)
from parity.errors import EXIT_OK, UsageError
from parity.files import check_writable, write_json


def describe(data: Dataset) -> list[tuple[str, str]]:
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


def _pairs(rows) -> str:
    rows = [(str(a), str(b)) for a, b in rows]
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"  {a:<{width}}  {b}" for a, b in rows)


def _split(args: Any, data: Dataset):
    protocol = args.protocol or default_protocol(data)
    if protocol == "seed":
        if not 0.0 < args.quantile < 1.0:
            raise UsageError(f"--quantile must lie strictly between 0 and 1, got {args.quantile}")
        return split_seed(data, quantile=args.quantile)
    return split_neumf(data, validation_seed=args.validation_seed)


def _metrics_row(name: str, m: dict[str, Any]) -> str:
    return (f"  {name:<24} HR@{m['k']} {m['hr']:.4f} [{m['hr_low']:.4f}, {m['hr_high']:.4f}]  "
            f"NDCG@{m['k']} {m['ndcg']:.4f} [{m['ndcg_low']:.4f}, {m['ndcg_high']:.4f}]  n={m['n_users']}")


def format_baselines(results: dict[str, Any]) -> str:
    lines = [f"{results['dataset']}, {results['protocol']} protocol (test)"]
    lines.append(_metrics_row("popularity", results["popularity"]))
    if "ease_fixed" in results:
        lines.append(_metrics_row(f"EASE lambda={results['ease_fixed']['lambda']:g}", results["ease_fixed"]))
    if "ease_tuned" in results:
        lines.append(_metrics_row(f"EASE lambda={results['ease_tuned']['lambda']:g} (tuned)", results["ease_tuned"]))
        lines.append("validation (EASE fitted on train minus validation)")
        lines.extend(_metrics_row(f"EASE lambda={row['lambda']:g}", row) for row in results["ease_validation"])
    return "\n".join(lines)


def info(args) -> int:
    check_writable(args.json)
    data = load_dataset(args.dataset, args.data_dir)
    split = _split(args, data)
    print(f"{data.name}\n{_pairs(describe(data))}\n\n{split.protocol} protocol\n{_pairs(split.info.items())}")
    if args.json:
        payload = {"dataset": dict(describe(data)), "split": split.info}
        print(f"wrote {write_json(args.json, payload, command='data info')}")
    return EXIT_OK


def run_baselines(args) -> int:
    lambdas = tuple(args.lambdas or baselines.LAMBDAS)
    fixed = args.ease_lambda
    if args.k < 1 or any(lam <= 0 for lam in lambdas + ((fixed,) if fixed is not None else ())):
        raise UsageError(f"--k must be >= 1 and every lambda > 0 (got k={args.k}, lambdas={lambdas}, fixed={fixed})")
    check_writable(args.json)
    dataset = load_dataset(args.dataset, args.data_dir)
    split = _split(args, dataset)
    results = baselines.run_baselines(split, lambdas=lambdas, fixed_lambda=fixed, k=args.k,
                                      progress=not args.no_progress)
    print(format_baselines(results))
    if args.json:
        print(f"wrote {write_json(args.json, {'command': 'baselines', **results}, command='data baselines')}")
    return EXIT_OK


def fetch(args) -> int:
    check_writable(args.json, folders=(resolve_data_dir(args.data_dir),))
    paths = download(args.dataset, args.data_dir, notify=lambda note: print(f"note: {note}", file=sys.stderr))
    for p in paths:
        print(f"ok  {p}")
    if args.json:
        print(f"wrote {write_json(args.json, {'files': [str(p) for p in paths]}, command='download')}")
    return EXIT_OK


def main(args) -> int:
    if args.command == "download":
        return fetch(args)
    if args.data_command == "info":
        return info(args)
    if args.data_command == "baselines":
        return run_baselines(args)
    raise DataError(f"unknown data command {args.data_command!r}")
