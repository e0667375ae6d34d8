"""minidit.tools.experiments: notebook 08's runs are resumable, write their records atomically, and read back right.

Tiny CPU runs (DiT-T/4, a few steps, synthetic images) with a stand-in `evaluate`, so the tests are about
the bookkeeping, not the metrics (tests/test_metrics.py checks those); one test uses the real evaluator
on real Fashion-MNIST when it is installed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time

import pytest
import torch

from minidit.data import FashionMNIST
from minidit.tools import experiments as ex

TINY = dict(
    model="DiT-T/4",
    steps=4,
    batch_size=8,
    eval_every=2,
    curve_samples=20,
    final_samples=30,
    guided_samples=20,
    sampling_steps=2,
    sample_batch=30,
    kid_subsets=2,
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster than two shared ones
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 32, 32), generator=g, dtype=torch.uint8)
    return FashionMNIST(images, torch.arange(64) % 10, "train")


class FakeEvaluate:
    """Stands in for evaluate_samples: FID = number of samples; counts its calls; can fail on call k."""

    def __init__(self, fail_on: int | None = None):
        self.calls, self.fail_on = [], fail_on

    def __call__(self, images, labels, per_class=False, kid_subsets=100):
        assert images.shape[1:] == (1, 32, 32) and len(labels) == len(images)
        assert images.min() >= -1 and images.max() <= 1
        self.calls.append((len(images), per_class))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise KeyboardInterrupt("simulated interruption")
        metrics = {"fid": float(len(images)), "precision": 0.5, "recall": 0.25, "class_accuracy": 0.8}
        return {"samples": metrics, "real_floor": {**metrics, "fid": 1.0, "class_accuracy": 0.9}}


def run(spec, tmp_path, data, evaluate, deadline_s=600.0):
    return ex.run_one(
        spec,
        tmp_path / "results",
        tmp_path / "runs",
        data,
        time.monotonic() + deadline_s,
        device="cpu",
        evaluate=evaluate,
        log=lambda *a: None,
        progress=False,
    )


def test_a_run_writes_its_record_and_is_skipped_when_done(tmp_path, data):
    spec = ex.RunSpec(**TINY)
    evaluate = FakeEvaluate()
    record = run(spec, tmp_path, data, evaluate)
    assert record["status"] == "done" and record["trained_steps"] == 4
    on_disk = json.loads(ex.record_path(tmp_path / "results", spec).read_text())
    assert on_disk == json.loads(json.dumps(record)), "the record on disk is not the one returned"
    # curve points at steps 2 and 4 (20 samples: the step-4 one is a subset of the 30 final samples), final 30
    assert sorted((e["step"], e["num_samples"]) for e in record["evals"]) == [(2, 20), (4, 20), (4, 30)]
    assert ex.curve(record) == ([2, 4], [20.0, 20.0])
    assert ex.final_eval(record)["metrics"]["fid"] == 30.0
    assert record["history"]["step"][-1] == 4 and record["history"]["device_name"] == "cpu"
    assert not list((tmp_path / "results").glob("*.tmp")), "a temporary file was left behind"

    again = FakeEvaluate()
    assert run(spec, tmp_path, data, again)["status"] == "done"
    assert again.calls == [], "a finished run was evaluated again"


def test_an_interrupted_evaluation_resumes_without_retraining(tmp_path, data):
    spec = ex.RunSpec(**TINY)
    with pytest.raises(KeyboardInterrupt):
        run(spec, tmp_path, data, FakeEvaluate(fail_on=2))
    saved = json.loads(ex.record_path(tmp_path / "results", spec).read_text())
    assert saved["status"] == "trained" and len(saved["evals"]) == 1, "the first evaluation was not saved at once"

    evaluate = FakeEvaluate()
    record = run(spec, tmp_path, data, evaluate)
    assert record["status"] == "done"
    assert sorted(n for n, _ in evaluate.calls) == [20, 30], "only the missing evaluations should run"
    assert record["history"]["step"] == saved["history"]["step"], "training ran again"


def test_training_resumes_from_the_checkpoint(tmp_path, data):
    """Two steps trained earlier (e.g. a call that ran out of time) are continued, not redone."""
    from minidit.train import train

    spec = ex.RunSpec(**TINY)
    partial = spec.train_config(tmp_path / "runs" / spec.name, None, torch.device("cpu"), progress=False)
    first = train(dataclasses.replace(partial, steps=2), data=data)
    assert first["final_step"] == 2
    record = run(spec, tmp_path, data, FakeEvaluate())
    assert record["trained_steps"] == 4
    assert record["history"]["step"][:2] == first["step"][:2], "the resumed history lost the first steps"
    assert record["history"]["loss"][:2] == first["loss"][:2]


def test_no_budget_left_trains_nothing_and_a_lost_checkpoint_retrains(tmp_path, data):
    spec = ex.RunSpec(**TINY)
    record = run(spec, tmp_path, data, FakeEvaluate(), deadline_s=-1)
    assert record["status"] == "new" and not (tmp_path / "runs" / spec.name).exists()

    with pytest.raises(KeyboardInterrupt):
        run(spec, tmp_path, data, FakeEvaluate(fail_on=1))
    shutil.rmtree(tmp_path / "runs" / spec.name)  # a fresh GPU machine: the records came back, the checkpoints did not
    record = run(spec, tmp_path, data, FakeEvaluate())
    assert record["status"] == "done" and record["trained_steps"] == 4


def test_a_record_from_another_spec_is_refused(tmp_path, data):
    spec = ex.RunSpec(**TINY)
    path = ex.record_path(tmp_path, spec)
    path.write_text(json.dumps({"spec": {**spec.identity(), "curve_samples": 999}}))
    with pytest.raises(ValueError, match="curve_samples"):
        ex.load_record(tmp_path, spec)


def test_spec_checks_and_names():
    with pytest.raises(ValueError, match="multiple of eval_every"):
        ex.RunSpec(**{**TINY, "steps": 5})
    with pytest.raises(ValueError, match="curve_samples"):
        ex.RunSpec(**{**TINY, "curve_samples": 40})
    spec = ex.RunSpec(**TINY)
    assert spec.name == "T4_adaLN-Zero_seed0_4steps" and spec.eval_steps == [2, 4]
    assert spec.identity() == ex.RunSpec(**{**TINY, "compile": True, "sample_batch": 7}).identity()


def test_parts_share_the_s4_run_and_fit_the_budget():
    """Part C's S/4 run is Part B's adaLN-Zero seed 0 run; every part's estimate fits its per-call budget."""
    for quick in (False, True):
        specs = ex.part_specs(quick)
        b_names = {r.name for r in specs["B"].runs}
        assert len(b_names) == 8 and {r.block for r in specs["B"].runs} == set(ex.BLOCK_ORDER)
        assert len({r.identity()["steps"] for r in specs["B"].runs}) == 1, "the ablation runs differ in steps"
        assert len(b_names & {r.name for r in specs["C"].runs}) == 1
    full = ex.part_specs(False)
    for part, spec in full.items():
        # A call of the GPU machine runs at most 10 minutes; a run's checkpoints (hundreds of MB) survive
        # between calls only while the machine stays warm, so every run must fit one sitting.
        assert spec.budget_minutes < 10, f"part {part}: budget {spec.budget_minutes} min exceeds one 10-minute call"
        for run in spec.runs:
            minutes = ex.estimate_seconds(run)["total"] / 60
            assert minutes < ex.SITTING_MINUTES, f"{run.name}: estimate {minutes:.1f} min > {ex.SITTING_MINUTES}"
    assert "S2_adaLN-Zero_seed0_10000steps_lr0.0003" in ex.plan("A", results_dir="/nonexistent")
    assert "S2_adaLN-Zero_seed0_4000steps" in ex.plan("A_paper_lr", results_dir="/nonexistent")


