"""``train.speed``: every switch against the plain step, on the toy nnU-Net-style step.

Errors are max-norm relative against the switch-off run on the same seed and batch
(:func:`speed_cases.compare`): the first step's loss and gradients, and every parameter's total
update after 3 optimizer steps. fp16 is true float16 autocast with the GradScaler on the CPU
(:func:`speed_cases.literal_precision`; training itself runs fp16 on a CPU as fp32). Measured on
the 2-core CPU VM (torch 2.13.0+cpu, 1 thread):

=====================  ======================  ======================  ======================
switch (loss / grads   fp32                    fp16 autocast           bf16 autocast
/ update)                                      + GradScaler
=====================  ======================  ======================  ======================
channels_last          0 / 1.7e-7 / 1.8e-6     0 / 0 / 0               1.7e-7 / 0 / 0
fused_optimizer sgd    0 / 0 / 2.2e-10         0 / 0 / 5.6e-8          0 / 0 / 5.6e-8
fused_optimizer adamw  0 / 0 / 2.0e-5          0 / 0 / 5.0e-6          0 / 0 / 5.0e-6
foreach (nadam)        0 / 0 / 3.7e-5          0 / 0 / 4.6e-6          0 / 0 / 9.2e-6
fused_norm_act triton  0 / 2.4e-7 / 3.2e-6     5.5e-6 / 2.0e-3         5.7e-4 / 1.2e-2
(2 steps)                                      / 2.0e-3                / 8.9e-3
uint8_labels           exact (same losses, bit for bit)
=====================  ======================  ======================  ======================

For scale, plain fp16 against plain fp32 differs by 2.5e-5 / 3.8e-3 / 3.3e-3: the fused kernels
move an fp16 step by about half of what float16 itself does.
The fused norm row runs the Triton kernels in triton's CPU interpreter (a subprocess with
``TRITON_INTERPRET=1``); its bf16 error is the kernels' bf16 output and dx against the
reference's float32 (autocast runs instance norm in float32). Tolerances leave >= 4x headroom.
CUDA graphs cannot run on a CPU: their config rules are tested here and their numerics in a
``cuda``-marked test that ``benchmarks/gpu_check.py`` runs on a lent GPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.trainables.engine.speed_cases import compare, run_steps, toy_config
from trainables.config.trial import load_trial_config, parse_trial_config
from trainables.engine.bench import build_bench_step
from trainables.engine.precision import StepTimer
from trainables.engine.runner import TrialRunner
from trainables.errors import InputError
from trainables.models.fused_norm import FusedInstanceNormAct, triton_available

REPO = Path(__file__).resolve().parents[3]
STEPS = 3
# (first loss, first gradients, updates after STEPS steps), max-norm relative
TOLERANCE = {"fp32": (1e-6, 1e-5, 2e-4), "fp16": (1e-4, 1e-2, 1e-2), "bf16": (2e-3, 5e-2, 5e-2)}


def load_base(name: str) -> dict:
    """A shipped base config as plain data, device auto."""
    path = Path(__file__).resolve().parents[3] / "search_spaces" / "base" / f"{name}.yaml"
    return load_trial_config(path).model_dump(mode="json")


def _check(errors: dict[str, float], precision: str) -> None:
    tol_loss, tol_grad, tol_update = TOLERANCE[precision]
    assert errors["loss"] <= tol_loss, errors
    assert errors["grads"] <= tol_grad, errors
    assert errors["update"] <= tol_update, errors


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One CPU thread: with several, oneDNN's reductions make two identical steps differ in the
    last bits (gradients ~2e-7 apart), which Adam then amplifies on near-zero gradients, so a
    switch would be blamed for the thread scheduler's noise (seen: 2.9e-3 with 2 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def plain() -> dict[tuple[str, str], dict]:
    """The switch-off runs, once per (precision, optimizer)."""
    return {
        (p, o): run_steps(toy_config(p, o), STEPS)
        for p in TOLERANCE
        for o in ("sgd", "adamw", "nadam")
    }


@pytest.mark.parametrize("precision", list(TOLERANCE))
def test_channels_last_matches_the_plain_step(plain: dict, precision: str) -> None:
    cfg = toy_config(precision, channels_last=True)
    bench = build_bench_step(cfg)
    conv = next(m for m in bench.train.model.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    _check(compare(run_steps(cfg, STEPS), plain[precision, "sgd"]), precision)


@pytest.mark.parametrize("precision", list(TOLERANCE))
@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "nadam"])
def test_fused_optimizer_matches_the_plain_step(
    plain: dict, precision: str, optimizer: str
) -> None:
    cfg = toy_config(precision, optimizer, fused_optimizer=True)
    defaults = build_bench_step(cfg).train.optimizer.defaults
    expected = ("foreach", True) if optimizer == "nadam" else ("fused", True)
    assert defaults[expected[0]] is expected[1]
    assert build_bench_step(toy_config(precision, optimizer)).train.optimizer.defaults.get(
        "fused"
    ) in (None, False)
    _check(compare(run_steps(cfg, STEPS), plain[precision, optimizer]), precision)


def test_fp16_runs_float16_with_the_grad_scaler_on_the_cpu(plain: dict) -> None:
    """The fp16 rows above are fp16: not fp32 under another name (what training does on a CPU)."""
    fp16, fp32 = plain["fp16", "sgd"], plain["fp32", "sgd"]
    assert (fp16["precision"], fp16["grad_scaler"]) == ("fp16", True)
    assert (fp32["precision"], fp32["grad_scaler"]) == ("fp32", False)
    rounding = compare(fp16, fp32)  # float16's own effect: far above the fp32 switches' errors
    assert 1e-3 < rounding["grads"] < 5e-2 and 0 < rounding["loss"] < 1e-3, rounding


def test_fused_norm_act_swaps_the_layers_and_keeps_the_state_dict_keys() -> None:
    on = build_bench_step(toy_config("fp32", fused_norm_act=True)).train.model
    off = build_bench_step(toy_config("fp32")).train.model
    assert sum(isinstance(m, FusedInstanceNormAct) for m in on.modules()) == 10
    assert not any(isinstance(m, FusedInstanceNormAct) for m in off.modules())
    assert on.state_dict().keys() == off.state_dict().keys()


@pytest.mark.skipif(not triton_available(), reason="triton is not installed (pip install triton)")
def test_fused_norm_act_triton_kernels_match_the_plain_step() -> None:
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    script = Path(__file__).with_name("fused_speed_case.py")
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for precision, errors in result.items():
        assert errors["fused_layers"] == 10
        _check(errors, precision)


def test_uint8_labels_train_bit_for_bit_like_int64(tiny: dict) -> None:
    tiny["train"].update(epochs=1, iterations_per_epoch=2)
    tiny["augment"] = {"enabled": True, "rotation_prob": 1.0, "flip_prob": 0.5}
    runs = {}
    for uint8 in (False, True):
        tiny["train"]["speed"] = {"uint8_labels": uint8}
        runner = TrialRunner(parse_trial_config(tiny))
        _, label, _ = runner.dataset[0]  # rotated: cut with the margin, whose labels are uint8
        assert label.dtype == torch.uint8
        runner.dataset.augment = None  # cut at the patch size: the configured dtype
        _, label, _ = runner.dataset[0]
        assert label.dtype == (torch.uint8 if uint8 else torch.int64)
        runner.dataset.augment = runner.cfg.augment
        runs[uint8] = runner.train_epoch()["train/loss"]
    assert runs[True] == runs[False]


def test_cuda_graphs_are_refused_on_cpu_and_with_compile_or_freeze(tiny: dict) -> None:
    tiny["device"] = "cpu"
    tiny["train"].update(speed={"cuda_graphs": True}, compile=True)
    with pytest.raises(InputError) as err:
        parse_trial_config(tiny)
    text = str(err.value)
    assert "train.speed.cuda_graphs: true with device cpu: CUDA graphs need a CUDA device" in text
    assert "true with train.compile true: torch.compile brings its own graphs" in text


@pytest.mark.parametrize(
    ("base", "field"), [("clstm", "model.checkpointing"), ("swin_unetr", "model.use_checkpoint")]
)
def test_cuda_graphs_are_refused_with_activation_checkpointing(base: str, field: str) -> None:
    cfg = load_base(base)
    cfg["train"]["speed"] = {"cuda_graphs": True}
    cfg["model"][field.split(".")[1]] = True
    with pytest.raises(InputError) as err:
        parse_trial_config(cfg)
    assert (
        f"train.speed.cuda_graphs: true with {field} true: activation checkpointing reads the "
        "CUDA RNG state during the step, which a graph capture forbids" in str(err.value)
    )


def test_channels_last_is_refused_for_the_clstm() -> None:
    cfg = load_base("clstm")
    cfg["train"]["speed"] = {"channels_last": True}
    with pytest.raises(InputError) as err:
        parse_trial_config(cfg)
    assert "train.speed.channels_last: true with model.kind clstm: the C-LSTM runs 2-D " in str(
        err.value
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_graphs_with_device_auto_on_a_cpu_run_eagerly_with_a_note(tiny: dict) -> None:
    tiny["train"].update(batch_size=1, speed={"cuda_graphs": True}, precision="fp32")
    notes: list[str] = []
    bench = build_bench_step(parse_trial_config(tiny), progress=notes.append)
    assert bench.train.captured is None
    assert notes == ["train.speed.cuda_graphs ignored: the device is cpu, not CUDA"]
    assert math.isfinite(float(bench.step()))


def test_epochs_report_step_time_and_data_wait_fraction(tiny: dict) -> None:
    tiny["train"].update(epochs=1, iterations_per_epoch=2)
    metrics = TrialRunner(parse_trial_config(tiny)).train_epoch()
    assert 0 < metrics["perf/step_ms"] < metrics["perf/train_s"] * 1e3
    assert 0 <= metrics["perf/data_wait_frac"] < 1
    assert metrics["perf/data_wait_frac"] == metrics["perf/data_wait_s"] / metrics["perf/train_s"]


def test_step_timer_takes_the_median_of_its_blocks() -> None:
    timer = StepTimer(torch.device("cpu"))
    assert math.isnan(timer.median_ms())
    timer.seconds = [0.003, 0.001, 0.1]
    assert timer.median_ms() == pytest.approx(3.0)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_graphs_match_the_eager_step_on_cuda(precision: str) -> None:
    """3 eager warm-up steps, the capture, then replays: 8 steps against 8 eager steps.
    Tolerances as bf16's above for every precision (cuDNN picks kernels per run)."""
    graphed_cfg = toy_config(precision, device="cuda", cuda_graphs=True)
    graphed = run_steps(graphed_cfg, 8)
    eager = run_steps(toy_config(precision, device="cuda"), 8)
    assert build_bench_step(graphed_cfg).train.captured is not None
    losses = [abs(a - b) / abs(b) for a, b in zip(graphed["losses"], eager["losses"], strict=True)]
    assert max(losses) <= 2e-3, losses
    _check(compare(graphed, eager), "bf16")


