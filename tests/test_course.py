"""minidit.course: the one switch. It patches and restores, it skips not-started work, and it really
reaches the model, the diffusion, sampling, EMA and FID (a planted bug in a student's file changes them)."""

from __future__ import annotations

import copy
import pathlib
import warnings

import pytest
import torch

from minidit import blocks as blocks_module
from minidit import course, diffusion, ema, embeddings
from minidit.evaluation import metrics
from minidit.model import DiT

ROOT = pathlib.Path(__file__).resolve().parent.parent

# For each exercise, one planted bug (text in the solution -> replacement) that the pipeline below must feel.
ROUTES = {
    "ex01": ("torch.cumprod(1.0 - betas, dim=0)", "torch.cumprod(1.0 - 0.5 * betas, dim=0)"),
    "ex02": ("return abar.sqrt() * x_start", "return abar * x_start"),
    "ex03": ("((noise - model_output_eps) ** 2)", "((noise - model_output_eps).abs())"),
    "ex04": ("torch.exp(0.5 * model_log_variance)", "torch.exp(model_log_variance)"),
    "ex05": ('"n c (h p1) (w p2) -> n (h w) (p1 p2 c)"', '"n c (h p1) (w p2) -> n (h w) (c p1 p2)"'),
    "ex06": ("np.concatenate([emb_col, emb_row], axis=1)", "np.concatenate([emb_row, emb_col], axis=1)"),
    "ex07": (
        "torch.cat([torch.cos(args), torch.sin(args)], dim=-1)",
        "torch.cat([torch.sin(args), torch.cos(args)], dim=-1)",
    ),
    "ex08": ("x = x + gate_msa.unsqueeze(1) * self.attn(", "x = x + self.attn("),
    "ex09": ("x = x + self.mlp(self.norm2(x))", "x = self.mlp(self.norm2(x))"),
    "ex10": ("k, v = rearrange(self.kv(cond)", "v, k = rearrange(self.kv(cond)"),
    "ex11": ("x = x + self.attn(modulate(", "x = self.attn(modulate("),
    "ex12": ("torch.cat([eps, cond[:, guided:]], dim=1)", "torch.cat([eps, uncond[:, guided:]], dim=1)"),
    "ex13": ("abar_padded[t_prev + 1]", "abar_padded[t_prev]"),
    "ex14": (
        "ema_params[name].mul_(decay).add_(weight, alpha=1 - decay)",
        "ema_params[name].mul_(1 - decay).add_(weight, alpha=decay)",
    ),
    "ex15": ("torch.cat([x_t, up.to(x_t.dtype)], dim=1)", "torch.cat([up.to(x_t.dtype), x_t], dim=1)"),
    "ex16": ("- 2 * trace_sqrt)", "- trace_sqrt)"),
    "ex17": ("return mean + torch.exp(0.5 * logvar) * noise", "return mean + torch.exp(logvar) * noise"),
}


BLOCKS = ("adaLN-Zero", "adaLN", "in-context", "cross-attention")
BLOCK_OF = {"ex09": "in-context", "ex10": "cross-attention", "ex11": "adaLN"}  # the others: adaLN-Zero


