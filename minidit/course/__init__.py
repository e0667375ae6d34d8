"""The one switch that decides whose implementation of an exercised piece runs.

Three sources of code: "minidit" (the package itself), "solutions" (the reference answers in
solutions/) and "student" (exercises/, or the folder named by $MINIDIT_EXERCISES). EXERCISES below
is the registry: for each piece, its target -- the one name through which minidit reaches it, a
function of its module ("minidit.diffusion:q_sample"), a method of its class, or an entry of
`blocks.BLOCKS`. `use` puts the chosen object there and the original back afterwards, so the model,
the diffusion, training and sampling run your code (no module copies a piece by name:
tests/test_layering.py checks it):

    from minidit import course
    course.compare("ex02")                        # "not started", or max |yours - minidit|
    with course.use("student", "ex02", "ex08"):   # your q_sample and your DiTBlock ...
        history = train(cfg)                      # ... train and sample here
    course.set_default("student")                 # every exercise you have started, from now on
    MINIDIT_IMPL=student python -m minidit.train  # the same from the shell (see apply_env)

Adding an exercise is three files and one line:
    exercises/exNN_topic.py       the stub: real signatures, shape docstrings, `raise NotImplementedError("exNN: name")`
    solutions/exNN_topic.py       the same file, filled in (tests/test_exercises.py checks they agree)
    exercises/test_exNN_topic.py  its tests: oracles first, then agreement with minidit
    EXERCISES below               Exercise("exNN", "exNN_topic", "title", names, targets)
plus two planted bugs for it in MUTANTS in tests/test_exercises.py.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import pathlib
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

SOURCES = ("minidit", "solutions", "student")
ENV_IMPL = "MINIDIT_IMPL"  # which source runs by default: minidit | solutions | student
ENV_EXERCISES = "MINIDIT_EXERCISES"  # the student's folder: "exercises" (default), "solutions" or a path


@dataclasses.dataclass(frozen=True)
class Exercise:
    """One exercise: where its files are, what the student writes and which minidit names it replaces."""

    id: str  # "ex02"
    stem: str  # file stem: exercises/ex02_q_sample.py, solutions/ex02_q_sample.py, exercises/test_ex02_q_sample.py
    title: str
    names: tuple[str, ...]  # the functions/classes the student writes
    # name -> where it goes in minidit: "module:attr", "module:Class.attr" or "module:DICT[key]"
    targets: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # name -> function(the student's object) -> what to install, when the shapes of the two differ
    adapters: dict[str, Callable[[Any], Any]] = dataclasses.field(default_factory=dict)
    notebook: str = ""
    points: float = 10.0
    optional: bool = False  # optional exercises are bonus points in grading


def _ex(id_, stem, title, names, targets=None, **kw) -> Exercise:
    targets = {k: (v,) if isinstance(v, str) else tuple(v) for k, v in (targets or {}).items()}
    return Exercise(id_, stem, title, tuple(names), targets, **kw)


def _label_embedder_method(token_drop: Callable) -> Callable:
    """The exercise's token_drop(labels, num_classes, dropout_prob, ...) as LabelEmbedder.token_drop."""

    def method(self, labels, force_drop_ids=None, generator=None):
        return token_drop(labels, self.num_classes, self.dropout_prob, force_drop_ids, generator)

    method.__wrapped__ = token_drop
    return method


_D, _E, _B, _M = "minidit.diffusion", "minidit.embeddings", "minidit.blocks", "minidit.model"

