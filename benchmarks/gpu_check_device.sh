#!/usr/bin/env bash
# On a lent GPU machine (no network): installs the carried wheels/ (benchmarks/gpu_check_wheels.sh
# made them), then runs benchmarks/gpu_check.py. Usage, from the device tool:
#   bash benchmarks/gpu_check_device.sh STAGES OUT_DIR [gpu_check args]   e.g. tests,train $OUT/p1
# Packages already there are kept ("Requirement already satisfied"); when the machine's Python
# environment is not writable, the missing ones go to /tmp/site on PYTHONPATH instead.
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
stages=${1:?usage: gpu_check_device.sh STAGES OUT_DIR}
out=${2:?usage: gpu_check_device.sh STAGES OUT_DIR}
pip_offline() { "$py" -m pip install -q --no-index --find-links wheels --no-cache-dir "$@"; }

if ! { pip_offline pydantic nibabel pytest monai einops \
        && pip_offline --no-deps dynamic-network-architectures; }; then
    echo "gpu_check_device: installing into the environment failed; using /tmp/site" >&2
    pip_offline --no-deps --target /tmp/site pydantic pydantic-core annotated-types \
        typing-inspection nibabel importlib-resources monai dynamic-network-architectures || exit 2
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1  # stage lines reach the tool's output as they happen
mkdir -p "$out"
# The whole log lands beside the JSON under OUT_DIR, so it comes back even if the call is
# killed at its time limit (the tool returns only the output's tail).
"$py" benchmarks/gpu_check.py --stages "$stages" --out "$out" "${@:3}" 2>&1 \
    | tee "$out/gpu_check.log"  # extra args, e.g. --dry-run
exit "${PIPESTATUS[0]}"
