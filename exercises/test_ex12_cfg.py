"""Tests for ex12 (label dropout and classifier-free guidance).   Run: pytest exercises -k ex12"""

import torch

from exercises._testing import check, check_shape, generator, randomize_

NUM_CLASSES = 10
IN_PLACE_HINT = ("token_drop changed the labels tensor it was given (in place, e.g. labels[drop] = num_classes): "
                 "the caller's labels must stay as they were; return a new tensor (torch.where(drop, null, labels))")
DEVICE_HINT = ("make every new tensor on the labels' device (torch.rand(..., device=labels.device), "
               ".to(y.device)): in training the labels are on the GPU")


def test_token_drop_forced(impl):
    labels = torch.tensor([3, 1, 4, 1, 5])
    out = impl.token_drop(labels, NUM_CLASSES, 0.0, force_drop_ids=torch.tensor([1, 0, 0, 1, 0]))
    check(out, torch.tensor([10, 1, 4, 10, 5]), what="token_drop with force_drop_ids", atol=0, mistakes={
        "dropped labels become the null label num_classes (here 10), not 0": torch.tensor([0, 1, 4, 0, 5]),
        "force_drop_ids == 1 marks the labels to drop (not the ones to keep)": torch.tensor([3, 10, 10, 1, 10]),
        "with force_drop_ids given, drop exactly those rows (dropout_prob is 0 here)": torch.tensor([3, 1, 4, 1, 5]),
    })
    assert out.dtype == torch.long, f"labels must stay long (embedding indices), got {out.dtype}"
    assert torch.equal(labels, torch.tensor([3, 1, 4, 1, 5])), IN_PLACE_HINT


def _off_the_cpu(fn, what):
    """fn() on PyTorch's "meta" device, which holds shapes without data: a tensor made on the CPU next to
    meta tensors fails as it would next to GPU tensors, so device mistakes show up without a GPU."""
    __tracebackhide__ = True
    try:
        return fn()
    except (RuntimeError, NotImplementedError) as err:
        if isinstance(err, NotImplementedError) and str(err).startswith("ex12"):
            raise  # the stub: not started
        raise AssertionError(f"{what} with tensors that are not on the CPU failed: {DEVICE_HINT}"
                             f"\n\n{type(err).__name__}: {err}") from None


def test_token_drop_keeps_the_labels_device(impl):
    labels = torch.arange(8, device="meta")
    for kind, kwargs in (("random", {}), ("forced", {"force_drop_ids": torch.ones(8, dtype=torch.long, device="meta")})):
        out = _off_the_cpu(lambda: impl.token_drop(labels, NUM_CLASSES, 0.5, **kwargs), f"token_drop ({kind} drop)")
        assert out.device == labels.device, f"token_drop returned labels on {out.device}, not {labels.device}: {DEVICE_HINT}"


def test_token_drop_forced_ignores_the_probability(impl):
    labels = torch.arange(6)
    out = impl.token_drop(labels, NUM_CLASSES, 0.9, force_drop_ids=torch.zeros(6, dtype=torch.long))
    assert torch.equal(out, labels), (
        "with force_drop_ids given nothing is random: drop exactly its rows (here none), whatever dropout_prob is")


def test_token_drop_random_rate(impl):
    labels = torch.randint(0, NUM_CLASSES, (20000,), generator=generator(0))
    out = impl.token_drop(labels, NUM_CLASSES, 0.3, generator=generator(1))
    check_shape(out, (20000,), what="token_drop(labels)")
    dropped = out == NUM_CLASSES
    rate = float(dropped.float().mean())
    if abs(rate - 0.3) > 0.02:
        hint = ("you drop with probability 1 - dropout_prob: drop where rand < dropout_prob" if abs(rate - 0.7) < 0.02
                else "each label is dropped independently with probability dropout_prob")
        raise AssertionError(f"{rate:.1%} of the labels were dropped where 30% was expected: {hint}")
    assert torch.equal(out[~dropped], labels[~dropped]), "labels that are not dropped must stay as they are"
    none = impl.token_drop(labels, NUM_CLASSES, 0.0, generator=generator(2))
    assert torch.equal(none, labels), "with dropout_prob 0 no label is dropped"


def test_token_drop_uses_the_generator(impl):
    labels = torch.arange(64) % NUM_CLASSES
    a = impl.token_drop(labels, NUM_CLASSES, 0.5, generator=generator(3))
    assert torch.equal(labels, torch.arange(64) % NUM_CLASSES), IN_PLACE_HINT
    b = impl.token_drop(labels, NUM_CLASSES, 0.5, generator=generator(3))
    c = impl.token_drop(labels, NUM_CLASSES, 0.5, generator=generator(4))
    assert torch.equal(a, b) and not torch.equal(a, c), (
        "the random draw must come from the generator argument (torch.rand(..., generator=generator))")