EXERCISES: dict[str, Exercise] = {
    e.id: e
    for e in [
        _ex(
            "ex01",
            "ex01_schedule",
            "noise schedules and alphas_cumprod",
            ["linear_beta_schedule", "cosine_beta_schedule", "compute_alphas_cumprod"],
            {n: f"{_D}:{n}" for n in ["linear_beta_schedule", "cosine_beta_schedule", "compute_alphas_cumprod"]},
            notebook="01_forward_noising",
        ),
        _ex(
            "ex02",
            "ex02_q_sample",
            "q_sample: noising in one jump",
            ["q_sample"],
            {"q_sample": f"{_D}:q_sample"},
            notebook="01_forward_noising",
        ),
        _ex(
            "ex03",
            "ex03_eps_loss",
            "the epsilon-MSE loss (L_simple)",
            ["epsilon_mse_loss", "simple_training_loss"],
            {"epsilon_mse_loss": f"{_D}:epsilon_mse_loss"},
            notebook="02_loss_and_reverse_process",
        ),
        _ex(
            "ex04",
            "ex04_posterior",
            "posterior mean/variance and one DDPM step",
            ["q_posterior_mean_variance", "ddpm_step"],
            {"q_posterior_mean_variance": f"{_D}:q_posterior_mean_variance", "ddpm_step": f"{_D}:ddpm_step"},
            notebook="02_loss_and_reverse_process",
        ),
        _ex(
            "ex05",
            "ex05_patchify",
            "patchify and unpatchify",
            ["patchify", "unpatchify"],
            {"patchify": f"{_E}:patchify", "unpatchify": f"{_E}:unpatchify"},
            notebook="03_patchify_and_embeddings",
        ),
        _ex(
            "ex06",
            "ex06_pos_embed",
            "2D sin-cos position embedding",
            ["get_1d_sincos_pos_embed_from_grid", "get_2d_sincos_pos_embed"],
            {
                "get_1d_sincos_pos_embed_from_grid": f"{_E}:get_1d_sincos_pos_embed_from_grid",
                "get_2d_sincos_pos_embed": f"{_E}:get_2d_sincos_pos_embed",
            },
            notebook="03_patchify_and_embeddings",
        ),
        _ex(
            "ex07",
            "ex07_timestep_embedding",
            "sinusoidal timestep embedding",
            ["timestep_embedding"],
            {"timestep_embedding": f"{_E}:timestep_embedding"},
            notebook="03_patchify_and_embeddings",
        ),
        _ex(
            "ex08",
            "ex08_adaln_zero",
            "modulate and the adaLN-Zero block",
            ["modulate", "DiTBlock"],
            {"modulate": f"{_B}:modulate", "DiTBlock": (f"{_B}:DiTBlock", f"{_B}:BLOCKS[adaLN-Zero]")},
            notebook="04_conditioning_blocks",
        ),
        _ex(
            "ex09",
            "ex09_in_context",
            "the in-context conditioning block",
            ["InContextBlock"],
            {"InContextBlock": (f"{_B}:InContextBlock", f"{_B}:BLOCKS[in-context]")},
            notebook="04_conditioning_blocks",
        ),
        _ex(
            "ex10",
            "ex10_cross_attention",
            "cross-attention and the cross-attention block",
            ["CrossAttention", "CrossAttentionBlock"],
            {
                "CrossAttention": f"{_B}:CrossAttention",
                "CrossAttentionBlock": (f"{_B}:CrossAttentionBlock", f"{_B}:BLOCKS[cross-attention]"),
            },
            notebook="04_conditioning_blocks",
        ),
        _ex(
            "ex11",
            "ex11_adaln",
            "the adaLN block",
            ["AdaLNBlock"],
            {"AdaLNBlock": (f"{_B}:AdaLNBlock", f"{_B}:BLOCKS[adaLN]")},
            notebook="04_conditioning_blocks",
        ),
        _ex(
            "ex12",
            "ex12_cfg",
            "label dropout and classifier-free guidance",
            ["token_drop", "cfg_combine", "forward_with_cfg"],
            {
                "token_drop": f"{_E}:LabelEmbedder.token_drop",
                "cfg_combine": f"{_M}:cfg_combine",
                "forward_with_cfg": f"{_M}:DiT.forward_with_cfg",
            },
            adapters={"token_drop": _label_embedder_method},
            notebook="06_classifier_free_guidance",
        ),
        _ex(
            "ex13",
            "ex13_ddim",
            "one DDIM step",
            ["ddim_step"],
            {"ddim_step": f"{_D}:ddim_step"},
            notebook="02_loss_and_reverse_process",
        ),
        _ex(
            "ex14",
            "ex14_ema",
            "the EMA update",
            ["update_ema"],
            {"update_ema": "minidit.ema:update_ema"},
            notebook="08_train_dit_and_ablation",
        ),
        _ex(
            "ex15",
            "ex15_image_conditioning",
            "conditioning on an image (SR3 concat, aligned LR tokens)",
            ["concat_low_res", "low_res_pos_embed"],
            {n: f"minidit.superres.model:{n}" for n in ["concat_low_res", "low_res_pos_embed"]},
            notebook="09_super_resolution",
        ),
        _ex(
            "ex16",
            "ex16_frechet",
            "Frechet distance between two Gaussians",
            ["frechet_distance"],
            {"frechet_distance": "minidit.evaluation.metrics:frechet_distance"},
            notebook="07_evaluation",
            points=5.0,
            optional=True,
        ),
        _ex(
            "ex17",
            "ex17_kl_latent",
            "the reparameterised KL latent and the latent scale factor",
            ["sample_posterior", "kl_divergence", "latent_scale_factor"],
            {n: f"minidit.latent:{n}" for n in ["sample_posterior", "kl_divergence", "latent_scale_factor"]},
            notebook="10_latent_diffusion",
        ),
    ]
}