def _pipeline(blocks=BLOCKS) -> dict[str, torch.Tensor]:
    """Everything the exercises feed: schedule, loss, DDPM and DDIM sampling with CFG, the blocks, EMA, FID."""
    out = {}
    for block in blocks:
        g = torch.Generator().manual_seed(0)
        x0, y = torch.randn(2, 2, 8, 8, generator=g), torch.tensor([0, 2])
        torch.manual_seed(0)
        model = DiT(
            input_size=8, patch_size=4, in_channels=2, hidden_size=32, depth=1, num_heads=2, num_classes=3, block=block
        )
        with torch.no_grad():
            for p in model.parameters():  # non-zero everywhere (adaLN-Zero would otherwise output 0)
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        d = diffusion.create_diffusion("4", diffusion_steps=100)
        torch.manual_seed(1)
        out[f"{block} loss"] = d.training_losses(model.train(), x0, torch.tensor([3, 0]), {"y": y})["loss"]
        model.eval()

        def guided(x, t, y, model=model):
            return model.forward_with_cfg(x, t, y, 3.0)

        with torch.no_grad():
            noise = torch.randn(2, 2, 8, 8, generator=g)
            out[f"{block} ddpm"] = d.p_sample_loop(
                guided, (2, 2, 8, 8), noise=noise, model_kwargs={"y": y}, generator=torch.Generator().manual_seed(2)
            )
            out[f"{block} ddim"] = d.ddim_sample_loop(guided, (2, 2, 8, 8), noise=noise, model_kwargs={"y": y})
        averaged = copy.deepcopy(model)
        ema.update_ema(averaged, _shifted(model), 0.9)
        out[f"{block} ema"] = torch.cat([p.detach().flatten() for p in averaged.parameters()])
    # Super-resolution (ex15): SR3's channel concatenation and the LR tokens' positions, inside an SRDiT.
    from minidit.superres.model import create_sr_model

    g = torch.Generator().manual_seed(4)
    x, low = torch.randn(2, 1, 16, 16, generator=g), torch.rand(2, 1, 4, 4, generator=g) * 2 - 1
    for cond in ("concat", "in-context"):
        torch.manual_seed(0)
        sr_model = create_sr_model("DiT-T/4", cond, lr_size=4, input_size=16, depth=1, hidden_size=32, num_heads=2)
        with torch.no_grad():
            for p in sr_model.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            out[f"sr {cond}"] = sr_model.eval()(x, torch.tensor([3, 50]), low)
    # The latent route (ex17): the encoder's posterior draw, the autoencoder's KL term, the scaled latents.
    from minidit import latent

    torch.manual_seed(0)
    ae = latent.AutoencoderKL(latent.AEConfig(widths=(4, 4)))
    images = torch.randint(0, 256, (3, 1, 8, 8), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    data, scale = latent.encode_dataset(ae, images, torch.tensor([0, 1, 2]), seed=6)
    x = images.float() / 127.5 - 1
    with torch.no_grad():
        out["ae loss"] = latent.autoencoder_loss(x, *ae(x, torch.Generator().manual_seed(7)), kl_weight=0.5)["loss"]
    out["latents"] = torch.cat([data.images.flatten(), torch.tensor([scale])])
    feats = torch.randn(2, 50, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out["fid"] = torch.tensor(metrics.fid_from_features(feats[0], feats[1] + 0.5))
    return out


def _shifted(model):
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        for p in shifted.parameters():
            p.add_(1.0)
    return shifted


@pytest.fixture(scope="module")
def baseline():
    return _pipeline()


@pytest.mark.parametrize("ex_id", list(course.EXERCISES))
def test_a_planted_bug_reaches_the_pipeline(ex_id, baseline, tmp_path, monkeypatch):
    ex = course.get(ex_id)
    old, new = ROUTES[ex_id]
    source = (ROOT / "solutions" / f"{ex.stem}.py").read_text()
    assert source.count(old) == 1
    (tmp_path / f"{ex.stem}.py").write_text(source.replace(old, new))
    monkeypatch.setenv(course.ENV_EXERCISES, str(tmp_path))
    with course.use("student", ex_id):
        planted = _pipeline([BLOCK_OF.get(ex_id, "adaLN-Zero")])
    changed = [k for k in planted if not torch.allclose(planted[k], baseline[k], atol=1e-6, equal_nan=True)]
    assert changed, f"{ex_id}: a bug planted in the student's file did not change training, sampling, EMA or FID"
    # ... and after the block, minidit's own code is back everywhere.
    for targets in ex.targets.values():
        for target in targets:
            assert course._get(target) is course.original(target), f"{ex_id}: {target} was not restored"


def test_solutions_reproduce_minidit(baseline):
    with course.use("solutions"):
        result = _pipeline()
    for key in baseline:
        torch.testing.assert_close(result[key], baseline[key], atol=1e-4, rtol=1e-4, msg=key)


def test_use_patches_and_restores_even_after_an_error():
    original = diffusion.q_sample
    solution = course.load("ex02", "solutions").q_sample
    with pytest.raises(RuntimeError):
        with course.use("solutions", "ex02"):
            assert diffusion.q_sample is solution
            with course.use("minidit", "ex02"):  # nested: minidit's own again
                assert diffusion.q_sample is original
            assert diffusion.q_sample is solution
            raise RuntimeError("boom")
    assert diffusion.q_sample is original
    assert blocks_module.BLOCKS["adaLN-Zero"] is blocks_module.DiTBlock
    assert course.reference("ex02").q_sample is original


def test_registry_and_method_targets_are_patched():
    sol = course.load("ex08", "solutions")
    with course.use("solutions", "ex08", "ex12"):
        assert blocks_module.BLOCKS["adaLN-Zero"] is sol.DiTBlock and blocks_module.modulate is sol.modulate
        labels = embeddings.LabelEmbedder(5, 8, 0.5).token_drop(torch.arange(4), torch.tensor([1, 0, 0, 1]))
        assert labels.tolist() == [5, 1, 2, 5]
    assert blocks_module.BLOCKS["adaLN-Zero"].__module__ == "minidit.blocks"
    assert embeddings.LabelEmbedder.token_drop.__module__ == "minidit.embeddings"


def test_student_stubs_keep_minidit_code_with_a_warning(monkeypatch):
    monkeypatch.delenv(course.ENV_EXERCISES, raising=False)
    original = diffusion.q_sample
    with pytest.warns(UserWarning, match="not started"):
        with course.use("student"):
            assert diffusion.q_sample is original  # stubs are not switched in
    with course.use("student", "ex02"):  # named explicitly: switched in, and it says "not started" when called
        with pytest.raises(NotImplementedError, match="ex02"):
            diffusion.q_sample(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), torch.zeros(1, 1), torch.ones(3))


def test_started_student_work_is_switched_in(tmp_path, monkeypatch):
    (tmp_path / "ex02_q_sample.py").write_text((ROOT / "solutions" / "ex02_q_sample.py").read_text())
    monkeypatch.setenv(course.ENV_EXERCISES, str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the other exercises are missing from this folder
        with course.use("student"):
            assert diffusion.q_sample.__module__.endswith("ex02_q_sample")
            assert diffusion.ddim_step.__module__ == "minidit.diffusion"


def test_set_default_and_env(monkeypatch):
    original = diffusion.q_sample
    monkeypatch.setenv(course.ENV_IMPL, "solutions")
    try:
        assert course.apply_env() == "solutions" and course.default_source() == "solutions"
        assert diffusion.q_sample is not original
    finally:
        course.set_default("minidit")
    assert diffusion.q_sample is original and course.default_source() == "minidit"
    with pytest.raises(ValueError, match="unknown source"):
        course.set_default("teacher")
    with pytest.raises(ValueError, match="unknown exercise"):
        course.get("ex99")


def test_compare_reports(capsys, monkeypatch):
    monkeypatch.delenv(course.ENV_EXERCISES, raising=False)
    assert set(course.compare("ex05").values()) == {"not started"}
    assert "not started" in capsys.readouterr().out
    for ex_id in course.EXERCISES:
        result = course.compare(ex_id, source="solutions")
        numbers = [v for v in result.values() if isinstance(v, float)]
        assert numbers and max(numbers) < 1e-4, (ex_id, result)


def test_compare_finds_the_clone_the_student_is_in(tmp_path, monkeypatch, capsys):
    """One virtual environment, two clones: the folder is found from the working directory (a notebook
    runs in its clone's notebooks/) or the notebook's path, not from where minidit was imported."""
    clone = tmp_path / "other_clone"
    (clone / "exercises").mkdir(parents=True)
    (clone / "notebooks").mkdir()
    (clone / "exercises" / "ex02_q_sample.py").write_text((ROOT / "solutions" / "ex02_q_sample.py").read_text())
    monkeypatch.delenv(course.ENV_EXERCISES, raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.chdir(clone / "notebooks")
    assert course.repo_root() == clone and course.exercise_folder("student") == clone / "exercises"
    result = course.compare("ex02")  # the other clone's ex02 is finished; this checkout's is a stub
    assert isinstance(result["q_sample"], float) and result["q_sample"] < 1e-4, result
    assert str(clone / "exercises" / "ex02_q_sample.py") in capsys.readouterr().out
    # Jupyter names the running notebook in $JPY_SESSION_NAME; it wins over the working directory.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(clone / "notebooks" / "01_forward_noising.ipynb"))
    assert course.repo_root() == clone
    # Outside any clone: the checkout minidit was imported from.
    monkeypatch.delenv("JPY_SESSION_NAME")
    assert course.repo_root() == ROOT