def test_cfg_combine(impl):
    g = generator(5)
    cond, uncond = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    check(impl.cfg_combine(cond, uncond, 4.0), uncond + 4.0 * (cond - uncond), what="cfg_combine(cond, uncond, 4)",
          atol=1e-6, mistakes={
              "start from the unconditional prediction and move towards the conditional one: "
              "eps_uncond + s * (eps_cond - eps_uncond)": cond + 4.0 * (uncond - cond),
              "that is s * cond + (1 - s) * uncond written wrongly; expected uncond + s * (cond - uncond)":
                  cond + 4.0 * (cond - uncond),
          })
    check(impl.cfg_combine(cond, uncond, 1.0), cond, what="cfg_combine at s = 1 (the conditional model)", atol=1e-6)
    check(impl.cfg_combine(cond, uncond, 0.0), uncond, what="cfg_combine at s = 0 (the unconditional model)", atol=1e-6)


def _tiny_dit(learn_sigma=True):
    from minidit.model import DiT

    torch.manual_seed(0)
    model = DiT(input_size=8, patch_size=4, in_channels=2, hidden_size=32, depth=1, num_heads=2,
                num_classes=NUM_CLASSES, learn_sigma=learn_sigma)
    return randomize_(model, seed=6).eval()  # random, non-zero weights: adaLN-Zero's init would output 0


def _inputs():
    g = generator(7)
    return torch.randn(3, 2, 8, 8, generator=g), torch.tensor([5, 50, 500]), torch.tensor([0, 3, 9])


def test_forward_with_cfg_against_two_forward_passes(impl):
    model = _tiny_dit()
    x, t, y = _inputs()
    with torch.no_grad():
        cond = model(x, t, y)  # (N, 4, 8, 8): eps (2 channels) and variance (2 channels)
        uncond = model(x, t, torch.full_like(y, NUM_CLASSES))
        out = impl.forward_with_cfg(model, x, t, y, 3.0)
    eps = uncond[:, :2] + 3.0 * (cond[:, :2] - uncond[:, :2])
    check_shape(out, (3, 4, 8, 8), what="forward_with_cfg",
                hint="return all C_out channels: the guided eps, then the conditional variance channels")
    check(out, torch.cat([eps, cond[:, 2:]], 1), what="forward_with_cfg", atol=1e-4, rtol=1e-4, mistakes={
        "only the eps channels are guided; the learned-variance channels (the last C) are the conditional "
        "prediction": uncond + 3.0 * (cond - uncond),
        "the first half of the doubled batch is the conditional one (force_drop_ids 0), the second the "
        "unconditional one": torch.cat([cond[:, :2] + 3.0 * (uncond[:, :2] - cond[:, :2]), uncond[:, 2:]], 1),
    })


def test_forward_with_cfg_guided_channels(impl):
    model = _tiny_dit(learn_sigma=False)
    x, t, y = _inputs()
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, NUM_CLASSES))
        out = impl.forward_with_cfg(model, x, t, y, 2.0, guided_channels=1)
    expected = torch.cat([uncond[:, :1] + 2.0 * (cond[:, :1] - uncond[:, :1]), cond[:, 1:]], 1)
    check(out, expected, what="forward_with_cfg(..., guided_channels=1)", atol=1e-4, rtol=1e-4, mistakes={
        "guide only the first guided_channels channels; the rest keep the conditional prediction":
            uncond + 2.0 * (cond - uncond)})


def test_forward_with_cfg_keeps_the_inputs_device(impl):
    model = _tiny_dit().train().to("meta")  # train mode: an eval-mode DiT reads the label values back (y.max())
    x, t, y = (v.to("meta") for v in _inputs())
    out = _off_the_cpu(lambda: impl.forward_with_cfg(model, x, t, y, 3.0), "forward_with_cfg")
    assert out.device == x.device, f"forward_with_cfg returned {out.device}, not {x.device}: {DEVICE_HINT}"


def test_forward_with_cfg_is_one_batched_pass(impl):
    model = _tiny_dit()
    sizes = []
    model.register_forward_hook(lambda module, args, kwargs_out: sizes.append(args[0].shape[0]))
    x, t, y = _inputs()
    with torch.no_grad():
        impl.forward_with_cfg(model, x, t, y, 1.5)
    assert sizes == [6], (
        f"the model ran on batches of {sizes}; run it once on the doubled batch of 2N = 6 "
        "(conditional and unconditional together, as DiT does)")


def test_agrees_with_minidit(impl, ref):
    from minidit.embeddings import LabelEmbedder

    embedder = LabelEmbedder(NUM_CLASSES, 8, dropout_prob=0.5)
    labels, force = torch.arange(8), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    check(impl.token_drop(labels, NUM_CLASSES, 0.5, force_drop_ids=force), embedder.token_drop(labels, force),
          what="token_drop", atol=0)
    g = generator(9)
    cond, uncond = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    check(impl.cfg_combine(cond, uncond, 1.5), ref.cfg_combine(cond, uncond, 1.5), what="cfg_combine", atol=1e-6)
    model = _tiny_dit()
    x, t, y = _inputs()
    with torch.no_grad():
        check(impl.forward_with_cfg(model, x, t, y, 4.0), model.forward_with_cfg(x, t, y, 4.0),
              what="forward_with_cfg", atol=1e-4, rtol=1e-4)
