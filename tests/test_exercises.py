"""Keeping the exercises honest (issue [3]): the three CI runs and the no-drift check.

1. against solutions/ every exercise test passes, with zero skips;
2. against the stubs (a fresh clone) every test reports "not started", `pytest exercises` exits 0
   and ends with the progress table;
3. each exercise's tests catch at least two planted bugs: text mutations of its solution, run in a
   temporary folder (MUTANTS below; each must apply exactly once); where a mutant names a hint, the
   first failure's first line (what the progress table shows) must give that hint;
plus: the stubs are exactly what `python -m minidit.course.grading stubs` generates from the solutions
(same names, signatures, docstrings), and the registry matches the files.

Runs 1 and 3 share one subprocess (tests/_exercise_runner.py) so torch is imported once.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import pathlib
import subprocess
import sys

import pytest

from exercises._testing import summarize_failure
from minidit import course
from minidit.course.grading import make_stub

ROOT = pathlib.Path(__file__).resolve().parent.parent
IDS = list(course.EXERCISES)

# exercise -> [(text in the solution, replacement, the bug it plants[, words of the hint it must get])]
MUTANTS: dict[str, list[tuple[str, ...]]] = {
    "ex01": [
        ("    scale = 1000 / num_timesteps\n", "    scale = 1.0\n", "linear schedule not rescaled"),
        ("torch.cumprod(1.0 - betas, dim=0)", "torch.cumprod(betas, dim=0)", "cumprod of betas"),
        ("math.pi / 2) ** 2", "math.pi / 2)", "cosine not squared"),
        ("return betas.clamp(max=max_beta)", "return betas", "cosine betas not clipped"),
    ],
    "ex02": [
        ("return abar.sqrt() * x_start", "return abar * x_start", "missing square root"),
        (
            "return abar.sqrt() * x_start + (1 - abar).sqrt() * noise",
            "return (1 - abar).sqrt() * x_start + abar.sqrt() * noise",
            "coefficients swapped",
        ),
        ("alphas_cumprod.to(t.device)[t]", "alphas_cumprod.to(t.device)[t - 1]", "off-by-one timestep", "off by one"),
    ],
    "ex03": [
        (".mean(dim=tuple(range(1, noise.ndim)))", ".sum(dim=tuple(range(1, noise.ndim)))", "sum instead of mean"),
        ("((noise - model_output_eps) ** 2)", "((noise - model_output_eps).abs())", "L1 instead of L2"),
        (
            "epsilon_mse_loss(model_output[:, : x_start.shape[1]], noise)",
            "epsilon_mse_loss(model_output, noise)",
            "variance channels in the loss",
        ),
        ("model(x_t, t, **(model_kwargs or {}))", "model(x_start, t, **(model_kwargs or {}))", "model sees x_0"),
        (
            "epsilon_mse_loss(model_output[:, : x_start.shape[1]], noise)",
            "epsilon_mse_loss(model_output[:, : x_start.shape[1]], x_start)",
            "target x_0 instead of eps",
            "the target is the noise eps",
        ),
        (
            "diffusion.q_sample(x_start, t, noise, alphas_cumprod)",
            "(lambda a: a * x_start + (1 - a) * noise)(alphas_cumprod[t].to(x_start.dtype).view(-1, 1, 1, 1))",
            "x_t without square roots",
            "both square roots are missing",
        ),
    ],
    "ex04": [
        ("model_mean + nonzero * torch.exp", "model_mean + torch.exp", "noise added at t = 0"),
        ("torch.exp(0.5 * model_log_variance)", "torch.exp(model_log_variance)", "variance used as std"),
        ("torch.log(torch.cat([variance[1:2], variance[1:]]))", "torch.log(variance)", "log variance not clipped"),
        (
            "mean = at_t(coef1) * x_start + at_t(coef2) * x_t",
            "mean = at_t(coef2) * x_start + at_t(coef1) * x_t",
            "posterior coefficients swapped",
        ),
    ],
    "ex05": [
        (
            '"n c (h p1) (w p2) -> n (h w) (p1 p2 c)"',
            '"n c (h p1) (w p2) -> n (h w) (c p1 p2)"',
            "channel-first tokens",
        ),
        ('"n (h w) (p1 p2 c) -> n c (h p1) (w p2)"', '"n (w h) (p1 p2 c) -> n c (h p1) (w p2)"', "transposed grid"),
        ("if height % p or width % p:", "if False:", "no divisibility check"),
        (
            '"n c (h p1) (w p2) -> n (h w) (p1 p2 c)"',
            '"n c (h p1) (w p2) -> n (h w) (p2 p1 c)"',
            "(p2 p1 c) order",
            "(p2 p1 c)",
        ),
        (
            'return rearrange(x, "n c (h p1) (w p2) -> n (h w) (p1 p2 c)", p1=p, p2=p)',
            "return x.reshape(x.shape[0], (height // p) * (width // p), -1)",
            "plain reshape",
            "a plain reshape",
        ),
    ],
    "ex06": [
        (
            "np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)",
            "np.concatenate([np.cos(angles), np.sin(angles)], axis=-1)",
            "sin/cos halves swapped",
        ),
        (
            "np.concatenate([emb_col, emb_row], axis=1)",
            "np.concatenate([emb_row, emb_col], axis=1)",
            "row/column swapped",
        ),
        ("/ (embed_dim / 2))", "/ embed_dim)", "wrong frequency denominator"),
    ],
    "ex07": [
        (
            "torch.cat([torch.cos(args), torch.sin(args)], dim=-1)",
            "torch.cat([torch.sin(args), torch.cos(args)], dim=-1)",
            "[sin, cos] instead of [cos, sin]",
        ),
        ("torch.exp(-math.log(max_period)", "torch.exp(-math.log(10000)", "max_period ignored"),
        ("    if dim % 2:\n", "    if False:\n", "odd dim not padded"),
    ],
    "ex08": [
        (
            "return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)",
            "return x * scale.unsqueeze(1) + shift.unsqueeze(1)",
            "modulate without 1 +",
        ),
        ("x = x + gate_msa.unsqueeze(1) * self.attn(", "x = x + self.attn(", "attention gate fixed to one"),
        (
            "x = x + gate_mlp.unsqueeze(1) * self.mlp(",
            "x = x + (1 + gate_mlp.unsqueeze(1)) * self.mlp(",
            "MLP gate initialised to one",
        ),
        (
            "        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp =",
            "        scale_msa, shift_msa, gate_msa, scale_mlp, shift_mlp, gate_mlp =",
            "chunk order",
            "scale before shift",
        ),
        (
            "        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp =",
            "        shift_msa, shift_mlp, scale_msa, scale_mlp, gate_msa, gate_mlp =",
            "interleaved chunk order",
            "interleave the branches",
        ),
        (
            "x = x + gate_msa.unsqueeze(1) * self.attn(",
            "x = x + (1 + gate_msa.unsqueeze(1)) * self.attn(",
            "only the attention gate as 1 + gate",
            "attention branch still adds its output",
        ),
        (
            "return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)",
            "return x * (1 + scale) + shift",
            "modulate without unsqueeze",
            "unsqueeze(1) them to (N, 1, D)",
        ),
    ],
    "ex09": [
        ("x = x + self.attn(self.norm1(x))", "x = self.norm1(x + self.attn(x))", "post-norm"),
        ("x = x + self.mlp(self.norm2(x))", "x = self.mlp(self.norm2(x))", "missing residual"),
        (
            "self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=True, eps=1e-6)",
            "self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)",
            "norm without affine",
        ),
    ],
    "ex10": [
        ("k, v = rearrange(self.kv(cond)", "v, k = rearrange(self.kv(cond)", "keys and values swapped"),
        (
            "out = F.scaled_dot_product_attention(q, k, v)",
            "out = F.scaled_dot_product_attention(q, k, v, scale=1.0)",
            "no 1/sqrt(d) scaling",
        ),
        (
            "self.cross_attn(self.norm2(x), c)",
            "self.cross_attn(self.norm2(x), self.norm2(x))",
            "cross-attention attends to x",
        ),
        ("        self.num_heads = num_heads\n", "        self.num_heads = 1\n", "a single head"),
        ('"n s (two h d) -> two n h s d"', '"n s (h two d) -> two n h s d"', "kv split per head", "'(h two d)'"),
        (
            'return self.proj(rearrange(out, "n h t d -> n t (h d)"))',
            'return rearrange(out, "n h t d -> n t (h d)")',
            "output projection left out",
            "the output projection proj",
        ),
    ],
    "ex11": [
        (
            "        shift_msa, scale_msa, shift_mlp, scale_mlp =",
            "        scale_msa, shift_msa, scale_mlp, shift_mlp =",
            "chunk order",
        ),
        (
            "x = x + self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))",
            "x = x + self.mlp(self.norm2(x))",
            "MLP not modulated",
        ),
        ("x = x + self.attn(modulate(", "x = self.attn(modulate(", "missing residual"),
    ],
    "ex12": [
        ("generator=generator) < dropout_prob", "generator=generator) > dropout_prob", "drops with probability 1 - p"),
        ("drop = force_drop_ids == 1", "drop = force_drop_ids == 0", "force_drop_ids inverted"),
        (
            "return eps_uncond + cfg_scale * (eps_cond - eps_uncond)",
            "return eps_cond + cfg_scale * (eps_uncond - eps_cond)",
            "guidance reversed",
        ),
        (
            "torch.cat([eps, cond[:, guided:]], dim=1)",
            "torch.cat([eps, uncond[:, guided:]], dim=1)",
            "unconditional variance",
        ),
        (
            "return torch.where(drop, torch.full_like(labels, num_classes), labels)",
            "labels[drop] = num_classes\n    return labels",
            "labels modified in place",
            "in place",
        ),
        (
            "torch.rand(labels.shape[0], device=labels.device, generator=generator)",
            "torch.rand(labels.shape[0], generator=generator)",
            "random drop drawn on the CPU",
            "the labels' device",
        ),
        (".to(y.device)  # (2N,)", "  # (2N,)", "force_drop_ids made on the CPU", "the labels' device"),
    ],
    "ex13": [
        ("abar_padded[t_prev + 1]", "abar_padded[t_prev]", "t_prev off by one"),
        (
            "(1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps",
            "(1 - abar_prev).sqrt() * eps",
            "sigma ignored in direction",
        ),
        ("(1 - abar / abar_prev)).sqrt()", "(1 - abar / abar_prev))", "sigma squared"),
        (
            "abar_prev = abar_padded[t_prev + 1]",
            "abar_prev = alphas_cumprod.to(x_t.device)[t_prev]",
            "t_prev = -1 wraps to the last step",
            "square root of a negative number",
        ),
    ],
    "ex14": [
        (
            "ema_params[name].mul_(decay).add_(weight, alpha=1 - decay)",
            "ema_params[name].mul_(1 - decay).add_(weight, alpha=decay)",
            "decay swapped",
        ),
        ("        ema_buffer.copy_(buffer)\n", "        pass\n", "buffers not copied"),
        ("@torch.no_grad()\n", "", "no torch.no_grad"),
    ],
    "ex15": [
        ("torch.cat([x_t, up.to(x_t.dtype)], dim=1)", "torch.cat([up.to(x_t.dtype), x_t], dim=1)", "channels swapped"),
        ("align_corners=False).clamp(-1, 1)", "align_corners=False)", "bicubic not clamped"),
        ("+ 0.5) * (grid_size / lr_grid_size) - 0.5", ") * (grid_size / lr_grid_size)", "LR tokens not centred"),
        (
            "np.concatenate([emb_col, emb_row], axis=1)",
            "np.concatenate([emb_row, emb_col], axis=1)",
            "row/column swapped",
        ),
    ],
    "ex16": [
        ("- 2 * trace_sqrt)", "- trace_sqrt)", "missing factor 2"),
        (
            "trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()",
            "trace_sqrt = np.sqrt(np.trace(m))",
            "square root of the trace",
        ),
        ("return float(diff @ diff", "return float(-diff @ diff", "mean term subtracted"),
    ],
    "ex17": [
        (
            "return mean + torch.exp(0.5 * logvar) * noise",
            "return mean + torch.exp(logvar) * noise",
            "variance used as std",
        ),
        (
            "return mean + torch.exp(0.5 * logvar) * noise",
            "return mean + torch.exp(0.5 * logvar).detach() * noise",
            "logvar cut from the graph",
        ),
        ("if noise is None:", "if True:", "given noise ignored"),
        (".flatten(1).sum(1)", ".flatten(1).mean(1)", "KL averaged, not summed"),
        ("- 1.0 - logvar)", "- logvar)", "KL without the - 1"),
        ("return 1.0 / latents.float().std().item()", "return latents.float().std().item()", "std, not 1 / std"),
        (
            "return 1.0 / latents.float().std().item()",
            "return 1.0 / latents.float().pow(2).mean().sqrt().item()",
            "1 / RMS, not 1 / std",
        ),
    ],
}


def _mutant_jobs(tmp: pathlib.Path) -> list[dict]:
    jobs = []
    for ex_id, mutants in MUTANTS.items():
        ex = course.get(ex_id)
        source = (ROOT / "solutions" / f"{ex.stem}.py").read_text()
        for k, (old, new, *_) in enumerate(mutants):
            assert source.count(old) == 1, f"{ex_id} mutant {k}: {old!r} must occur exactly once in the solution"
            mutated = source.replace(old, new)
            compile(mutated, f"{ex.stem}.py", "exec")  # a syntax error would be a trivially caught mutant
            folder = tmp / f"{ex_id}_m{k}"
            folder.mkdir()
            (folder / f"{ex.stem}.py").write_text(mutated)
            jobs.append({"label": f"{ex_id}_m{k}", "folder": str(folder), "ids": [ex_id], "exitfirst": True})
    return jobs


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One subprocess: the solutions run, then every mutant (with -x: the first failure is enough)."""
    tmp = tmp_path_factory.mktemp("exercise-runs")
    jobs = [{"label": "solutions", "folder": str(ROOT / "solutions"), "ids": IDS, "exitfirst": False}]
    jobs += _mutant_jobs(tmp)
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k not in (course.ENV_EXERCISES, course.ENV_IMPL)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "_exercise_runner.py"), str(tmp / "jobs.json"), str(tmp / "out.json")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp / "out.json").read_text())


