"""The rule that every cell of a sweep trains and tests on the same cases: ``ablate winners``
pairs cells case by case, which means nothing when case ``c`` is a different image in each."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.checks import Problems

# Synthetic fields that change the cases themselves: another seed or modality gives other
# images under the same case ids. ``shape`` does not: the same seed gives the same heads and
# lesions sampled on another grid (a resolution ablation).
SYNTHETIC_CASE_FIELDS = ("cases", "seed", "modality")


def check_same_split(configs: dict[str, dict[str, Any]], errors: Problems) -> None:
    """Every cell must split the same cases: ``ablate winners`` compares cells case by case on
    one split and refuses results from different splits, so a sweep over the cases themselves
    (``data.root``, the synthetic cases, ``data.split``) would train but never be ranked."""
    from orchestrator.tracking import flatten

    first: tuple[str, dict[str, str]] | None = None
    for label, config in configs.items():
        inputs = flatten(_split_inputs(config))  # dotted path -> value, sections flattened
        if first is None:
            first = label, inputs
            continue
        reference = first[1]
        differ = sorted(
            p for p in reference.keys() | inputs.keys() if reference.get(p) != inputs.get(p)
        )
        if differ:
            errors.add(
                f"cells {first[0]!r} and {label!r} split different cases (they differ in "
                f"{', '.join(differ)}): `ablate winners` ranks cells on one split, with the "
                "same test cases, so vary the data in separate sweeps"
            )
            return


def _split_inputs(config: dict[str, Any]) -> dict[str, Any]:
    """What decides a trial's split, as dotted-path sections of its config: the cases (a
    dataset directory, or the synthetic cases' count, seed and modality) and the split."""
    data = config.get("data") or {}
    if data.get("root"):
        source: dict[str, Any] = {"root": str(data["root"])}
    else:
        synthetic = data.get("synthetic") or {}
        source = {"synthetic": {f: synthetic.get(f) for f in SYNTHETIC_CASE_FIELDS}}
    return {"data": {**source, "split": data.get("split")}}
