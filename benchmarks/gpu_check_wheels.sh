#!/usr/bin/env bash
# Downloads the wheels that benchmarks/gpu_check.py needs on a lent GPU machine, which has torch,
# triton, numpy, scipy, pyyaml (and pytest, einops) but no network. Run here, where PyPI is
# reachable, from anywhere in the checkout; the folder wheels/ (git-ignored, ~16 MB) then travels
# with the device tool's `carry: ["wheels"]`. docs/performance.md says how the calls are split.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p wheels
fetch() {
    python -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
        -d wheels "$@"
}
# pydantic (+ its deps) and nibabel for the config and data code; monai + einops for SwinUNETR;
# pytest (+ deps) for the `tests` stage in case the machine lacks it; nnU-Net's own network for
# the `nnunet` stage (installed with --no-deps there: its timm requirement is for other models).
fetch pydantic==2.13.4 annotated-types==0.7.0 typing-inspection==0.4.2 typing-extensions==4.16.0 \
    nibabel==5.4.2 importlib-resources==7.1.0 packaging==26.2 pytest==9.0.3 pluggy==1.6.0 \
    iniconfig==2.3.0 pygments==2.20.0 monai==1.6.1 einops==0.8.2 \
    dynamic-network-architectures==0.4.4
for py in 3.10 3.11 3.12 3.13; do  # the device's Python (3.12.3 when last seen) may change
    fetch --python-version "$py" pydantic-core==2.46.4
done
ls wheels
du -sh wheels