def _fake_record(block: str, seed: int, fid: float, model: str = "DiT-S/4") -> dict:
    spec = ex.RunSpec(model, block=block, seed=seed, steps=4, eval_every=2, curve_samples=10, final_samples=10)
    metrics = {"fid": fid, "precision": 0.6, "recall": 0.4, "class_accuracy": 0.7}
    return {
        "name": spec.name,
        "spec": json.loads(json.dumps(spec.identity())),
        "status": "done",
        "gflops": ex.gflops(spec),
        "gflops_paper_setting": ex.gflops(spec, True),
        "history": {"num_params": 1000},
        "evals": [
            {
                "step": 4,
                "num_samples": 10,
                "cfg_scale": 1.0,
                "metrics": metrics,
                "floor": {**metrics, "fid": 1.0, "class_accuracy": 0.9},
            }
        ],
    }


def test_ablation_table_and_summary_follow_the_numbers():
    paper_order = {
        ("adaLN-Zero", 0): 10.0,
        ("adaLN-Zero", 1): 11.0,
        ("adaLN", 0): 20.0,
        ("adaLN", 1): 21.0,
        ("cross-attention", 0): 20.5,
        ("cross-attention", 1): 22.0,
        ("in-context", 0): 40.0,
        ("in-context", 1): 41.0,
    }
    records = {f"{b}{s}": _fake_record(b, s, fid) for (b, s), fid in paper_order.items()}
    rows = ex.ablation_rows(records)
    assert [r["block"] for r in rows] == list(ex.BLOCK_ORDER)
    assert rows[0]["fid"] == pytest.approx(10.5) and rows[0]["fid_seeds"] == [10.0, 11.0]
    assert rows[2]["gflops"] > rows[0]["gflops"], "cross-attention costs more Gflops than adaLN-Zero"
    text = ex.ablation_summary(rows, records)
    assert "reproduces at this scale" in text and "NOT" not in text
    assert "adaLN vs cross-attention: gap 0.75 FID; seed ranges overlap" in text
    assert "adaLN-Zero vs adaLN: gap 10.00 FID; seed ranges do not overlap" in text

    records["in-context0"]["evals"][0]["metrics"]["fid"] = 5.0  # in-context now wins with one seed
    records["in-context1"]["evals"][0]["metrics"]["fid"] = 6.0
    text = ex.ablation_summary(ex.ablation_rows(records), records)
    assert "does NOT reproduce" in text and text.index("in-context") < text.index("adaLN-Zero")
    table = ex.format_table(rows, [("block", "block", ""), ("fid", "FID", ".2f")])
    assert table.splitlines()[2] == "| adaLN-Zero | 10.50 |"