@pytest.mark.cuda
@pytest.mark.parametrize("switch", ["channels_last", "fused_norm_act", "fused_optimizer"])
def test_each_switch_matches_the_plain_step_on_cuda(switch: str) -> None:
    """The CPU numerics above, on CUDA in fp16 with the GradScaler (bf16's tolerances)."""
    on = run_steps(toy_config("fp16", device="cuda", **{switch: True}), STEPS)
    off = run_steps(toy_config("fp16", device="cuda"), STEPS)
    _check(compare(on, off), "bf16")


def test_fused_norm_act_without_an_instance_norm_block_says_it_is_ignored(tiny: dict) -> None:
    # A speed row would otherwise claim a kernel the model never ran.
    tiny["model"]["norm"] = "batch"
    tiny["train"].update(batch_size=1, speed={"fused_norm_act": True}, precision="fp32")
    notes: list[str] = []
    bench = build_bench_step(parse_trial_config(tiny), progress=notes.append)
    assert not any(isinstance(m, FusedInstanceNormAct) for m in bench.train.model.modules())
    assert notes == [
        "train.speed.fused_norm_act ignored: model.kind attention_unet with norm batch has no "
        "block it fuses (instance norm + LeakyReLU, in the U-Nets with norm: instance)"
    ]


def test_fused_norm_act_with_instance_norm_fuses_without_a_note(tiny: dict) -> None:
    tiny["train"].update(batch_size=1, speed={"fused_norm_act": True}, precision="fp32")
    notes: list[str] = []
    bench = build_bench_step(parse_trial_config(tiny), progress=notes.append)
    assert any(isinstance(m, FusedInstanceNormAct) for m in bench.train.model.modules())
    assert notes == []
