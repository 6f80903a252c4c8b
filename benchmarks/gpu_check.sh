#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py), set up on a lent machine and run once.
#   bash benchmarks/gpu_check.sh [gpu_check.py options]
# What the machine's Python lacks of the check's needs is installed offline from runs/gpu-wheels
# (made here by benchmarks/gpu_wheels.sh, carried with the repository). titok itself runs from
# src/ (PYTHONPATH), not installed. The results file is copied to $OUT when that is set.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
missing=$("$PY" - <<'PYEOF'
import importlib.util

needed = {
    "PIL": "pillow", "braceexpand": "braceexpand", "pytest": "pytest", "yaml": "pyyaml",
    "numpy": "numpy", "einops": "einops", "safetensors": "safetensors", "typer": "typer",
    "tqdm": "tqdm", "huggingface_hub": "huggingface_hub", "accelerate": "accelerate",
    "tensorboard": "tensorboard",
}
print(" ".join(pkg for module, pkg in needed.items() if importlib.util.find_spec(module) is None))
PYEOF
)
if [ -n "$missing" ]; then
  echo "gpu_check.sh: installing $missing from runs/gpu-wheels"
  "$PY" -m pip install --quiet --no-index --find-links runs/gpu-wheels $missing \
    || echo "gpu_check.sh: could not install $missing (run benchmarks/gpu_wheels.sh here and carry runs/gpu-wheels)"
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" benchmarks/gpu_check.py "$@"
rc=$?
if [ -n "${OUT:-}" ]; then
  cp benchmarks/results/gpu_*.json "$OUT"/ 2>/dev/null || true
fi
exit $rc
