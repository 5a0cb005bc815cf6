"""Committed run records without the training machine's paths: absolute paths made relative.

    python scripts/portable_results.py [--check] [--results results]

A run records where it read its data and wrote its files (`config_resolved.yaml`, `metrics.json`,
an ensemble's `metrics.json`, `runs.csv`) as the machine that trained it saw them. Committed under
`results/`, those paths name folders nobody else has. This rewrites every absolute path in the run
records under `<results>/runs`: a path inside a results tree becomes relative to the repository
(`results/runs/...`), a data folder (`paths.data_dir`, `dataset.root`) becomes the default
`./data`; any other absolute path is reported, never guessed. Only the path strings change, in
place, so every file keeps its formatting. `--check` rewrites nothing and exits 1 when a file would
change. Nothing reads these paths back: checkpoints are found by name in the run's own folder.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

DATA_KEYS = ("data_dir", "root")   # a run's data folder: paths.data_dir, dataset.root
DATA_DEFAULT = "./data"            # conf/config.yaml's paths.data_dir without HIGHTPR_DATA_DIR
RECORDS = ("*.yaml", "*.json", "*.csv")


def _absolute(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/") and "/" in value[1:]


def _strings(node: object, key: str = "") -> Iterator[tuple[str, str]]:
    """(key, value) of every string in a parsed YAML or JSON document, the key its nearest name."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, str(k))
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v, key)
    elif isinstance(node, str):
        yield key, node


def _parsed(path: Path, text: str) -> Iterator[tuple[str, str]]:
    if path.suffix == ".csv":
        for row in csv.DictReader(io.StringIO(text)):
            yield from ((k or "", v) for k, v in row.items() if isinstance(v, str))
    elif path.suffix == ".json":
        yield from _strings(json.loads(text))
    else:
        yield from _strings(yaml.safe_load(text))


def portable(key: str, value: str) -> str | None:
    """The repository-relative form of one absolute path, or None where there is none to give."""
    parts = value.split("/")
    if "results" in parts:
        return "/".join(parts[parts.index("results"):])
    if key in DATA_KEYS:
        return DATA_DEFAULT
    return None


def rewrite(path: Path) -> tuple[str | None, list[str]]:
    """(the file's text with its absolute paths made relative, or None if that changes nothing; the
    paths that have no relative form)."""
    text = path.read_text()
    found = {value: portable(key, value) for key, value in _parsed(path, text) if _absolute(value)}
    if not found:
        return None, []
    unknown = sorted(v for v, new in found.items() if new is None)
    new_text = text
    for old in sorted((v for v, new in found.items() if new is not None), key=len, reverse=True):
        new_text = new_text.replace(old, found[old])
    return (new_text if new_text != text else None), unknown


def records(results: Path) -> list[Path]:
    runs = results / "runs"
    return sorted(p for pattern in RECORDS for p in runs.rglob(pattern) if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 if a file would change")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results root holding runs/")
    args = parser.parse_args(argv)
    if not (args.results / "runs").is_dir():
        parser.error(f"no run records under {args.results / 'runs'}: give --results <folder holding runs/>")
    changed, unknown = [], []
    for path in records(args.results):
        new_text, left = rewrite(path)
        unknown += [f"{path}: {v}" for v in left]
        if new_text is not None:
            changed.append(path)
            if not args.check:
                path.write_text(new_text)
    verb = "would make" if args.check else "made"
    for path in changed:
        print(f"{path}: {verb} its paths relative")
    for line in unknown:
        print(f"error: an absolute path with no relative form, edit it by hand: {line}", file=sys.stderr)
    if args.check and changed:
        print(f"{len(changed)} run records hold absolute paths: run python scripts/portable_results.py",
              file=sys.stderr)
    return 1 if unknown or (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
