"""A rendered table's files: `<name>.md` and `.csv` for people, `<name>.json` for programs (the site).

The JSON holds the table's results as data (rows with ours, the paper's number and Δ, the claims'
verdicts as values); the markdown is one view of it, the site's page another. Every file is
written atomically, and the JSON deterministically (sorted keys, floats as Python prints them),
so the same runs give the same bytes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# The JSON's format: a reader refuses another one (an older hightpr wrote it) and says how to renew it.
FORMAT = "hightpr.table/1"
RENEW = "make tables"


def plain(value):
    """`value` as JSON holds it: numpy scalars as Python numbers, tuples as lists, NaN and ±inf as
    None, recursively; what `json.loads(json_text(x))` gives back equals `plain(x)`."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def json_text(data: dict) -> str:
    """The JSON text of a table's data: sorted keys, one space indents, UTF-8 as is."""
    return json.dumps(plain(data), indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in its folder: a reader sees the old file or
    the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_table(folder: Path, name: str, md: str, csv: str, data: dict) -> None:
    """`<name>.md`, `.csv` and `.json` under `folder`, each written atomically."""
    write_atomic(Path(folder) / f"{name}.md", md)
    write_atomic(Path(folder) / f"{name}.csv", csv)
    write_atomic(Path(folder) / f"{name}.json", json_text(data))


def read_data(path: Path) -> tuple[dict | None, str]:
    """A table's JSON and "" , or None and one line saying why not and which command renews it."""
    path = Path(path)
    if not path.is_file():
        return None, f"{path} is missing: `{RENEW}` writes it"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, f"{path} cannot be read ({e}): `{RENEW}` writes it again"
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        return None, (f"{path} is in format {found or 'unknown'}, not {FORMAT} (an older hightpr wrote it): "
                      f"`{RENEW}` writes it again")
    return data, ""


@dataclass
class TableOutput:
    """A rendered table: its markdown, its tidy CSV and its data (the JSON)."""

    md: str
    csv: pd.DataFrame
    data: dict

    def write(self, folder: Path, name: str) -> None:
        write_table(folder, name, self.md, self.csv.to_csv(index=False, lineterminator="\n"), self.data)
