"""The `poincare-parity` command line.

Arguments are declared here (cheap: `--help` imports neither jax nor torch); each command's work
lives in the module named in COMMANDS, imported only when the command runs, as `module.cli(args)`,
which returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

DTYPES = ("float32", "float64", "both")


def _dtype_arg(parser: argparse.ArgumentParser, default: str = "both") -> None:
    parser.add_argument(
        "--dtype", choices=DTYPES, default=default,
        help=f"precision to check: float64 is the proof, float32 is what users run (default: {default})",
    )


def _json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", help="also write the records as JSON to PATH")


def _add_ops(p: argparse.ArgumentParser) -> None:
    _dtype_arg(p)
    _json_arg(p)


def _add_optim(p: argparse.ArgumentParser) -> None:
    _dtype_arg(p)
    _json_arg(p)


def _add_models(p: argparse.ArgumentParser) -> None:
    _dtype_arg(p)
    _json_arg(p)


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=("ae", "hae"), default="ae", help="Euclidean or hyperbolic autoencoder")
    p.add_argument("--framework", choices=("jax", "torch", "both"), default="jax")
    p.add_argument("--dataset", default=None, help="dataset name or a local path (default: the preset's)")
    p.add_argument("--protocol", choices=("seed", "neumf"), default=None)
    p.add_argument("--preset", default=None, help="named configuration (see parity.config.PRESETS)")
    _json_arg(p)


def _add_bench(p: argparse.ArgumentParser) -> None:
    _json_arg(p)


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", help="JSON files written by ops/optim/models/train/bench")


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small settings: about 15 minutes on 2 CPU cores")
    p.add_argument("--dataset", default="ml-1m-neumf")


def _add_download(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, help="one dataset (default: all)")


def _add_data(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", required=True, metavar="{info,baselines}")
    info = sub.add_parser("info", help="counts, density, split sizes")
    info.add_argument("--dataset", required=True)
    base = sub.add_parser("baselines", help="popularity and EASE HR@10 / NDCG@10")
    base.add_argument("--dataset", required=True)
    _json_arg(base)


# name -> (module that runs it, one-line help, argument declarations)
COMMANDS = {
    "ops": ("parity.checks.ops", "Poincaré-ball ops: values and gradients, JAX vs geoopt, per regime", _add_ops),
    "optim": ("parity.checks.optim", "Riemannian SGD/Adam trajectories, JAX (optax) vs geoopt", _add_optim),
    "models": ("parity.checks.models", "autoencoders: forward, loss, gradients and training, JAX vs PyTorch", _add_models),
    "train": ("parity.training", "train an autoencoder and evaluate HR@10 / NDCG@10", _add_train),
    "bench": ("parity.bench", "throughput: PyTorch eager, torch.compile, JAX jit", _add_bench),
    "report": ("parity.report", "collect JSON results into a Markdown + PNG report", _add_report),
    "run": ("parity.run", "the whole job: parity suites, training, baselines, bench, report", _add_run),
    "download": ("parity.data", "fetch MovieLens files into $POINCARE_PARITY_DATA", _add_download),
    "data": ("parity.data", "dataset information and baselines", _add_data),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poincare-parity",
        description="Check that a JAX port of Poincaré-ball recommender models computes what the "
        "PyTorch + geoopt reference computes, then compare HR@10 and throughput.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text, add_arguments) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.cli(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
