"""What resampling to a target spacing costs: each case's own label sent to the target grid
and back through the path ablate uses, scored against itself on the case's grid.

Usage::

    python benchmarks/resample_roundtrip.py DATA_DIR [--spacing 1.5 1.5 1.5] [--json OUT]

Per case: the label is cropped and resampled as the cache does (``data.preprocess.resample``,
one-hot linear per class, kept at >= 0.5), turned into one-hot scores on the target grid, and
brought back as the test pass brings logits back (linear, coarse axis by nearest neighbour),
decoded, pasted into the source grid and scored with the trial metrics. A model that predicted
the resampled label exactly would score this: the ceiling a target spacing puts on the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from trainables.data.labels import INTERNAL_BINARY, INTERNAL_BRATS
from trainables.data.layouts import discover
from trainables.data.nifti import load_case
from trainables.data.preprocess import PreprocessConfig, crop_shape, preprocess
from trainables.data.restore import restore_geometry
from trainables.data.types import CaseRecord
from trainables.engine.resize import to_source_grid
from trainables.metrics import case_metrics


def roundtrip(record: CaseRecord, spacing: tuple[float, float, float]) -> dict[str, float]:
    """Metrics of one case's label after the round trip (``case_metrics`` keys) and the seconds
    its preprocessing took."""
    raw = load_case(record)
    assert raw.label is not None, f"{record.case_id} has no label"
    resample = {"kind": "target_spacing", "spacing": spacing}
    cfg = PreprocessConfig(normalization={"kind": "none"}, resample=resample)
    tic = time.perf_counter()
    case = preprocess(raw, cfg)
    seconds = time.perf_counter() - tic
    classes = int(max(raw.label.max(), case.label.max())) + 1
    scores = torch.from_numpy(np.eye(classes, dtype=np.float32)[case.label]).movedim(-1, 0)
    back = to_source_grid(crop_shape(case.bbox, raw.label.shape), case.spacing, case.source_spacing)
    labels = (back(scores) if back else scores).argmax(0).numpy().astype(np.uint8)
    full = restore_geometry(labels, raw.label.shape, case.bbox)
    scheme = INTERNAL_BINARY if classes <= 2 else INTERNAL_BRATS
    return case_metrics(full, raw.label, raw.spacing, scheme, 1.0) | {"prepare_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.5, 1.5))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for record in discover(args.data).cases:
        if record.label is None:
            continue
        metrics = roundtrip(record, tuple(args.spacing))
        rows.append({"case": record.case_id, **metrics})
        shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("dice", "prep"))}
        print(record.case_id, shown, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"spacing": args.spacing, "cases": rows}, indent=1))


if __name__ == "__main__":
    main()
