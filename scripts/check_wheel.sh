#!/usr/bin/env bash
# The wheel works without the source tree: build it, install it into a folder of its own, and run
# `hightpr-train` from another directory (--help, --cfg job, a tiny training run).
# Usage: scripts/check_wheel.sh [PYTHON]   (default: .venv/bin/python; its packages provide torch etc.)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"; [[ "$PY" = /* ]] || PY="$PWD/$PY"   # absolute, symlink kept (a venv)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$WORK/dist" .
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$WORK/site" "$WORK"/dist/hightpr-*.whl
cd "$WORK"   # nothing of the source tree is reachable from here
export PYTHONPATH="$WORK/site" PYTHONNOUSERSITE=1
TRAIN="$PY $WORK/site/bin/hightpr-train"

where=$("$PY" -c "import hightpr; print(hightpr.__file__)")
case "$where" in "$WORK/site/"*) ;; *) echo "check_wheel: hightpr imported from $where, not the wheel" >&2; exit 1;; esac

$TRAIN --help > help.txt
grep -q "reg: alm, alm_m1, alm_m2, none, rankreg" help.txt
$TRAIN --cfg job reg=rankreg reg.buffer.size=48 > job.yaml
"$PY" - <<'PYEOF'
import yaml
cfg = yaml.safe_load(open("job.yaml"))
assert cfg["reg"]["buffer"]["size"] == 48 and "buffer" not in cfg, "reg.buffer.size=48 must land under reg"
PYEOF
"$PY" -m hightpr.data.prepare tiny --data-dir "$WORK/data" > /dev/null
$TRAIN dataset=tiny trainer=cpu_quick trainer.max_epochs=1 trainer.enable_progress_bar=false model.width=8 \
  paths.data_dir="$WORK/data" paths.output_root="$WORK/outputs" name=wheel > train.log 2>&1 \
  || { tail -20 train.log >&2; exit 1; }
test -f "$WORK/outputs/wheel/runs.csv"
echo "check_wheel: the installed wheel runs --help, --cfg job and a tiny run from $WORK"