# ----------------------------------------------------------------------------- folders and loading


def _is_checkout(folder: pathlib.Path) -> bool:
    return any((folder / "exercises").glob("ex[0-9][0-9]_*.py"))


def repo_root() -> pathlib.Path:
    """The course checkout the student works in, the folder that holds exercises/.

    Looked for from where the student is first: the running notebook's folder (Jupyter sets
    $JPY_SESSION_NAME to the notebook's path) and the working directory, each with its parents; only
    then the checkout minidit was imported from. So two clones sharing one virtual environment each
    see their own exercises/.
    """
    starts = [pathlib.Path.cwd()]
    if os.environ.get("JPY_SESSION_NAME"):
        starts.insert(0, (pathlib.Path.cwd() / os.environ["JPY_SESSION_NAME"]).parent)
    for start in starts:
        for folder in [start, *start.parents]:
            if _is_checkout(folder):
                return folder
    return pathlib.Path(__file__).resolve().parents[2]


def get(exercise_id: str) -> Exercise:
    """The Exercise for an id ("ex02") or a stem ("ex02_q_sample")."""
    key = str(exercise_id)[:4]
    if key not in EXERCISES:
        raise ValueError(f"unknown exercise {exercise_id!r}; expected one of {', '.join(EXERCISES)}")
    return EXERCISES[key]


def exercise_folder(source: str = "student") -> pathlib.Path:
    """The folder a source's files live in: "student" (= $MINIDIT_EXERCISES or exercises/), "solutions", or a path."""
    if source == "student":
        source = os.environ.get(ENV_EXERCISES, "") or "exercises"
    if source in ("exercises", "solutions"):
        return repo_root() / source
    if source == "minidit":
        raise ValueError("source 'minidit' has no exercise folder; it is the package itself")
    folder = pathlib.Path(source).expanduser().resolve()
    if (folder / "exercises").is_dir() and not any(folder.glob("ex[0-9][0-9]_*.py")):
        folder = folder / "exercises"  # a student's checkout rather than its exercises/ folder
    return folder


_LOADED: dict[tuple[str, str], types.ModuleType] = {}
_REMOTE_LOADER: Callable[[str], Any] | None = None


def set_remote_loader(loader: Callable[[str], Any] | None) -> None:
    """Graded mode (minidit.course.sandbox): load(id, "student") returns loader(id), a module whose calls run in a
    confined child process; the student's file is never imported here."""
    global _REMOTE_LOADER
    _REMOTE_LOADER = loader
    _LOADED.clear()


def graded() -> bool:
    """True inside a grading run (the student's code runs in a child process, see minidit.course.sandbox)."""
    return _REMOTE_LOADER is not None


def load(exercise_id: str, source: str = "student") -> types.ModuleType:
    """Import an exercise file of a source as a fresh module (re-imported whenever the file changes)."""
    ex = get(exercise_id)
    if source == "student" and _REMOTE_LOADER is not None:
        return _REMOTE_LOADER(ex.id)
    path = exercise_folder(source) / f"{ex.stem}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{ex.id}: no file {path}")
    digest = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
    key = (str(path), digest)
    if key not in _LOADED:
        # A unique module name per file version, registered in sys.modules (dataclasses and pickle need it).
        name = f"_minidit_ex_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}_{digest}.{ex.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        _LOADED[key] = module
    return _LOADED[key]