def test_solutions_pass_with_zero_skips(runs):
    result = runs["solutions"]
    bad = {k: v for k, v in result["outcomes"].items() if v != "passed"}
    assert not bad and result["exit_code"] == 0, f"against solutions/: {bad}\n{result['log']}"
    for ex_id in IDS:
        ran = [k for k in result["outcomes"] if f"test_{course.get(ex_id).stem}.py" in k]
        assert len(ran) >= 4, f"{ex_id} has only {len(ran)} tests"


@pytest.mark.parametrize("ex_id", IDS)
def test_planted_bugs_are_caught(runs, ex_id):
    mutants = MUTANTS.get(ex_id, [])
    assert len(mutants) >= 2, f"{ex_id} needs at least two planted bugs in MUTANTS"
    for k, (_, _, bug, *hint) in enumerate(mutants):
        result = runs[f"{ex_id}_m{k}"]
        caught = [n for n, o in result["outcomes"].items() if o in ("failed", "error")]
        assert caught, f"{ex_id}: the planted bug '{bug}' passed every test:\n{result['log']}"
        if hint:  # the first failure (-x: the only one) names the mistake in its first line
            first_line, named = summarize_failure(result["messages"][caught[0]])
            assert named and hint[0] in first_line, (
                f"{ex_id}: the planted bug '{bug}' failed {caught[0]} without the hint '{hint[0]}' in its first "
                f"line:\n{first_line}\n\n{result['log']}"
            )


