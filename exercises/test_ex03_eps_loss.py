"""Tests for ex03 (the epsilon-MSE loss).   Run: pytest exercises -k ex03"""

import torch
import torch.nn.functional as F

from exercises._testing import check, generator


def _pair(shape, seed=0):
    g = generator(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_matches_torch_mse_per_example(impl):
    pred, noise = _pair((4, 2, 8, 8))
    loss = impl.epsilon_mse_loss(pred, noise)
    expected = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
    check(loss, expected, what="epsilon_mse_loss", atol=1e-6, mistakes={
        "sum over the pixels, not mean: the loss must not grow with the image size":
            F.mse_loss(pred, noise, reduction="none").sum(dim=(1, 2, 3)),
        "the error is squared, not its absolute value": (pred - noise).abs().mean(dim=(1, 2, 3)),
        "a squared *error*: average (pred - noise) ** 2, not pred ** 2 - noise ** 2":
            (pred**2 - noise**2).mean(dim=(1, 2, 3)),
    })


def test_one_number_per_example(impl):
    pred, noise = _pair((5, 1, 4, 4), seed=1)
    loss = impl.epsilon_mse_loss(pred, noise)
    assert loss is not None, "epsilon_mse_loss returned None: did you forget to `return`?"
    assert tuple(loss.shape) == (5,), (
        f"the loss has shape {tuple(loss.shape)} where (5,) was expected: average over every dimension "
        f"but the batch (dim 0), so the training loop can log the loss per timestep")


def test_any_rank_and_zero_for_perfect_prediction(impl):
    pred, noise = _pair((3, 7), seed=2)
    check(impl.epsilon_mse_loss(pred, noise), ((pred - noise) ** 2).mean(1), what="epsilon_mse_loss on (N, D)",
          atol=1e-6)
    check(impl.epsilon_mse_loss(noise, noise), torch.zeros(3), what="loss of a perfect prediction", atol=0)


def test_gradient_is_that_of_the_mse(impl):
    pred, noise = _pair((2, 1, 4, 4), seed=3)
    pred.requires_grad_(True)
    impl.epsilon_mse_loss(pred, noise).sum().backward()
    assert pred.grad is not None, "no gradient reached the prediction: do not detach or use .item()"
    check(pred.grad, 2 * (pred - noise).detach() / 16, what="d loss / d prediction", atol=1e-6)


class _Recorder(torch.nn.Module):
    """A fake model: returns a fixed linear function of x_t (2C channels, like a learned-sigma DiT)."""

    def __init__(self, out_channels):
        super().__init__()
        self.out_channels, self.calls = out_channels, []

    def forward(self, x, t, y=None):
        self.calls.append((x.clone(), t.clone(), y))
        eps = 0.5 * x + 0.1 * t.view(-1, 1, 1, 1)  # (N, C, H, W)
        return eps if self.out_channels == x.shape[1] else torch.cat([eps, -x], dim=1)  # (N, 2C, H, W)


def test_simple_training_loss_runs_algorithm_1(impl):
    g = generator(4)
    x0, noise = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    t = torch.tensor([0, 5, 9])
    abar = torch.cumprod(1 - torch.linspace(0.01, 0.2, 10, dtype=torch.float64), 0)
    model = _Recorder(out_channels=4)
    loss = impl.simple_training_loss(model, x0, t, noise, abar, model_kwargs={"y": "labels"})
    assert len(model.calls) == 1, f"the model was called {len(model.calls)} times; call it once"
    x_seen, t_seen, y_seen = model.calls[0]
    a = abar.float()[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    check(x_seen, x_t, what="the model's input", atol=1e-6, mistakes={
        "the model must see x_t = q_sample(x_0, t, noise), not the clean x_0": x0,
        "the model must see x_t = q_sample(x_0, t, noise), not the noise": noise,
        "x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps: both square roots are missing (call diffusion.q_sample, "
        "your ex02, instead of writing x_t again)": a * x0 + (1 - a) * noise,
        "x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps: the square root on the noise's factor is missing "
        "(call diffusion.q_sample, your ex02)": a.sqrt() * x0 + (1 - a) * noise,
        "x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps: the square root on x_0's factor is missing "
        "(call diffusion.q_sample, your ex02)": a * x0 + (1 - a).sqrt() * noise})
    assert torch.equal(t_seen, t), "the model must be called with the timesteps t"
    assert y_seen == "labels", "pass model_kwargs on to the model: model(x_t, t, **model_kwargs)"
    eps = 0.5 * x_t + 0.1 * t.view(-1, 1, 1, 1)
    check(loss, ((eps - noise) ** 2).mean(dim=(1, 2, 3)), what="simple_training_loss", atol=1e-5, mistakes={
        "the target is the noise eps that made x_t, not the clean image x_0: the network predicts eps (DDPM Eq. 14)":
            ((eps - x0) ** 2).mean(dim=(1, 2, 3)),
        "the target is the noise eps that made x_t, not x_t itself": ((eps - x_t) ** 2).mean(dim=(1, 2, 3)),
    })


def test_simple_training_loss_agrees_with_minidit(impl):
    # minidit's training_losses with loss_type="mse" computes the same L_simple (it is its "mse" term).
    from minidit.diffusion import GaussianDiffusion, linear_beta_schedule

    diffusion = GaussianDiffusion(linear_beta_schedule(50), learn_sigma=True, loss_type="mse")
    g = generator(5)
    x0, noise = torch.randn(4, 1, 4, 4, generator=g), torch.randn(4, 1, 4, 4, generator=g)
    t = torch.tensor([0, 10, 25, 49])
    model = _Recorder(out_channels=2)
    expected = diffusion.training_losses(model, x0, t, noise=noise)["mse"]
    got = impl.simple_training_loss(model, x0, t, noise, diffusion.alphas_cumprod)
    x_t = model.calls[0][0]
    full_output = torch.cat([0.5 * x_t + 0.1 * t.view(-1, 1, 1, 1), -x_t], dim=1)  # (N, 2C, H, W)
    check(got, expected, what="simple_training_loss", atol=1e-5, mistakes={
        "a learned-sigma model returns 2C channels: only the first C are the eps prediction":
            ((full_output - noise) ** 2).mean(dim=(1, 2, 3))})


def test_agrees_with_minidit(impl, ref):
    pred, noise = _pair((4, 3, 8, 8), seed=6)
    check(impl.epsilon_mse_loss(pred, noise), ref.epsilon_mse_loss(pred, noise), what="epsilon_mse_loss", atol=1e-6)
