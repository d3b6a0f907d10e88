"""The trial config: one frozen model composed of every component's config.

A trial YAML is validated once, here, at the boundary. Cross-component rules (patch size vs the
network's total stride, warm-up vs epochs, a frozen module the model has; see
:mod:`trainables.config.rules`) are checked before any data is read, so a sweep with an
impossible cell fails in ``ablate validate``, not on a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from trainables.config import Frozen, raise_problems, validate_config
from trainables.config.base import Seed, unknown_option_message
from trainables.config.postprocess import PostprocessConfig
from trainables.config.rules import trial_problems
from trainables.data.augment import AugmentConfig
from trainables.data.labels import SCHEMES
from trainables.data.preprocess import PreprocessConfig
from trainables.data.sampling import SamplingConfig
from trainables.data.splits import HoldoutSplit, SplitConfig
from trainables.data.synth_files import MIN_DIM
from trainables.data.types import MODALITIES
from trainables.errors import InputError
from trainables.losses import LossConfig
from trainables.models import ModelConfig
from trainables.optim import OptimizerConfig, ScheduleConfig

Precision = Literal["fp32", "fp16", "bf16"]


SynthDim = Annotated[int, Field(ge=MIN_DIM)]  # voxels per axis of a generated case


class SyntheticConfig(Frozen):
    """Generated cases used when a trial has no ``data.root`` (see ``ablate data synth``).

    ``modality: mri`` gives BraTS-2021-layout four-modality MRI with tumours; ``ct`` gives
    single-channel head CT (Hounsfield units) with a binary haemorrhage label.

    Attributes:
        modality: ``mri`` (t1, t1ce, t2, flair and a BraTS tumour label) or ``ct`` (one ``ct``
            channel in HU and a binary lesion label); ``data.modalities`` must name channels
            the generated cases have.
        cases: number of generated cases (>= 2), all then split by ``data.split``.
        shape: ``(X, Y, Z)`` size of every generated volume in voxels (1 mm isotropic spacing),
            each axis >= 16.
        seed: seed of the generator: case ``i`` depends only on the seed, ``i`` and the shape
            (not on ``cases``, nor on the trial's ``seed``). The cases are written once per
            (modality, seed, cases, shape) under ``<cache_dir>/synthetic/`` and reused.
    """

    modality: Literal["mri", "ct"] = "mri"
    cases: int = Field(default=12, ge=2)
    shape: tuple[SynthDim, SynthDim, SynthDim] = (64, 64, 48)
    seed: Seed = 0


class DataConfig(Frozen):
    """Which cases a trial reads and how they are preprocessed.

    Attributes:
        root: dataset directory in any supported layout; None trains on synthetic cases.
        modalities: input channels, in order (one modality vs all four is an ablation axis).
        label_scheme: source label scheme, or "auto" to take the layout's.
        split: hold-out or k-fold split of the cases, from a seed.
        preprocess: preprocessing applied once when the cache is prepared.
        cache_dir: where prepared caches live (default ``$ABLATE_CACHE`` or ~/.cache/ablate).
        synthetic: the generated cases trained on when ``root`` is None.
    """

    root: Path | None = None
    modalities: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
    label_scheme: str = "auto"
    split: SplitConfig = HoldoutSplit()
    preprocess: PreprocessConfig = PreprocessConfig()
    cache_dir: Path | None = None
    synthetic: SyntheticConfig = SyntheticConfig()

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for m in value:
            if m not in MODALITIES:
                raise ValueError(unknown_option_message(m, MODALITIES))
        if len(set(value)) != len(value) or not value:
            raise ValueError("must be a non-empty list without repeats")
        return value

    @field_validator("label_scheme")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value != "auto" and value not in SCHEMES:
            raise ValueError(unknown_option_message(value, ["auto", *SCHEMES]))
        return value


class FreezeConfig(Frozen):
    """Keep a named sub-module frozen for the first iterations (C-LSTM two-stage training).

    Attributes:
        module: dotted name of a sub-module of the built network (``get_submodule``), e.g.
            ``unet`` for the C-LSTM's inner slice U-Net; validation checks that the model has it.
        iterations: optimizer steps (counted over the whole run, not per epoch) during which the
            module gets no gradients and stays in eval mode (batch-norm statistics fixed); it
            trains normally from then on.
    """

    module: str
    iterations: int = Field(ge=1)


class InitConfig(Frozen):
    """Warm start / fine-tune: load weights from a checkpoint before training.

    Attributes:
        checkpoint: a checkpoint written by this engine (or a plain state dict).
        prefix: prepended to the loaded keys, e.g. "unet." to load a 2-D U-Net into a C-LSTM.
        strict: fail when keys do not match exactly.
    """

    checkpoint: Path
    prefix: str = ""
    strict: bool = True


class SpeedConfig(Frozen):
    """Switches that change how the training step runs, not what it computes (issue 13).

    Each is off until a GPU measurement (``benchmarks/gpu_check.py``) shows it faster; the
    tests hold each one's numerics to the plain step's (``tests/trainables/engine/test_speed.py``).

    Attributes:
        fused_norm_act: instance norm + LeakyReLU as one Triton kernel pair on CUDA
            (:mod:`trainables.models.fused_norm`) in the U-Nets with ``norm: instance`` (the
            default of ``plain_unet`` and ``attention_unet``); the same
            ops unfused on CPU. State dicts are interchangeable either way. Other models and
            norms are left unfused, with a note in the trial's log.
        channels_last: model weights and input in ``channels_last_3d`` (``channels_last`` for
            2-D models).
        cuda_graphs: capture forward, loss and backward once into a CUDA graph over static input
            buffers and replay it each step (the optimizer step, scaler and clipping stay
            eager). CUDA only: refused with ``device: cpu``, ignored with a note when ``auto``
            resolves to the CPU; not with ``train.compile`` or ``train.freeze``.
        fused_optimizer: ``fused=True`` for Adam/AdamW/SGD (torch's one-kernel step), else
            ``foreach=True`` (multi-tensor); off: torch's default implementation.
        uint8_labels: labels stay uint8 from the loader through the host-to-device copy and
            augmentation (1/8 of int64's bytes) and become int64 at the loss.
    """

    fused_norm_act: bool = False
    channels_last: bool = False
    cuda_graphs: bool = False
    fused_optimizer: bool = False
    uint8_labels: bool = False


class TrainConfig(Frozen):
    """The epoch loop.

    Attributes:
        epochs: number of epochs (one Ray Tune iteration each).
        iterations_per_epoch: optimizer steps per epoch (nnU-Net: 250).
        batch_size: patches per step.
        precision: fp32, fp16 (autocast + gradient scaler) or bf16 (autocast). On CPU, fp16 runs
            as fp32 because CPU autocast in fp16 is slower than fp32 and brings nothing.
        compile: wrap the model in ``torch.compile``.
        grad_clip: max gradient norm (nnU-Net: 12), or None.
        num_workers: CPU processes that slice patches out of the memory-mapped cache.
        gpu_augmentation: augment on the training device (True) or in the CPU workers (False);
            the FM-Net speed study's "GPU data pipeline" axis.
        freeze: optional sub-module to freeze for the first iterations.
        init: optional warm start from a checkpoint.
        speed: how the step runs (:class:`SpeedConfig`); all off by default.
    """

    epochs: int = Field(default=50, ge=1)
    iterations_per_epoch: int = Field(default=250, ge=1)
    batch_size: int = Field(default=2, ge=1)
    precision: Precision = "fp16"
    compile: bool = False
    grad_clip: float | None = Field(default=12.0, gt=0)
    num_workers: int = Field(default=2, ge=0)
    gpu_augmentation: bool = True
    freeze: FreezeConfig | None = None
    init: InitConfig | None = None
    speed: SpeedConfig = SpeedConfig()


class ValidationConfig(Frozen):
    """How and how often validation runs.

    Attributes:
        every: validate every N epochs (and always on the last).
        overlap: sliding-window overlap as a fraction of the patch (nnU-Net: 0.5).
        gaussian: weight window predictions with a Gaussian centred on the patch.
        max_cases: validate on at most this many cases (None: all validation cases).
        test_max_cases: evaluate the selected weights on at most this many test cases (None:
            all; ``--smoke`` sets 2). The test pass always predicts whole volumes.
        test_tta: mirroring test-time augmentation in the test pass (and ``ablate test``),
            nnU-Net's default at inference: probabilities averaged over the image flipped along
            every combination of spatial axes (8 passes for 3-D models, 4 for 2-D), so the
            test pass takes 8 (4) times as long. Validation, which selects the epoch, never
            mirrors. ``ablate predict --tta`` predicts the same labels.
        test_postprocess: post-processing of the test pass's and ``ablate predict``'s label
            maps (largest component, per region, or nnU-Net's rule deciding which: ``auto``;
            small enhancing tumour to necrosis).
        hd95: also compute HD95 and surface Dice (slower than Dice alone).
        tolerance_mm: surface-Dice tolerance.
        batch_size: windows per inference forward pass; None: 4 for 3-D models, 64 for 2-D
            models (slices are small, and a volume has hundreds of them).
    """

    every: int = Field(default=1, ge=1)
    overlap: float = Field(default=0.5, ge=0.0, lt=1.0)
    gaussian: bool = True
    max_cases: int | None = Field(default=None, ge=1)
    test_max_cases: int | None = Field(default=None, ge=1)
    test_tta: bool = False
    test_postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig)
    hd95: bool = True
    tolerance_mm: float = Field(default=1.0, gt=0)
    batch_size: int | None = Field(default=None, ge=1)

    def inference_batch(self, input_dims: int) -> int:
        """Windows per forward pass for a model taking ``input_dims``-D input."""
        return self.batch_size or (64 if input_dims == 2 else 4)


class TrialConfig(Frozen):
    """Everything one training run depends on; the unit a sweep varies by dotted paths.

    Attributes:
        name: the trial's label in ``ablate train``'s progress line and JSON summary (``trial``)
            and in prediction logs; ``--smoke`` appends ``-smoke``.
        seed: seeds the model's initialisation and, with the epoch number, each epoch's patch
            sampling, augmentation draws and torch RNG (so a resumed epoch repeats exactly).
            Not the split (``data.split.seed``) nor the synthetic cases
            (``data.synthetic.seed``); a study sets it through ``seeds:`` (repeat i uses seed i).
        device: ``auto``: CUDA when torch sees a GPU, else the CPU; ``cuda`` fails when no GPU
            is visible; ``cpu`` rules out ``train.speed.cuda_graphs``.
        data: which cases are read and how they are preprocessed.
        sampling: how training patches are drawn and how validation covers a case.
        augment: on-the-fly augmentation of the training patches.
        model: the network, selected by ``kind``.
        loss: the training loss, selected by ``kind``.
        optimizer: the optimizer, selected by ``kind``.
        schedule: the per-epoch learning-rate schedule, selected by ``kind`` (default constant).
        train: the epoch loop.
        validation: how and how often validation runs.
    """

    name: str = "trial"
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = DataConfig()
    sampling: SamplingConfig = SamplingConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig
    loss: LossConfig
    optimizer: OptimizerConfig
    schedule: ScheduleConfig = Field(default_factory=lambda: {"kind": "constant"})
    train: TrainConfig = TrainConfig()
    validation: ValidationConfig = ValidationConfig()

    @model_validator(mode="after")
    def _components_fit_together(self) -> TrialConfig:
        raise_problems(trial_problems(self))  # the rules live in trainables.config.rules
        return self

    def to_yaml(self) -> str:
        """The resolved config as YAML (paths as strings), loadable by :func:`load_trial_config`."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_trial_config(data: Any, source: str | Path | None = None) -> TrialConfig:
    """Validate a mapping into a :class:`TrialConfig`; errors name the source and dotted fields."""
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping of trial settings, got {type(data).__name__}", source)
    if "extends" in data:  # only study files extend a trial: given to the wrong verb
        raise InputError(
            "this is a study (search-space) file, not a trial config: run it with `ablate sweep` "
            "(or check it with `ablate validate`); `ablate train` takes a trial YAML such as "
            "search_spaces/base/tiny.yaml",
            source,
        )
    return validate_config(TrialConfig, data, source)


MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (PyYAML keeps the last
    silently, so a study's second ``model.attention:`` line would erase the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:  # `<<: *base`: its keys may be overridden here
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (it is written twice)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file; malformed YAML becomes an InputError naming the file, line and column."""
    try:
        return yaml.load(_read_text(Path(path)), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise InputError(f"malformed YAML: {problem}", where) from None


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; anything else (a folder, a device, unreadable, not UTF-8) is an
    InputError naming the file."""
    if path.is_dir():
        raise InputError("is a directory, not a YAML file", path)
    if not path.exists():
        raise InputError("file not found", path)
    if not path.is_file():
        raise InputError("is not a regular file (a device or a pipe), not a YAML file", path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}", path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = data[err.start : err.start + 1].hex()
        message = f"not UTF-8 text: byte 0x{bad} at offset {err.start}; save the file as UTF-8"
        raise InputError(message, path) from None


def load_trial_config(path: str | Path) -> TrialConfig:
    """Load and validate a trial YAML file."""
    return parse_trial_config(load_yaml(path), source=path)
