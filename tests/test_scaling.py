"""python -m minidit.tools.scaling on the CPU: torchrun with 2 gloo processes, DiT-T/4, a few steps.

The N-process run and the 1-process run with the same global batch see the same batches, so in fp32
their loss curves must agree to rounding; the efficiency must be the arithmetic the JSON says it is.
The -modelscope controls are checked on hand-written records whose numbers are chosen so that every
efficiency and difference can be worked by hand.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import pytest
import torch.distributed as dist

from minidit.tools import scaling

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available"
)

RUNS = ("1xDiT-T/4", "2xDiT-T/4", "1xDiT-T/4-sameglobal")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _argv(tmp: pathlib.Path, data_dir: pathlib.Path) -> list[str]:
    return [
        "--device",
        "cpu",
        "--gpus",
        "2",
        "--models",
        "DiT-T/4",
        "--per-gpu-batch",
        "4",
        "--speed-steps",
        "4",
        "--curve-steps",
        "6",
        "--log-every",
        "2",
        "--no-compile",
        "--precision",
        "fp32",
        "--parallel-single",
        "--runs-dir",
        str(tmp / "runs"),
        "--out",
        str(tmp / "results" / "scaling.json"),
        "--data-dir",
        str(data_dir),
    ]


@pytest.fixture(scope="module")
def study(tmp_path_factory, fashion_mnist_dir):
    """One end-to-end call (three torchrun launches); -> (argv, results, seconds)."""
    tmp = tmp_path_factory.mktemp("scaling")
    argv = _argv(tmp, fashion_mnist_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # 2 processes on a 2-core CI machine
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            mp.delenv(name, raising=False)
        start = time.monotonic()
        code = scaling.main(argv)
        seconds = time.monotonic() - start
    results = json.loads((tmp / "results" / "scaling.json").read_text())
    assert code == 0, f"minidit.tools.scaling exited with {code}: {[r.get('log_tail') for r in results['runs']]}"
    return argv, results, seconds


def _runs(results: dict) -> dict[str, dict]:
    return {r["name"]: r for r in results["runs"]}


@pytest.mark.data
@pytest.mark.slow
def test_three_runs_succeed_with_the_planned_batches(study):
    _, results, _ = study
    runs = _runs(results)
    assert sorted(runs) == sorted(RUNS)
    for name, run in runs.items():
        assert run["exit_code"] == 0, f"{name} failed:\n{run.get('log_tail')}"
    assert (runs["1xDiT-T/4"]["world_size"], runs["1xDiT-T/4"]["global_batch"]) == (1, 4)
    assert (runs["2xDiT-T/4"]["world_size"], runs["2xDiT-T/4"]["global_batch"]) == (2, 8)
    assert (runs["1xDiT-T/4-sameglobal"]["world_size"], runs["1xDiT-T/4-sameglobal"]["global_batch"]) == (1, 8)
    assert runs["2xDiT-T/4"]["step"] == runs["1xDiT-T/4-sameglobal"]["step"] == [2, 4, 6]
    assert results["gpus"] == 2 and results["device"] == "cpu" and "hostname" not in json.dumps(results)


@pytest.mark.data
@pytest.mark.slow
def test_n_process_loss_curve_is_the_one_process_curve(study):
    _, results, _ = study
    runs = _runs(results)
    many, ref = runs["2xDiT-T/4"], runs["1xDiT-T/4-sameglobal"]
    for step, a, b in zip(many["step"], many["loss"], ref["loss"]):
        rel = abs(a - b) / abs(b)
        assert rel <= 1e-4, (
            f"step {step}: 2 processes give loss {a:.7f}, 1 process with the same global batch "
            f"{b:.7f} (relative difference {rel:.2e}) -- the batches are the same by construction, "
            "so in fp32 only the reduction order may differ"
        )
    cmp = results["loss_curves"]["DiT-T/4"]
    assert cmp["steps"] == [2, 4, 6]
    expected = max(abs(a - b) / abs(b) for a, b in zip(many["loss"], ref["loss"]))
    assert cmp["max_rel_diff"] == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert cmp["verdict"].startswith("Same curve") and f"{cmp['max_rel_diff']:.2e}" in cmp["verdict"]


@pytest.mark.data
@pytest.mark.slow
def test_efficiency_is_the_ratio_of_the_stored_speeds(study):
    _, results, _ = study
    runs = _runs(results)
    for run in runs.values():  # the speed is the median over the intervals after the first (compilation)
        assert run["img_per_s"] == pytest.approx(statistics.median(run["img_per_s_intervals"][1:]))
        assert run["img_per_s_per_gpu"] == pytest.approx(run["img_per_s"] / run["processes"])
    one, two = runs["1xDiT-T/4"]["img_per_s"], runs["2xDiT-T/4"]["img_per_s"]
    s = results["scaling"]["DiT-T/4"]
    assert s["scaling_efficiency"] == pytest.approx(two / (2 * one))
    assert s["speedup"] == pytest.approx(two / one)


@pytest.mark.data
@pytest.mark.slow
def test_figure_is_a_png(study):
    argv, _, _ = study
    figure = pathlib.Path(argv[argv.index("--out") + 1]).parent / "scaling.png"
    assert figure.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.data
@pytest.mark.slow
def test_a_second_call_skips_the_finished_runs(study, capsys):
    argv, first, seconds = study
    start = time.monotonic()
    assert scaling.main(argv) == 0
    again = time.monotonic() - start
    out = pathlib.Path(argv[argv.index("--out") + 1])
    results = json.loads(out.read_text())
    assert results["this_call"] == {"ran": [], "skipped_done": list(RUNS), "not_selected": []}
    assert _runs(results) == _runs(first), "a skipped run's record must stay as it was"
    assert again < seconds / 2, f"the second call took {again:.1f} s, the first {seconds:.1f} s: nothing was skipped?"
    assert "skip 2xDiT-T/4" in capsys.readouterr().out


def test_a_failed_run_is_recorded_and_the_next_runs_still_run(tmp_path, fashion_mnist_dir, monkeypatch):
    def failing(run, args):
        return [sys.executable, "-c", f"print('boom in {run.name}'); raise SystemExit(3)"]

    monkeypatch.setattr(scaling, "train_command", failing)
    argv = _argv(tmp_path, fashion_mnist_dir)
    assert scaling.main([a for a in argv if a != "--parallel-single"]) == 1
    results = json.loads((tmp_path / "results" / "scaling.json").read_text())
    runs = _runs(results)
    assert sorted(runs) == sorted(RUNS) and results["this_call"]["ran"] == list(RUNS)
    for name, run in runs.items():
        assert run["exit_code"] == 3 and f"boom in {name}" in run["log_tail"]
    assert results["scaling"] == {} and results["loss_curves"] == {}


def test_compare_curves_against_hand_computed_numbers():
    cmp = scaling.compare_curves([1, 2, 3], [1.0, 2.2, 0.5], [2, 3, 4], [2.0, 0.4, 9.0])
    assert cmp["steps"] == [2, 3]  # only the common steps count
    assert cmp["max_abs_diff"] == pytest.approx(0.2)
    assert cmp["mean_abs_diff"] == pytest.approx(0.15)
    assert cmp["max_rel_diff"] == pytest.approx(0.25)  # |0.5 - 0.4| / 0.4
    assert cmp["n_below"] == 0  # 2.2 > 2.0 and 0.5 > 0.4
    assert scaling.compare_curves([1, 2], [0.9, 2.0], [1, 2], [1.0, 1.5])["n_below"] == 1
    assert scaling.median_img_per_s([1.0, 5.0, 3.0, 4.0]) == 4.0  # the first interval (compilation) is left out
    assert scaling.median_img_per_s([7.0]) is None


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--models", "DiT-Q/2"], "unknown model"),
        (["--gpus", "1"], "--gpus >= 2"),
        (["--per-gpu-batch", "0"], "--per-gpu-batch must be >= 1"),
        (["--curve-steps", "2"], "--curve-steps 2 gives no timed interval"),
        (["--curve-models", "DiT-S/2"], "must be among --models"),
        (["--only", "2xDiT-T/4,3xDiT-T/4"], "['3xDiT-T/4'] not among the planned runs"),
        ([], "which lacks"),  # the --data-dir given (tmp_path) holds no Fashion-MNIST
    ],
)
def test_bad_flags_exit_with_status_2_and_say_why(flags, message, capsys, tmp_path):
    argv = _argv(tmp_path, data_dir=tmp_path) + flags  # argparse: the last occurrence of a flag wins
    with pytest.raises(SystemExit) as exit_info:
        scaling.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists(), "a bad flag must stop the tool before it writes anything"


def test_unknown_model_message_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        scaling.main(["--device", "cpu", "--gpus", "2", "--models", "DiT-Q/2"])
    assert exit_info.value.code == 2
    assert "DiT-S/2" in capsys.readouterr().err


@pytest.mark.parametrize(
    "visible, flags, message",
    [
        (1, ["--gpus", "2"], "asks for more GPUs than the 1"),
        (1, [], "needs --gpus >= 2 (got 1)"),
        (0, ["--device", "cuda", "--gpus", "2"], "torch sees no CUDA GPU"),
    ],
)
def test_gpu_count_is_checked(visible, flags, message, capsys, monkeypatch):
    monkeypatch.setattr(scaling.torch.cuda, "is_available", lambda: visible > 0)
    monkeypatch.setattr(scaling.torch.cuda, "device_count", lambda: visible)
    with pytest.raises(SystemExit) as exit_info:
        scaling.main(["--models", "DiT-T/4", *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- controls

CONTROLS = ("1xDiT-T/4-modelscope", "1xDiT-T/4-sameglobal-modelscope")


def _flags(**overrides) -> argparse.Namespace:
    flags = dict(log_every=2, seed=0, precision="fp32", compile=True, device="cpu", runs_dir="runs", data_dir=None)
    return argparse.Namespace(**{**flags, **overrides})


def test_one_and_n_processes_compile_the_whole_step_and_only_the_controls_the_model_alone():
    runs = scaling.plan_runs(
        ["DiT-S/2", "DiT-B/2"], ["DiT-S/2"], gpus=2, per_gpu_batch=256, speed_steps=200, curve_steps=400
    )
    table = {r.name: (r.processes, r.global_batch, r.steps, r.role, r.compile_scope) for r in runs}
    assert table == {
        "1xDiT-S/2": (1, 256, 200, "speed", "loss"),
        "1xDiT-S/2-modelscope": (1, 256, 200, "speed-modelscope", "model"),
        "2xDiT-S/2": (2, 512, 400, "curve", "loss"),
        "1xDiT-S/2-sameglobal": (1, 512, 400, "reference", "loss"),
        "1xDiT-S/2-sameglobal-modelscope": (1, 512, 400, "reference-modelscope", "model"),
        "1xDiT-B/2": (1, 256, 200, "speed", "loss"),  # not a curve model: no reference, no controls
        "2xDiT-B/2": (2, 512, 400, "curve", "loss"),
    }, "controls belong to the curve models only, with the per-GPU batch (speed) or the global one (curve)"
    without = scaling.plan_runs(["DiT-S/2"], ["DiT-S/2"], 2, 256, 200, 400, controls=False)
    assert [r.name for r in without] == ["1xDiT-S/2", "2xDiT-S/2", "1xDiT-S/2-sameglobal"]
    for run in runs:  # the scope is a setting, and the run is launched with it
        assert scaling.run_settings(run, _flags())["compile_scope"] == run.compile_scope
        command = scaling.train_command(run, _flags())
        assert command[command.index("--compile-scope") + 1] == run.compile_scope
        assert command[command.index("--global-batch-size") + 1] == str(run.global_batch)


def test_records_written_before_compile_scope_was_a_setting_still_count():
    runs = {r.name: r for r in scaling.plan_runs(["DiT-T/4"], ["DiT-T/4"], 2, 4, 4, 6)}
    old = {"model": "DiT-T/4", "log_every": 2, "seed": 0, "precision": "fp32", "compile": True, "device": "cpu"}
    one = {"settings": {**old, "processes": 1, "global_batch": 4, "steps": 4}}
    two = {"settings": {**old, "processes": 2, "global_batch": 8, "steps": 6}}
    assert scaling.settings_match(one, runs["1xDiT-T/4"], _flags()), "1 process ran with the default scope 'loss'"
    assert not scaling.settings_match(two, runs["2xDiT-T/4"], _flags()), (
        "N processes ran with 'model' (then forced under DDP), not the whole step: the run is made again"
    )
    assert scaling.settings_match(
        {"settings": {**two["settings"], "compile_scope": "loss"}}, runs["2xDiT-T/4"], _flags()
    ), "an N-process record that says it compiled the whole step counts"
    assert not scaling.settings_match(one, runs["1xDiT-T/4-modelscope"], _flags()), "'loss' is not the control's scope"
    assert not scaling.settings_match(one, runs["1xDiT-T/4"], _flags(seed=1))
    assert not scaling.settings_match(None, runs["1xDiT-T/4"], _flags())


def _record(
    name: str,
    processes: int,
    global_batch: int,
    steps: int,
    img_per_s: list[float],
    loss: list[float],
    scope: str | None = None,
    log_every: int = 2,
) -> dict:
    """A results entry as the tool writes it; scope None: an old record, without compile_scope."""
    settings = {
        "model": "DiT-T/4",
        "processes": processes,
        "global_batch": global_batch,
        "steps": steps,
        "log_every": log_every,
        "seed": 0,
        "precision": "fp32",
        "compile": True,
        "device": "cpu",
    }
    if scope is not None:
        settings["compile_scope"] = scope
    timed = sorted(img_per_s[1:])
    return {
        "name": name,
        "model": "DiT-T/4",
        "role": "?",
        "processes": processes,
        "per_gpu_batch": global_batch // processes,
        "global_batch": global_batch,
        "steps": steps,
        "settings": settings,
        "exit_code": 0,
        "wall_time_s": 1.0,
        "log": None,
        "pinned_gpu": None,
        "img_per_s": timed[len(timed) // 2],
        "img_per_s_per_gpu": timed[len(timed) // 2] / processes,
        "train_time_s": 1.0,
        "world_size": processes,
        "compiled": True,
        "precision": "fp32",
        "device_name": "cpu",
        "torch_version": "x",
        "num_params": 1,
        "step": list(range(2, 2 * len(loss) + 1, 2)),
        "loss": loss,
        "img_per_s_intervals": img_per_s,
    }


def _results(runs: list[dict], date: str, command: str) -> dict:
    return {
        "device": "cpu",
        "gpus": 2,
        "gpu_count": 0,
        "torch_version": "x",
        "cuda_version": None,
        "date": date,
        "command": command,
        "per_gpu_batch": 4,
        "this_call": {},
        "runs": runs,
    }


# Hand-picked numbers: img/s 100 on 1 process and 160 on 2 (scope loss), 70 on 1 with scope model;
# loss curves at steps 2, 4, 6 -- reference [1.0, 0.5, 0.2], control [0.99, 0.51, 0.2], 2 processes [1.0, 0.52, 0.21].
REF_LOSS, CONTROL_LOSS, MANY_LOSS = [1.0, 0.5, 0.2], [0.99, 0.51, 0.2], [1.0, 0.52, 0.21]


def _old_study() -> list[dict]:
    """The three runs without controls, made by an earlier call."""
    return [
        _record("1xDiT-T/4", 1, 4, 4, [1.0, 90.0, 100.0, 120.0], [1.0, 0.6], "loss"),
        _record("2xDiT-T/4", 2, 8, 6, [1.0, 150.0, 160.0, 170.0], MANY_LOSS, "loss"),
        _record("1xDiT-T/4-sameglobal", 1, 8, 6, [1.0, 50.0, 50.0, 50.0], REF_LOSS, "loss"),
    ]


def _check_summaries(results: dict) -> None:
    s = results["scaling"]["DiT-T/4"]
    assert s["scaling_efficiency"] == pytest.approx(160 / (2 * 100)), "against the 1-process run, same step"
    assert (s["compile_scope_1"], s["compile_scope_n"]) == ("loss", "loss")
    assert s["img_per_s_1_model_scope"] == 70 and s["model_scope_factor"] == pytest.approx(70 / 100)
    for text in ("80%", "the same compiled step on both: compile scope 'loss'", "runs 70 img/s, 70% of"):
        assert text in s["reading"], f"the reading should say {text!r}: {s['reading']}"
    cmp = results["loss_curves"]["DiT-T/4"]
    assert cmp["max_rel_diff"] == pytest.approx(0.05)  # |0.21 - 0.2| / 0.2
    assert cmp["floor"]["max_rel_diff"] == pytest.approx(0.02)  # |0.51 - 0.5| / 0.5
    assert cmp["floor"]["mean_abs_diff"] == pytest.approx(0.02 / 3)
    assert cmp["verdict"].startswith("Same order as the floor"), cmp["verdict"]
    for number in ("5.00e-02", "2.00e-02", "2.5 times the floor"):
        assert number in cmp["verdict"], f"the verdict should state {number!r}: {cmp['verdict']}"


def test_a_call_with_controls_keeps_old_records_and_runs_only_the_controls(
    tmp_path, fashion_mnist_dir, monkeypatch, capsys
):
    histories = {
        "1xDiT-T/4-modelscope": ([1.0, 60.0, 70.0, 80.0], [1.0, 0.6]),
        "1xDiT-T/4-sameglobal-modelscope": ([1.0, 40.0, 40.0, 40.0], CONTROL_LOSS),
    }
    launched, real_command = [], scaling.train_command

    def fake_train(run, args):  # "trains" by writing the history.json minidit.train would write
        launched.append(real_command(run, args))
        img_per_s, loss = histories[run.name]
        history = {
            "img_per_s": img_per_s,
            "wall_time": [1.0],
            "world_size": 1,
            "compiled": True,
            "compile_scope": run.compile_scope,
            "precision": "fp32",
            "device_name": "cpu",
            "torch_version": "x",
            "num_params": 1,
            "step": [2 * (i + 1) for i in range(len(loss))],
            "loss": loss,
        }
        path = pathlib.Path(args.runs_dir) / run.slug / "history.json"
        code = (
            f"import pathlib; p = pathlib.Path({str(path)!r}); p.parent.mkdir(parents=True, exist_ok=True); "
            f"p.write_text({json.dumps(history)!r})"
        )
        return [sys.executable, "-c", code]

    monkeypatch.setattr(scaling, "train_command", fake_train)
    out = tmp_path / "results" / "scaling.json"
    out.parent.mkdir()
    out.write_text(json.dumps(_results(_old_study(), "2026-01-01T00:00:00+00:00", "python -m minidit.tools.scaling")))
    argv = [a for a in _argv(tmp_path, fashion_mnist_dir) if a != "--no-compile"]
    assert scaling.main(argv) == 0
    results = json.loads(out.read_text())
    assert results["this_call"] == {"ran": list(CONTROLS), "skipped_done": list(RUNS), "not_selected": []}
    assert [c[c.index("--compile-scope") + 1] for c in launched] == ["model", "model"]
    runs = _runs(results)
    for old in _old_study():
        assert runs[old["name"]] == old, f"{old['name']}: an old record must stay as it was"
    assert runs["1xDiT-T/4-modelscope"]["settings"]["compile_scope"] == "model"
    assert runs["1xDiT-T/4-modelscope"]["compile_scope"] == "model", "the record says which scope the run used"
    _check_summaries(results)
    # without --compile the scope changes nothing: no controls are planned
    with pytest.raises(SystemExit) as exit_info:
        scaling.main(argv + ["--no-compile", "--only", CONTROLS[0]])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "without --compile the compile scope changes nothing" in captured.out
    assert f"['{CONTROLS[0]}'] not among the planned runs" in captured.err


@pytest.mark.parametrize(
    "n_diff, label", [(0.01, "Within the floor"), (0.05, "Same order as the floor"), (0.5, "Above the floor")]
)
def test_the_verdict_compares_the_n_process_difference_with_the_measured_floor(n_diff, label):
    floor = {"steps": [2, 4], "max_abs_diff": 0.01, "mean_abs_diff": 0.005, "max_rel_diff": 0.02, "n_below": 1}
    cmp = dict(floor, max_rel_diff=n_diff)
    verdict = scaling.curve_verdict("DiT-T/4", 2, 8, cmp, "bf16", floor)
    assert verdict.startswith(label), verdict
    assert f"{n_diff:.2e}" in verdict and "2.00e-02" in verdict, verdict
    no_floor = scaling.curve_verdict("DiT-T/4", 2, 8, cmp, "bf16")
    assert no_floor.startswith("No measured floor"), "without a floor, bf16 gets no guessed tolerance"