def _is_stub(func: Callable) -> bool:
    """True when a function's body is only a docstring and `raise NotImplementedError(...)`."""
    try:
        tree = ast.parse(inspect.cleandoc("\n" + inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return False
    body = tree.body[0].body if tree.body and hasattr(tree.body[0], "body") else []
    body = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    return (
        len(body) == 1
        and isinstance(body[0], ast.Raise)
        and body[0].exc is not None
        and "NotImplementedError" in ast.unparse(body[0].exc)
    )


def is_started(obj: Any) -> bool:
    """A function is started when its body is more than the stub's raise; a class when all its own methods are."""
    if inspect.isclass(obj):
        return not any(_is_stub(f) for f in vars(obj).values() if inspect.isfunction(f))
    return not _is_stub(obj)


# ----------------------------------------------------------------------------- the student release

RELEASE_ATTR = "__minidit_release__"  # set on minidit's pieces that a release delegates to exercises/


def _student_piece(exercise_id: str, name: str) -> Any:
    """The student's object for a piece (exercises/, or $MINIDIT_EXERCISES), adapted to minidit's signature."""
    ex = get(exercise_id)
    obj = getattr(load(ex.id, "student"), name)
    adapt = ex.adapters.get(name)
    return adapt(obj) if adapt else obj


def _call_student(ex: Exercise, name: str, args: tuple, kwargs: dict) -> Any:
    """Run the student's piece; a stub's NotImplementedError says which file to write (and still starts "exNN:")."""
    try:
        return _student_piece(ex.id, name)(*args, **kwargs)
    except NotImplementedError as err:
        if str(err).startswith(f"{ex.id}:") and "not written yet" not in str(err):
            raise NotImplementedError(
                f"{err} - minidit runs your {name} here, and it is not written yet: write it "
                f"in exercises/{ex.stem}.py, then check it with `pytest exercises -k {ex.id}`"
            ) from None
        raise


def release_piece(exercise_id: str, name: str) -> Callable[[Callable], Callable]:
    """Decorator of a function or method whose body the student release removed: it runs the student's version."""
    ex = get(exercise_id)

    def decorate(stub: Callable) -> Callable:
        @functools.wraps(stub)
        def delegate(*args, **kwargs):
            return _call_student(ex, name, args, kwargs)

        setattr(delegate, RELEASE_ATTR, ex.id)
        return delegate

    return decorate


def release_class(exercise_id: str, name: str) -> Callable[[type], type]:
    """Class decorator for the student release: building minidit's class builds the student's instead."""
    ex = get(exercise_id)

    def decorate(cls: type) -> type:
        def __new__(klass, *args, **kwargs):  # returns the student's instance, so cls.__init__ never runs
            return _call_student(ex, name, args, kwargs)

        cls.__new__ = staticmethod(__new__)
        setattr(cls, RELEASE_ATTR, ex.id)
        return cls

    return decorate


def in_release(exercise_id: str) -> bool:
    """True in the student release, where minidit's own versions of this exercise's pieces are not shipped."""
    ex = get(exercise_id)
    for targets in ex.targets.values():
        try:
            if getattr(original(targets[0]), RELEASE_ATTR, None) == ex.id:
                return True
        except (ImportError, AttributeError, KeyError):
            continue
    return False


# ----------------------------------------------------------------------------- patching

_ORIGINALS: dict[str, Any] = {}


def _resolve(target: str) -> tuple[Any, str, str]:
    """'minidit.blocks:BLOCKS[adaLN]' -> (the container, key, kind) with kind 'attr' or 'item'."""
    module_name, _, path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    if path.endswith("]"):
        head, _, key = path[:-1].partition("[")
        for part in head.split("."):
            obj = getattr(obj, part)
        return obj, key, "item"
    *parents, attr = path.split(".")
    for part in parents:
        obj = getattr(obj, part)
    return obj, attr, "attr"


def _get(target: str) -> Any:
    container, key, kind = _resolve(target)
    return container[key] if kind == "item" else getattr(container, key)


def _set(container: Any, key: str, kind: str, value: Any) -> None:
    if kind == "item":
        container[key] = value
    else:
        setattr(container, key, value)


def original(target: str) -> Any:
    """minidit's own object at a target ("minidit.diffusion:q_sample"), even while a patch is active."""
    if target not in _ORIGINALS:
        _ORIGINALS[target] = _get(target)
    return _ORIGINALS[target]


def reference(exercise_id: str) -> types.SimpleNamespace:
    """minidit's own versions of an exercise's names (those with a target), unaffected by use()."""
    ex = get(exercise_id)
    return types.SimpleNamespace(**{name: original(t[0]) for name, t in ex.targets.items()})


def _patch(target: str, new: Any) -> Callable[[], None]:
    """Put `new` at a target (where minidit defines the piece, or its BLOCKS entry); returns the undo.

    minidit reaches every exercised piece through that one name (tests/test_layering.py checks that no
    module copies one with `from ... import`), so replacing it there is enough.
    """
    original(target)
    container, key, kind = _resolve(target)
    old = container[key] if kind == "item" else getattr(container, key)
    _set(container, key, kind, new)
    return lambda: _set(container, key, kind, old)


def _selection(source: str, exercise_ids: tuple[str, ...]) -> list[tuple[str, Any]]:
    """[(target, object)] to install for a source; with no ids, only the student's started pieces."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    explicit = bool(exercise_ids)
    chosen = [get(i) for i in exercise_ids] if explicit else list(EXERCISES.values())
    pairs, skipped = [], []
    for ex in chosen:
        if not ex.targets:
            continue
        if source == "minidit":
            pairs += [(t, original(t)) for targets in ex.targets.values() for t in targets]
            continue
        try:
            module = load(ex.id, source)
        except Exception as err:  # a missing or broken file
            if explicit:
                raise
            skipped.append(f"{ex.id} ({type(err).__name__}: {err})")
            continue
        for name, targets in ex.targets.items():
            obj = getattr(module, name, None)
            if obj is None:
                raise AttributeError(f"{ex.id}: {module.__file__} defines no {name!r}")
            if not explicit and not is_started(obj):
                skipped.append(f"{ex.id}.{name}")
                continue
            adapt = ex.adapters.get(name)
            pairs += [(t, adapt(obj) if adapt else obj) for t in targets]
    if skipped and source == "student":
        warnings.warn(
            f"course.use('student'): {len(skipped)} pieces are not started (or do not import) and keep "
            f"minidit's code: {', '.join(skipped)}",
            stacklevel=3,
        )
    return pairs


@contextlib.contextmanager
def use(source: str, *exercise_ids: str) -> Iterator[None]:
    """Run `source`'s implementation of the exercises (all of them if none is named) inside the block.

    With no ids and source "student", exercises still raising NotImplementedError keep minidit's code.
    Patches are undone on exit, also after an error. Models built inside the block keep the
    student's block classes after it (their layers were constructed then).
    """
    restores = []
    try:
        for target, obj in _selection(source, exercise_ids):
            restores.append(_patch(target, obj))
        yield
    finally:
        for restore in reversed(restores):
            restore()


_DEFAULT = contextlib.ExitStack()
_DEFAULT_SOURCE = "minidit"


def set_default(source: str, *exercise_ids: str) -> None:
    """Switch for the rest of the session (what MINIDIT_IMPL does); set_default("minidit") undoes it."""
    global _DEFAULT_SOURCE
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    _DEFAULT.close()
    if source != "minidit":
        _DEFAULT.enter_context(use(source, *exercise_ids))
    _DEFAULT_SOURCE = source


def default_source() -> str:
    """The source set by set_default / $MINIDIT_IMPL ("minidit" when nothing was set)."""
    return _DEFAULT_SOURCE


def apply_env() -> str:
    """Apply $MINIDIT_IMPL (minidit | solutions | student) once; entry points call this at start-up."""
    source = os.environ.get(ENV_IMPL, "").strip() or "minidit"
    if source != _DEFAULT_SOURCE:
        set_default(source)
    return source


# ----------------------------------------------------------------------------- compare


def _max_err(a: Any, b: Any) -> float:
    import numpy as np
    import torch

    if isinstance(a, (tuple, list)):
        if not isinstance(b, (tuple, list)) or len(a) != len(b):
            return float("inf")
        return max((_max_err(x, y) for x, y in zip(a, b)), default=0.0)
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).detach().double()
    b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b).detach().double()
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max()) if a.numel() else 0.0


def _random_cases(ex: Exercise) -> dict[str, Callable[[Any, Any], Any]]:
    """For each name: a function (yours, minidit's) -> (your output, minidit's output) on seeded random input."""

    import numpy as np
    import torch

    g = torch.Generator().manual_seed(0)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    x0, eps, xt = (torch.randn(4, 1, 8, 8, generator=g) for _ in range(3))
    t = torch.tensor([0, 1, 500, 999])
    tokens, c = torch.randn(2, 16, 32, generator=g), torch.randn(2, 32, generator=g)

    def both(*args):
        return lambda mine, ref: (mine(*args), ref(*args))

    def block(*forward_args, ctor=(32, 4)):
        def weights(ref):
            torch.manual_seed(0)
            theirs = ref(*ctor)
            for p in theirs.parameters():  # non-zero everywhere, so that every path matters
                torch.nn.init.normal_(p, std=0.1)
            return theirs

        def yours_with(mine, state):
            yours = mine(*ctor)
            yours.load_state_dict(state)
            return yours(*forward_args)

        def run(mine, ref):
            theirs = weights(ref)
            return yours_with(mine, theirs.state_dict()), theirs(*forward_args)

        run.weights, run.yours_with, run.forward_args = weights, yours_with, forward_args  # for the release's record
        return run

    def tiny_dit():
        from minidit.model import DiT

        torch.manual_seed(0)
        model = DiT(input_size=8, patch_size=4, in_channels=1, hidden_size=32, depth=1, num_heads=2, num_classes=3)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.1)
        return model.eval()

    def token_drop(mine, ref):
        from minidit.embeddings import LabelEmbedder

        labels, force = torch.arange(8) % 3, torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
        return mine(labels, 3, 0.5, force), ref(LabelEmbedder(3, 8, 0.5), labels, force)

    def forward_with_cfg(mine, ref):  # needs a DiT, hence blocks: no record in the student release
        model = tiny_dit()
        with torch.no_grad():
            args = (xt, t, torch.tensor([0, 1, 2, 0]), 4.0)
            return mine(model, *args), ref(model, *args)

    def update_ema(mine, ref):  # (idem)
        model, yours = tiny_dit(), tiny_dit()
        for p in yours.parameters():
            torch.nn.init.normal_(p, std=0.1)
        theirs = copy.deepcopy(yours)
        mine(yours, model, 0.9)
        ref(theirs, model, 0.9)
        return [p.detach() for p in yours.parameters()], [p.detach() for p in theirs.parameters()]

    forward_with_cfg.needs_dit = update_ema.needs_dit = True
    a = np.random.default_rng(0).normal(size=(2, 8, 24))
    cov1, cov2 = a[0] @ a[0].T / 24, a[1] @ a[1].T / 24
    cases: dict[str, dict[str, Callable]] = {
        "ex01": {
            "linear_beta_schedule": both(100),
            "cosine_beta_schedule": both(100),
            "compute_alphas_cumprod": both(betas),
        },
        "ex02": {"q_sample": both(x0, t, eps, abar)},
        "ex03": {"epsilon_mse_loss": both(eps, x0)},
        "ex04": {
            "q_posterior_mean_variance": both(x0, xt, t, betas, abar),
            "ddpm_step": both(x0, torch.full((4, 1, 1, 1), -3.0), t, eps),
        },
        "ex05": {"patchify": both(x0, 2), "unpatchify": both(torch.randn(4, 16, 4, generator=g), 2, 1)},
        "ex06": {"get_2d_sincos_pos_embed": both(32, 4), "get_1d_sincos_pos_embed_from_grid": both(16, np.arange(5.0))},
        "ex07": {"timestep_embedding": both(t, 32)},
        "ex08": {"modulate": both(tokens, c, torch.randn(2, 32, generator=g)), "DiTBlock": block(tokens, c)},
        "ex09": {"InContextBlock": block(tokens, None)},
        "ex10": {"CrossAttention": block(tokens, tokens[:, :2]), "CrossAttentionBlock": block(tokens, tokens[:, :2])},
        "ex11": {"AdaLNBlock": block(tokens, c)},
        "ex12": {"token_drop": token_drop, "cfg_combine": both(x0, eps, 4.0), "forward_with_cfg": forward_with_cfg},
        "ex13": {"ddim_step": both(xt, eps, t, t - 1, abar)},
        "ex15": {"concat_low_res": both(xt, x0[:, :, ::4, ::4].clamp(-1, 1)), "low_res_pos_embed": both(32, 4, 16)},
        "ex14": {"update_ema": update_ema},
        "ex16": {"frechet_distance": both(np.zeros(8), cov1, np.ones(8), cov2)},
        "ex17": {
            "sample_posterior": both(x0, xt, eps),
            "kl_divergence": both(x0, xt),
            "latent_scale_factor": both(3 * xt),
        },
    }
    return cases.get(ex.id, {})


RECORD_FILE = "assets/release_reference.safetensors"  # minidit's outputs on the compare inputs, in a release


def _flat(value: Any) -> list:
    """An output as a flat list of tensors (what a record holds)."""
    import numpy as np
    import torch

    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat(v)]
    if isinstance(value, torch.Tensor):
        return [value.detach().cpu()]
    return [torch.as_tensor(np.asarray(value))]


def _unused(*args, **kwargs) -> None:
    return None


def record_reference_outputs() -> dict:
    """minidit's outputs (and the blocks' weights) on compare()'s seeded inputs, for the student release:
    it ships these numbers instead of minidit's code, so compare() still measures max |yours - minidit|."""
    record = {}
    for ex in EXERCISES.values():
        cases, ref = _random_cases(ex), reference(ex.id)
        for name, case in cases.items():
            if getattr(case, "needs_dit", False) or not hasattr(ref, name):
                continue
            if hasattr(case, "weights"):
                theirs = case.weights(getattr(ref, name))
                record.update({f"{ex.id}/{name}/state/{k}": v.detach().clone() for k, v in theirs.state_dict().items()})
                outputs = _flat(theirs(*case.forward_args))
            else:
                outputs = _flat(case(_unused, getattr(ref, name))[1])
            record.update({f"{ex.id}/{name}/out/{i}": t.contiguous().clone() for i, t in enumerate(outputs)})
    return record


def _recorded(ex_id: str, name: str) -> tuple[list, dict] | None:
    """(outputs, block weights) recorded for a piece in the student release, or None."""
    path = pathlib.Path(__file__).resolve().parents[1] / RECORD_FILE
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    prefix = f"{ex_id}/{name}/"
    items = {k[len(prefix) :]: v for k, v in load_file(path).items() if k.startswith(prefix)}
    outputs = [items[f"out/{i}"] for i in range(sum(k.startswith("out/") for k in items))]
    state = {k[len("state/") :]: v for k, v in items.items() if k.startswith("state/")}
    return (outputs, state) if outputs else None


def compare(exercise_id: str, source: str = "student") -> dict[str, float | str]:
    """Print and return, for each piece of an exercise: "not started", an error, or max |yours - minidit|.

    In the student release minidit's own code is not there: the comparison is with minidit's outputs
    recorded when the release was made (record_reference_outputs).
    """
    ex = get(exercise_id)
    result: dict[str, float | str] = {}
    try:
        module = load(ex.id, source)
    except Exception as err:
        print(f"{ex.id} {ex.title}: cannot import your file: {type(err).__name__}: {err}")
        return {name: "import error" for name in ex.names}
    cases = _random_cases(ex)
    release = in_release(ex.id)
    ref = None if release else reference(ex.id)
    for name in ex.names:
        obj = getattr(module, name, None)
        record = _recorded(ex.id, name) if release else None
        if obj is None:
            result[name] = "missing"
        elif not is_started(obj):
            result[name] = "not started"
        elif name not in cases or not (record if release else hasattr(ref, name)):
            result[name] = "no random comparison (see its tests)"
        else:
            try:
                if release:
                    case, (theirs, state) = cases[name], record
                    mine = case.yours_with(obj, state) if hasattr(case, "yours_with") else case(obj, _unused)[0]
                    result[name] = _max_err(_flat(mine), theirs)
                else:
                    mine, theirs = cases[name](obj, getattr(ref, name))
                    result[name] = _max_err(mine, theirs)
            except NotImplementedError:
                result[name] = "not started"
            except Exception as err:
                result[name] = f"error: {type(err).__name__}: {err}"
    print(f"{ex.id} {ex.title}  ({source}: {exercise_folder(source) / (ex.stem + '.py')})")
    for name, value in result.items():
        shown = f"max |yours - minidit| = {value:.3g}" if isinstance(value, float) else value
        print(f"  {name:<34} {shown}")
    print(f"  full check: pytest exercises -k {ex.id}")
    return result