def test_scaling_rows_sorted_by_gflops_and_goals():
    records = {
        m: _fake_record("adaLN-Zero", 0, fid, m)
        for m, fid in (("DiT-S/2", 30.0), ("DiT-S/8", 90.0), ("DiT-B/4", 31.0), ("DiT-S/4", 50.0))
    }
    rows = ex.scaling_rows(records)
    assert [r["model"] for r in rows] == ["DiT-S/8", "DiT-S/4", "DiT-B/4", "DiT-S/2"]
    assert rows[-1]["gflops_paper_setting"] == pytest.approx(6.06, abs=0.01)  # DiT Table 4, DiT-S/2
    goals = ex.goals_summary(records["DiT-S/2"])
    assert "class accuracy 70.0% = 78%" in goals and "(goal >= 90%: not met)" in goals and "30.0x" in goals


def test_run_part_writes_its_summary(tmp_path, data, monkeypatch):
    tiny = ex.PartSpec("B", "tiny", (ex.RunSpec(**TINY), ex.RunSpec(**{**TINY, "block": "in-context"})), 5.0)
    monkeypatch.setattr(ex, "part_specs", lambda quick=False: {"B": tiny})
    summary = ex.run_part(
        "B",
        quick=True,
        results_dir=tmp_path / "res",
        runs_dir=tmp_path / "runs",
        device="cpu",
        data=data,
        evaluate=FakeEvaluate(),
        log=lambda *a: None,
        progress=False,
    )
    assert summary["complete"] and len(summary["done"]) == 2 and len(summary["sessions"]) == 1
    session = summary["sessions"][0]
    assert session["device_name"] == "cpu" and session["torch_version"] == torch.__version__
    assert json.loads((tmp_path / "res" / "part_B.json").read_text()) == summary
    assert set(ex.load_part("B", True, tmp_path / "res")) == {r.name for r in tiny.runs}
    again = ex.run_part(
        "B",
        quick=True,
        results_dir=tmp_path / "res",
        runs_dir=tmp_path / "runs",
        device="cpu",
        data=data,
        evaluate=FakeEvaluate(),
        log=lambda *a: None,
        progress=False,
    )
    assert len(again["sessions"]) == 2 and again["wall_time_s"] >= summary["wall_time_s"]
    with pytest.raises(ValueError, match="unknown part"):
        ex.run_part("D", results_dir=tmp_path)


