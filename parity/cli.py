"""The `poincare-parity` command line.

Arguments are declared here (cheap: `--help` imports neither jax nor torch, and every default is stated
once, here); each command lives in `parity.commands.<name>`, imported only when it runs, as
`main(args)`, which returns the exit status. `main` below maps the errors a user can fix
(`parity.errors.UsageError`) to one line on stderr and exit status 2, a diverged training run to 3, and
Ctrl-C to 130 (see `parity.errors`).
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


def _device_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a device count >= 1, got {text!r}")
    return count


def _json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", help="also write the records as JSON to PATH")


def _data_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="data directory (default: $POINCARE_PARITY_DATA, else the user cache directory)")


def _common_args(parser: argparse.ArgumentParser) -> None:
    """--json and --no-progress on every command (declared once; a command that declares its own keeps it)."""
    have = {a for action in parser._actions for a in action.option_strings}
    if "--json" not in have:
        _json_arg(parser)
    if "--no-progress" not in have:
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_ops(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Compare every Poincaré-ball function of jax_impl.poincare with geoopt (torch_ref.poincare): "
        "values and gradients (VJP with one random cotangent, w.r.t. every input and c), per input regime "
        "(zero, origin, bulk, boundary, identical), c in {1e-3, 0.1, 1, 2, 10}, dims {2, 16, 128, 3706}. "
        "An exact mpmath oracle judges float32 rows and every row where the sides disagree; rows where "
        "geoopt itself is wrong are marked REF WRONG and pass only if JAX matches the oracle. "
        "Exits 1 if any row fails."
    )
    _dtype_arg(p)
    _json_arg(p)
    p.add_argument("--functions", metavar="F1,F2", help="only these functions (comma-separated; default: all)")
    p.add_argument("--regimes", metavar="R1,R2", help="only these regimes (zero,origin,bulk,boundary,identical)")
    p.add_argument("--quick", action="store_true", help="dims {2, 16} and small batches (about a minute; a smoke test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs and cotangents (default: 0)")
    p.add_argument("--oracle", choices=("auto", "all"), default="auto",
                   help="auto: oracle on float32 rows and on disagreeing float64 rows; all: on every row")


def _add_optim(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Riemannian SGD and Adam, jax_impl.optim (optax) against geoopt 0.5.1, step by step. Both sides start "
        "from the same 16 points on the Poincaré ball and a 4x6 Euclidean matrix (one optimizer for both), "
        "minimise sum d_c(x, t)^2 + a weighted quadratic for 300 steps, and every parameter is compared after "
        "every step, for c in {0.1, 1, 2}: SGD (plain, momentum, Nesterov, dampening, weight decay, stabilize, "
        "schedule) and Adam (plain, AMSGrad, weight decay, stabilize, schedule), each with the retraction and "
        "with the exact expmap. float64 passes at relative 1e-9 over all steps; float32 at 1e-4 over the first "
        "100 steps (the whole-trajectory figure is reported). Exit status 1 if any row fails."
    )
    p.epilog = "example: poincare-parity optim --dtype both --json optim.json   (about 4 minutes on 2 CPU cores)"
    _dtype_arg(p)
    _json_arg(p)
    p.add_argument("--configs", metavar="C1,C2",
                   help="only these configurations (default: all): sgd, sgd-momentum, sgd-nesterov, sgd-dampening, "
                        "sgd-weight-decay, sgd-stabilize, sgd-schedule, adam, adam-amsgrad, adam-weight-decay, "
                        "adam-stabilize, adam-schedule")
    p.add_argument("--variant", choices=("both", "retraction", "exact"), default="both",
                   help="first-order retraction (PoincareBall), exact expmap (PoincareBallExact), or both (default)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per run (default: 300)")
    p.add_argument("--seed", type=int, default=0, help="seed of the start points and targets (default: 0)")
    p.add_argument("--quick", action="store_true", help="c = 1 only and at most 100 steps (seconds per row)")
    p.add_argument("--timing", action="store_true",
                   help="also time one step on 10,000 ball points of dimension 64 (float32), JAX vs geoopt")


def _add_models(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Autoencoder parity, JAX vs PyTorch, for the Euclidean and the hyperbolic (Möbius, geoopt) model. "
        "forward: output, loss and every parameter's gradient for each activation / loss / tied / dropout "
        "setting, the hyperbolic model's curvatures, input maps and learnable curvature, and the ML-1M-sized "
        "preset models (float32 rows add a float64 oracle arm). training: 3 epochs on ML-100K from the same "
        "weights and batches (the hyperbolic model with Riemannian Adam/SGD, jax_impl.optim vs geoopt), "
        "per-step loss and final weights. Exit status 1 if any row fails."
    )
    _dtype_arg(p)
    _json_arg(p)
    _data_dir_arg(p)
    p.add_argument("--quick", action="store_true", help="forward suite on the small models only (seconds)")
    p.add_argument("--no-training", action="store_true", help="skip the training-parity suite (needs no data)")
    p.add_argument("--dataset", default="ml-100k",
                   help="dataset name or local path for the training suite (default: ml-100k)")
    p.add_argument("--devices", type=_device_count, default=1, metavar="N",
                   help="N > 1: also the data-parallel rows: for each model (Euclidean with Adam and SGD, "
                        "hyperbolic with Riemannian Adam and SGD, dropout on) a step and 3 epochs on N devices "
                        "equal the same on 1 device, in JAX, in PyTorch, and JAX against PyTorch on N devices "
                        "(generated data: needs no download; JAX: N host devices of the CPU, PyTorch: N gloo "
                        "processes). float64 passes at 1e-10; float32 is reported against a measured bound "
                        "(default: 1)")


def _add_train(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train an autoencoder with JAX, PyTorch or both (same start weights, batches and dropout masks), "
        "with per-epoch validation HR@10 / NDCG@10, atomic per-epoch checkpoints, early stopping on "
        "validation HR@10, and test HR@10 / NDCG@10 with 95% CIs from the best validation epoch. "
        "For the hyperbolic model (--model hae: Möbius layers, Riemannian Adam/SGD on both sides) every epoch also "
        "records the code layer's saturation (mean / max norm relative to the ball's radius, share of users on the "
        "boundary). Writes reports/<run-name>/train.json. Exit status 3 if the loss became NaN or Inf."
    )
    p.epilog = ("examples: poincare-parity train --preset ae-neumf --framework both --seeds 0,1,2   |   "
                "poincare-parity train --preset hae-neumf --sweep model.c=0.001,0.01,0.1,1   |   "
                "poincare-parity train --preset ae-neumf --framework both --device gpu --devices 4")
    p.add_argument("--model", choices=("ae", "hae"), default=None,
                   help="Euclidean or hyperbolic autoencoder (default: the preset's, else ae)")
    p.add_argument("--framework", choices=("jax", "torch", "both"), default="jax",
                   help="which framework trains (both: JAX and PyTorch from the same weights and batches; "
                        "default: jax)")
    p.add_argument("--dataset", default=None, help="dataset name or a local path (default: the preset's)")
    p.add_argument("--protocol", choices=("seed", "neumf"), default=None,
                   help="evaluation protocol (default: the preset's; neumf for ml-1m-neumf, else seed)")
    p.add_argument("--preset", default=None, help="named configuration (see --list-presets)")
    p.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    p.add_argument("--seeds", default=None, metavar="S[,S...]",
                   help="seeds to run (start weights, batch order, dropout); several give mean and std")
    p.add_argument("--epochs", type=int, default=None, help="epochs to train (default: the preset's, else 40)")
    p.add_argument("--batch-size", type=int, default=None, help="users per step (default: the preset's, else 256)")
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="floating-point type of weights and data (default: the preset's, else float32)")
    p.add_argument("--patience", type=int, default=None,
                   help="early stopping: epochs without a better validation HR@10")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override any configuration field, e.g. model.activation=tanh, "
                        "model.layer_sizes=[0,600], train.dense_refeeding=true (repeatable)")
    p.add_argument("--sweep", default=None, metavar="SECTION.FIELD=V1,V2,...",
                   help="train once per value (each into OUT/FIELD=VALUE/) and write OUT/sweep.json and "
                        "OUT/sweep.png: validation and test HR@10 / NDCG@10 per value and, for the hyperbolic "
                        "model, the code layer's saturation; e.g. model.c=0.001,0.01,0.1,1 "
                        "(default OUT: reports/<run-name>-sweep-FIELD)")
    p.add_argument("--compare", nargs=2, default=None, metavar=("A.json", "B.json"),
                   help="train nothing: compare two finished runs (train.json of each, same data) on the same test "
                        "users from their best checkpoints, test HR@10 / NDCG@10 of A minus B paired by seed and "
                        "user, with 95%% bootstrap intervals (for --framework; jax by default)")
    p.add_argument("--run-name", default=None, help="output folder name under reports/ (default: the preset's name)")
    p.add_argument("--out", default=None, help="output folder (default: reports/<run-name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in the output folder from its last checkpoints (same result as an "
                        "uninterrupted run; without a checkpoint yet it starts fresh). A checkpoint of another "
                        "configuration is refused")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in the output folder: its train.json, checkpoints (and sweep files) are "
                        "removed first, nothing else. Without --resume or --overwrite, a folder that already holds "
                        "a run is refused")
    p.add_argument("--devices", type=_device_count, default=1, metavar="N",
                   help="train data-parallel on N devices: the same batches, masks and result as one device (up "
                        "to the order of the sums), each device training its block of every batch. JAX: one "
                        "process over N devices (on the CPU, N host devices); PyTorch: N processes under "
                        "DistributedDataParallel (gloo on the CPU, nccl on GPUs). A checkpoint written on N devices "
                        "resumes on any count (default: 1)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="gpu: both frameworks on CUDA, the first N GPUs with --devices N (needs CUDA builds of "
                        "torch and jax; default: cpu)")
    _data_dir_arg(p)
    _json_arg(p)


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Training and inference throughput of each model preset at the dataset's width (ML-1M: 3,706 items) "
        "and of one Riemannian optimizer step, in six arms measured side by side: PyTorch eager, "
        "torch.compile and PyTorch with sparse input; JAX jit (a jitted step per batch), JAX scan (the whole epoch "
        "as one compiled program) and JAX scan with sparse input. Every arm trains on the same batches and "
        "dropout masks as `train`; an epoch's time includes the data feeding. Medians of --repeats epochs "
        "(round-robin over the arms) with min and max; "
        "ratios pair by pair from the paired repeats (median with a 95% bootstrap interval, and the best epoch "
        "over the best epoch); compile time apart, peak memory, and a roofline: each framework's measured "
        "matmul rate at the model's shapes and the fraction of it each arm reaches. Before it starts, the bench "
        "measures other processes' load on the CPUs; with that load, each arm's spread and each interval's "
        "width it marks every workload and the run trustworthy or not (and says why). --items draws the cost "
        "curve over item counts instead, --devices the throughput per device count. Exit status 1 if an arm failed."
    )
    p.epilog = ("examples: poincare-parity bench --json bench.json   |   poincare-parity bench --quick   |   "
                "poincare-parity bench --device gpu --json bench-gpu.json   |   "
                "poincare-parity bench --presets ae-neumf --arms torch-eager,jax-scan --profile prof/   |   "
                "poincare-parity bench --items 3706,10000,27000 --json curve.json   |   "
                "poincare-parity bench --devices 1,2 --json devices.json")
    p.add_argument("--presets", metavar="P1,P2", default=None,
                   help="model presets to time (default: every preset of `train --list-presets`)")
    p.add_argument("--arms", metavar="A1,A2", default=None,
                   help="arms: torch-eager, torch-compile, torch-sparse, jax-jit, jax-scan, jax-sparse (the two "
                        "sparse arms train on sparse input: the first layer from the nonzeros; default: all)")
    p.add_argument("--optimizers", metavar="O1,O2", default=None, help="optimizer rows: sgd, adam (default: both)")
    p.add_argument("--no-optimizer", action="store_true", help="skip the optimizer-step rows")
    p.add_argument("--dataset", default="synthetic",
                   help="data to train on: synthetic (ML-1M-shaped, generated, no network; default), a dataset "
                        "name or a local path")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="data directory (default: $POINCARE_PARITY_DATA, else the user cache directory)")
    p.add_argument("--users", type=int, default=None,
                   help="train on the first N users only (an epoch = N users; default: all)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed epochs per arm (default: 10, from 6 on a ratio gets its 95%% interval; --items: 3 "
                        "per width; --devices: 5 per device count; --tiny: 2)")
    p.add_argument("--steps", type=int, default=None, help="steps per isolated-step sample (default: 3)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="gpu: both frameworks on CUDA (needs CUDA builds of torch and jax)")
    p.add_argument("--gpu-matmul", choices=("float32", "tf32"), default="float32",
                   help="GPU float32 matrix products: true float32 on both sides (default) or TF32 on both")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode, e.g. max-autotune-no-cudagraphs (default: torch's default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the start weights, batches and masks (default: 0)")
    p.add_argument("--quick", action="store_true",
                   help="ML-1M shapes, but an epoch of the first 1,536 users (a few minutes on 2 quiet cores)")
    p.add_argument("--tiny", action="store_true", help="a toy dataset and model, 2 repeats (seconds; for tests)")
    p.add_argument("--items", metavar="N1,N2", default=None,
                   help="the cost curve instead of the dataset's width: every preset in every arm on synthetic data "
                        "with N items for each N (e.g. 3706,10000,27000: ML-1M's width to ML-20M's), users per epoch "
                        "(6,040) and ratings per user (~165) held at ML-1M's; epoch time and memory per arm against "
                        "items. An arm that would not fit in the memory available is skipped, with the reason")
    p.add_argument("--devices", metavar="N1,N2", default=None,
                   help="throughput per device count instead of the arms: data-parallel training of every preset in "
                        "JAX and PyTorch on each count of devices (1 is always added), each in its own process; "
                        "throughput and scaling efficiency = throughput(N) / (N * throughput(1)). With --items both")
    p.add_argument("--profile", metavar="DIR", default=None,
                   help="also profile one more epoch per arm into DIR (torch op table, JAX trace) and print where "
                        "each JAX arm spent it: XLA time in matrix products vs elsewhere, the largest operations")
    _json_arg(p)


def _add_report(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Collect the JSON written by ops, optim, models, any parity suite saved from the check API "
        "({\"suite\": ..., \"records\": [...]}), train, train --sweep / --compare, data baselines, bench (and run) "
        "into "
        "report.md (the first screen: a one-line verdict, device and versions, every parity suite with its worst "
        "errors, test HR@10 / NDCG@10 of both frameworks with intervals and the published figures they "
        "correspond to, throughput ratios with the bench's trust flag; then the details), report.json and PNG "
        "plots (parity error per op and regime, optimizer error per step, training curves with |JAX - PyTorch| "
        "per epoch, HR@10 / NDCG@10 with intervals, baselines and published numbers, throughput per arm). Inputs "
        "are recognised by their content."
    )
    p.epilog = ("examples: poincare-parity report reports/quick   |   "
                "poincare-parity report ops.json models.json reports/ae-neumf/train.json bench.json --name mine")
    p.add_argument("inputs", nargs="*",
                   help="JSON files or folders (a folder: its *.json and */train.json; default: the output folder)")
    p.add_argument("--name", default=None, help="write to reports/NAME (and call the report NAME)")
    p.add_argument("--out", default=None, help="write to this folder (default: reports/NAME, or the one input folder)")
    _json_arg(p)


def _add_run(p: argparse.ArgumentParser) -> None:
    p.description = (
        "The whole job, end to end, into reports/<name>/: the dataset (downloaded on first use), every parity "
        "suite (ops, optim, models), baselines (popularity, EASE), training of the Euclidean and the hyperbolic "
        "autoencoder presets in JAX and PyTorch, the bench, and the report. Each stage runs as its own process; "
        "a stage that fails is recorded (run.json, logs/) and shown in the report, and the run goes on. "
        "Running again into the same folder runs every stage afresh (the training stages replace their own "
        "checkpoints, train --overwrite; nothing else is removed). "
        "Exit status 0 only if every stage ran and every check passed."
    )
    p.epilog = ("examples: poincare-parity run --quick   |   poincare-parity run --quick --dataset synthetic "
                "(no network)   |   poincare-parity run --only ops,models")
    p.add_argument("--quick", action="store_true",
                   help="quick parity suites, 12 training epochs, 3 EASE lambdas, a 1,536-user bench: about 10 "
                        "minutes on 2 quiet CPU cores")
    p.add_argument("--dataset", default="ml-1m-neumf",
                   help="ml-1m-neumf (default, fetched on first use), synthetic (no network), another name or a path")
    p.add_argument("--name", default=None, help="report name: reports/NAME (default: run-<dataset>[-quick])")
    p.add_argument("--out", default=None, help="output folder (default: reports/NAME)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="device of the bench stage (default: cpu)")
    p.add_argument("--seeds", default=None, metavar="S[,S...]", help="training seeds (default: the preset's, 0)")
    p.add_argument("--only", default=None, metavar="STAGE[,...]",
                   help="run only these stages (ops, optim, models, baselines, train-ae, train-hae, bench); "
                        "the data check and the report always run")
    p.add_argument("--skip", default=None, metavar="STAGE[,...]", help="skip these stages")
    p.add_argument("--stage-timeout", type=float, default=None, metavar="SECONDS",
                   help="stop a stage that runs longer than this (recorded as timeout)")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="data directory (default: $POINCARE_PARITY_DATA, else the user cache directory)")
    p.add_argument("--quiet", action="store_true", help="do not echo the stages' output (it is still in logs/)")


def _add_download(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Fetch MovieLens files from their public homes, each checked against a pinned sha256: ml-1m, "
        "ml-100k, ml-latest-small (GroupLens zips) and ml-1m-neumf (the NeuMF authors' test files at a "
        "pinned commit; the 2-column train file is derived from ml-1m.zip and checked against its hash). "
        "A download that fails its check is discarded; a file already in place with another hash is moved aside "
        "to NAME.mismatch-<first 8 hex digits of its sha256>, never deleted. Offline, it says which file to fetch "
        "by hand, where to put it and its sha256."
    )
    p.add_argument("--dataset", default=None, choices=("ml-1m", "ml-100k", "ml-latest-small", "ml-1m-neumf"),
                   help="one dataset (default: all)")
    _data_dir_arg(p)


def _protocol_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True,
                        help="ml-1m, ml-1m-neumf, ml-100k, ml-latest-small, synthetic, or a local path "
                        "(folder, GroupLens zip, ratings file)")
    parser.add_argument("--protocol", choices=("seed", "neumf"), default=None,
                        help="evaluation protocol (default: neumf for implicit data such as ml-1m-neumf, else seed)")
    parser.add_argument("--quantile", type=float, default=0.98,
                        help="seed protocol: ratings at or after this time quantile are held out (default: 0.98)")
    parser.add_argument("--validation-seed", type=int, default=0,
                        help="neumf protocol: seed of the validation carve-out (default: 0)")
    _data_dir_arg(parser)


def _add_data(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", required=True, metavar="{info,baselines}")
    info = sub.add_parser("info", help="counts, density, split sizes",
                          description="Counts, density, dropped rows and the split sizes of one dataset "
                                      "under one protocol.")
    _protocol_args(info)
    _common_args(info)
    base = sub.add_parser("baselines", help="popularity and EASE HR@10 / NDCG@10",
                          description="Item popularity and EASE on the test split, with 95% intervals; EASE's "
                          "lambda is tuned on the validation split (fitted on train minus validation), "
                          "and --ease-lambda adds one fixed lambda.")
    _protocol_args(base)
    base.add_argument("--k", type=int, default=10, help="cut-off of HR@k and NDCG@k (default: 10)")
    base.add_argument("--ease-lambda", type=float, default=None, metavar="LAMBDA",
                      help="also report EASE with this fixed lambda (e.g. 500 for ml-1m-neumf)")
    base.add_argument("--lambdas", type=float, nargs="*", default=None, metavar="LAMBDA",
                      help="grid for tuning lambda on the validation split "
                           "(default: 10 20 50 100 200 500 1000 2000 5000)")
    _common_args(base)


# name -> (module that runs it, one-line help, argument declarations)
COMMANDS = {
    "ops": ("parity.commands.ops", "Poincaré-ball ops: values and gradients, JAX vs geoopt, per regime", _add_ops),
    "optim": ("parity.commands.optim", "Riemannian SGD/Adam trajectories, JAX (optax) vs geoopt", _add_optim),
    "models": ("parity.commands.models", "autoencoders: forward, loss, gradients and training, JAX vs PyTorch",
               _add_models),
    "train": ("parity.commands.train", "train an autoencoder and evaluate HR@10 / NDCG@10", _add_train),
    "bench": ("parity.commands.bench", "throughput: PyTorch eager, compiled and sparse; JAX jit, scan and sparse",
              _add_bench),
    "report": ("parity.commands.report", "collect JSON results into a Markdown + PNG report", _add_report),
    "run": ("parity.commands.run", "the whole job: parity suites, training, baselines, bench, report", _add_run),
    "download": ("parity.commands.data", "fetch MovieLens files into $POINCARE_PARITY_DATA", _add_download),
    "data": ("parity.commands.data", "dataset information and baselines", _add_data),
}


EXIT_STATUS_EPILOG = ("exit status: 0 everything ran and every check passed; 1 a check, an arm or a stage failed; "
                      "2 a usage error (the message says what to change); 3 training diverged (NaN or Inf loss); "
                      "130 interrupted")


def build_parser() -> argparse.ArgumentParser:
    from parity import __version__

    parser = argparse.ArgumentParser(
        prog="poincare-parity",
        description="Check that a JAX port of Poincaré-ball recommender models computes what the "
        "PyTorch + geoopt reference computes, then compare HR@10 and throughput.",
        epilog=EXIT_STATUS_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"poincare-parity {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text, add_arguments) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command)
        if name != "data":  # its sub-commands get them in _add_data
            _common_args(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    from parity.errors import (
        EXIT_DIVERGED,
        EXIT_INTERRUPTED,
        EXIT_USAGE,
        TrainingDiverged,
        UsageError,
    )

    args = build_parser().parse_args(argv)
    from parity import allocator

    allocator.keep_freed_memory()  # before any framework allocates: every step reuses its buffers' pages
    name = "data " + args.data_command if args.command == "data" else args.command
    devices = getattr(args, "devices", 1)  # bench's --devices is a list: each count runs in its own process
    if isinstance(devices, int) and devices > 1:
        from parity.backend import request_host_devices

        # JAX on the CPU makes N devices only if asked before it starts: here, before any command imports it
        request_host_devices(args.devices)
    try:
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.main(args) or 0)
    except UsageError as error:
        print(f"poincare-parity {name}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as error:
        print(f"poincare-parity {name}: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        resume = "; train --resume continues from the last checkpoint" if args.command == "train" else ""
        print(f"\npoincare-parity {name}: interrupted; files already written are complete{resume}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
