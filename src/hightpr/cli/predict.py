"""`hightpr-predict RUN_OR_ENSEMBLE INPUT... --out predictions.csv`: a finished model applied to images.

One row per image (path, score, decision) at the run's deployed threshold: its own rule
(`evaluation.threshold_rule`) at target TPR `--tpr`, as recorded in its metrics.json; the rule,
target and delta are printed and written as the file's `#` lines. `--threshold` overrides it, and
says that the promise is gone. The library is `hightpr.deployed` and `hightpr.predict`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from hightpr.deployed import load_deployed
from hightpr.errors import HightprError, command
from hightpr.help import HelpFormatter
from hightpr.predict import header, input_files, predict_scores, write_predictions


def device_of(name: str) -> torch.device:
    """`auto`: the GPU when there is one, else the CPU; or a torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise HightprError(f"--device {name}: not a device (auto, cpu, cuda, cuda:1)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HightprError(f"--device {name}: no GPU here; use --device cpu (or auto)")
    return device


def add_threshold_arguments(parser: argparse.ArgumentParser) -> None:
    """`--tpr` and `--threshold`: which deployed threshold, shared by hightpr-predict and hightpr-export."""
    parser.add_argument("--tpr", type=float, default=0.95,
                        help="target TPR of the deployed threshold (one of the run's "
                             "evaluation.operating_tprs)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="decide at this score instead (the rule's promise no longer holds)")


@command
def main(argv: list[str] | None = None) -> int:
    """Entry point of `hightpr-predict`; returns 2 with one `error:` line on a problem."""
    parser = argparse.ArgumentParser(
        prog="hightpr-predict",
        description="Score images with a finished run or ensemble and decide at its deployed threshold.",
        formatter_class=HelpFormatter)
    parser.add_argument("model", type=Path, metavar="RUN_OR_ENSEMBLE",
                        help="a finished run or ensemble folder")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT",
                        help="image files, folders (searched recursively) or CSVs with a path column")
    parser.add_argument("--out", type=Path, required=True, help="the predictions CSV to write")
    add_threshold_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=64, help="images scored at once")
    parser.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:N")
    args = parser.parse_args(argv)
    device = device_of(args.device)
    deployed = load_deployed(args.model, args.tpr, args.threshold)
    files = input_files(args.inputs)
    scores = predict_scores(deployed, files, args.batch_size, device)
    write_predictions(args.out, files, scores, deployed)
    for line in header(deployed):
        print(line)
    print(f"{len(files)} images, {int((scores >= deployed.threshold.value).sum())} positive: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
