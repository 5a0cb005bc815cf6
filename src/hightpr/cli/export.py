"""`hightpr-export RUN_OR_ENSEMBLE --out model.pt2`: a finished model as one file plain PyTorch loads.

The file (`torch.export`) holds the whole model in use: the run's normalisation, every member
network, the mean of their logits, the binary score and the decision at the deployed threshold
(its rule at target TPR `--tpr`, as recorded in metrics.json, or `--threshold`, which has no
promise). It takes uint8 images [B,3,S,S] decoded as hightpr decodes them and returns
(scores, decisions). The library is `hightpr.export`; docs/deploy.md shows how to load it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hightpr.cli.predict import add_threshold_arguments
from hightpr.errors import command
from hightpr.export import METADATA, export
from hightpr.help import HelpFormatter


@command
def main(argv: list[str] | None = None) -> int:
    """Entry point of `hightpr-export`; returns 2 with one `error:` line on a problem."""
    parser = argparse.ArgumentParser(
        prog="hightpr-export",
        description="Export a finished run or ensemble, with its preprocessing and deployed threshold, "
                    "to one .pt2 file that plain PyTorch loads (torch.export.load).",
        formatter_class=HelpFormatter)
    parser.add_argument("model", type=Path, metavar="RUN_OR_ENSEMBLE",
                        help="a finished run or ensemble folder")
    parser.add_argument("--out", type=Path, required=True, help="the .pt2 file to write")
    add_threshold_arguments(parser)
    args = parser.parse_args(argv)
    done = export(args.model, args.out, args.tpr, args.threshold)
    meta = done.metadata
    what = "run" if meta["kind"] == "run" else f"ensemble of {len(meta['members'])} members, logits averaged"
    size = meta["image_size"]
    print(f"model: {args.model} ({what})")
    for line in meta["threshold_text"]:
        print(line)
    print(f"input: uint8 [B, 3, {size}, {size}] RGB images decoded as hightpr decodes them "
          f"(docs/deploy.md); output: (scores, decisions)")
    print(f"checked against hightpr's own scoring: max |score difference| {done.check_diff:.2g}")
    print(f"written: {done.path} (load: torch.export.load(path, extra_files={{'{METADATA}': ''}}).module())")
    return 0


if __name__ == "__main__":
    sys.exit(main())