def test_fresh_clone_reports_not_started_and_exits_0(tmp_path):
    """The student's first `pytest exercises`: exit code 0, every test not started, the progress table."""
    env = {k: v for k, v in os.environ.items() if k not in (course.ENV_EXERCISES, course.ENV_IMPL)}
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "exercises", "-p", "no:cacheprovider", f"--junitxml={junit}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "exercise progress" in proc.stdout and f"0/{len(IDS)} exercises done" in proc.stdout, proc.stdout[-3000:]
    import xml.etree.ElementTree as ET

    cases = list(ET.parse(junit).getroot().iter("testcase"))
    outcomes = {
        (case.find("skipped").get("message") or "") if case.find("skipped") is not None else "ran" for case in cases
    }
    assert cases and outcomes == {"not started"}, f"stubs gave {sorted(outcomes)}\n{proc.stdout[-3000:]}"
    assert "Traceback" not in proc.stdout and "Error" not in proc.stdout.split("exercise progress")[0]


@pytest.mark.parametrize("ex_id", IDS)
def test_stub_is_generated_from_the_solution(ex_id):
    """Same names, signatures and docstrings: the stub is exactly make_stub(solution)."""
    ex = course.get(ex_id)
    solution = (ROOT / "solutions" / f"{ex.stem}.py").read_text()
    stub = (ROOT / "exercises" / f"{ex.stem}.py").read_text()
    expected = make_stub(solution, ex_id)
    if stub != expected:
        diff = "".join(
            difflib.unified_diff(expected.splitlines(True), stub.splitlines(True), "generated", "exercises/")
        )
        pytest.fail(
            f"exercises/{ex.stem}.py drifted from solutions/; regenerate it with "
            f"`python -m minidit.course.grading stubs {ex_id}`:\n{diff[:3000]}"
        )
    # Every registered name is defined, and every function body in the stub is the single raise.
    tree = ast.parse(stub)
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert set(ex.names) <= defined, f"{ex_id}: the registry names {set(ex.names) - defined}, which the file lacks"
    module = course.load(ex_id, str(ROOT / "exercises"))
    assert not any(course.is_started(getattr(module, n)) for n in ex.names), f"{ex_id}: the stub is not a stub"
    header = ast.get_docstring(tree) or ""
    assert f"pytest exercises -k {ex_id}" in header and "minutes" in header, (
        f"{ex_id}: the module docstring must say roughly how long it takes and the command that checks it"
    )


def test_registry_matches_the_files():
    stems = {course.get(i).stem for i in IDS}
    on_disk = {p.stem for p in (ROOT / "exercises").glob("ex[0-9][0-9]_*.py")}
    assert on_disk == stems, f"exercise files without a registry entry: {on_disk - stems}; missing: {stems - on_disk}"
    for ex in course.EXERCISES.values():
        assert (ROOT / "solutions" / f"{ex.stem}.py").is_file(), f"solutions/{ex.stem}.py is missing"
        assert (ROOT / "exercises" / f"test_{ex.stem}.py").is_file(), f"exercises/test_{ex.stem}.py is missing"
        assert set(ex.targets) <= set(ex.names), f"{ex.id}: targets name pieces the student does not write"
        for targets in ex.targets.values():
            for target in targets:
                assert course.original(target) is not None, f"{ex.id}: {target} does not exist in minidit"