def test_run_part_only_runs_the_named_runs_and_counts_every_finished_one(tmp_path, data, monkeypatch):
    first, second = ex.RunSpec(**TINY), ex.RunSpec(**{**TINY, "block": "in-context"})
    tiny = ex.PartSpec("B", "tiny", (first, second), 5.0)
    monkeypatch.setattr(ex, "part_specs", lambda quick=False: {"B": tiny})
    kwargs = dict(
        quick=True,
        results_dir=tmp_path / "res",
        runs_dir=tmp_path / "runs",
        device="cpu",
        data=data,
        evaluate=FakeEvaluate(),
        log=lambda *a: None,
        progress=False,
    )
    one = ex.run_part("B", only=[second.name], **kwargs)  # as a second process would
    assert one["done"] == [second.name] and not one["complete"]
    assert ex.load_record(tmp_path / "res", first) is None  # untouched
    assert one["sessions"][-1]["runs"] == [second.name] and "--only" in one["sessions"][-1]["command"]
    both = ex.run_part("B", only=[first.name], **kwargs)
    assert both["done"] == [first.name, second.name] and both["complete"] and len(both["sessions"]) == 2
    with pytest.raises(ValueError, match="has no run"):
        ex.run_part("B", only=["S4_nonsense"], **kwargs)
    with pytest.raises(ValueError, match="budget_minutes must be > 0"):
        ex.run_part("B", budget_minutes=0, **kwargs)


def test_cli_plan_pending_and_bad_part(tmp_path, capsys):
    assert ex.main(["B", "--plan"]) == 0
    assert "Part B" in capsys.readouterr().out
    assert ex.main(["B", "--pending", "--quick", "--results-dir", str(tmp_path)]) == 0  # nothing done there yet
    assert capsys.readouterr().out.split() == [r.name for r in ex.part_specs(True)["B"].runs]
    with pytest.raises(SystemExit) as err:
        ex.main(["D"])
    assert err.value.code == 2
    with pytest.raises(SystemExit) as err:
        ex.main(["B", "--only", "S4_nonsense", "--quick", "--results-dir", str(tmp_path)])
    assert err.value.code == 2 and "has no run" in capsys.readouterr().err


@pytest.mark.data
def test_evaluate_samples_on_real_images(fashion_mnist_dir):
    """Real test images score near the floor; the floor is cached per sample count."""
    from minidit.data import load_fashion_mnist, to_model_range

    test = load_fashion_mnist("test")
    images, labels = to_model_range(test.images[-40:]), test.labels[-40:]
    report = ex.evaluate_samples(images, labels, kid_subsets=2)
    assert set(report) == {"samples", "real_floor"}
    assert report["samples"]["class_accuracy"] > 0.7
    assert ex.evaluate_samples(images, labels, kid_subsets=2)["real_floor"] is report["real_floor"]


def test_elapsed_seconds_counts_overlapping_sessions_once():
    summary = {
        "sessions": [
            {"started": "2026-11-25T10:00:00+00:00", "wall_time_s": 100.0},  # alone
            {"started": "2026-11-25T11:00:00+00:00", "wall_time_s": 60.0},  # three processes at once: 11:00-11:02
            {"started": "2026-11-25T11:00:30+00:00", "wall_time_s": 90.0},
            {"started": "2026-11-25T11:01:00+00:00", "wall_time_s": 30.0},
        ],
        "wall_time_s": 280.0,
    }
    assert ex.elapsed_seconds(summary) == pytest.approx(100.0 + 120.0)
    assert ex.elapsed_seconds({"sessions": []}) == 0.0


def test_the_training_estimate_is_the_bench_records_speed():
    """No GPU rate is written in the code: a compiled DiT-S/2 step at batch 256 takes what the bench measured."""
    bench = json.loads(ex.BENCH_RECORD.read_text())
    fast = next(r for r in bench["training"] if r["variant"] == "fast" and r["model"] == "DiT-S/2")
    spec = ex.RunSpec("DiT-S/2", steps=1000, eval_every=1000, compile=True)
    expected = 1000 * 256 / fast["img_per_s"] + ex._COMPILE_S
    assert ex.estimate_seconds(spec)["train"] == pytest.approx(expected, rel=1e-3)
    assert ex.measured_rates()["device_name"] == bench["device_name"]
