"""The paper's Gflops and parameter counts (DiT Table 1, Table 4, §3.2), and an independent FLOP count."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from minidit.flops import count_parameters, dit_gflops, dit_macs
from minidit.model import create_model, model_config

# Latents of 256x256 images (32x32x4), 1000 classes, learned sigma, adaLN-Zero unless said.
PAPER_GFLOPS = {
    # Table 1 (p = 4), printed with 2-3 significant digits
    "DiT-S/4": 1.4,
    "DiT-B/4": 5.6,
    "DiT-L/4": 19.7,
    "DiT-XL/4": 29.1,
    # Table 4
    "DiT-S/8": 0.36,
    "DiT-S/2": 6.06,
    "DiT-B/2": 23.01,
    "DiT-L/2": 80.71,
    "DiT-XL/2": 118.64,
}
PAPER_BLOCK_GFLOPS = {"in-context": 119.4, "cross-attention": 137.6, "adaLN": 118.6, "adaLN-Zero": 118.6}  # §3.2, XL/2


@pytest.mark.parametrize("name,paper", PAPER_GFLOPS.items())
def test_gflops_match_paper(name, paper):
    got = dit_gflops(name)
    assert got == pytest.approx(paper, rel=0.01), f"{name}: {got:.3f} Gflops, paper {paper}"


@pytest.mark.parametrize("block,paper", PAPER_BLOCK_GFLOPS.items())
def test_block_variant_gflops_match_paper(block, paper):
    got = dit_gflops("DiT-XL/2", block=block)
    assert got == pytest.approx(paper, rel=0.01), f"XL/2 {block}: {got:.2f} Gflops, paper {paper}"


def test_cross_attention_costs_about_15_percent_more():
    ratio = dit_gflops("DiT-XL/2", block="cross-attention") / dit_gflops("DiT-XL/2")
    assert 1.14 < ratio < 1.17


def test_paper_parameter_counts():
    with torch.device("meta"):
        xl = create_model("DiT-XL/2")
        s2 = create_model("DiT-S/2")
    assert count_parameters(xl) == pytest.approx(675e6, rel=0.001), "DiT-XL/2 has ~675M parameters (paper)"
    assert round(count_parameters(s2) / 1e6, 2) == 32.96, "DiT-S/2 has 32.96M parameters with its fixed pos_embed"
    assert count_parameters(s2) - count_parameters(s2, include_fixed=False) == 256 * 384  # pos_embed only


def _measured_macs(model, n=2):
    """Independent count: torch's FlopCounterMode on a real forward (FLOPs = 2 x MACs), per sample."""
    x = torch.randn(n, model.in_channels, model.input_size, model.input_size)
    t, y = torch.randint(0, 1000, (n,)), torch.randint(0, model.num_classes, (n,))
    # the math backend runs attention as matmuls, which the counter sees on every platform
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, t, y)
    return counter.get_total_flops() / 2 / n


@pytest.mark.parametrize("block", list(PAPER_BLOCK_GFLOPS))
@pytest.mark.parametrize(
    "name,kwargs", [("DiT-T/4", dict(in_channels=3)), ("DiT-T/2", dict(learn_sigma=False, depth=1))]
)
def test_analytic_count_matches_flop_counter(name, kwargs, block):
    model = create_model(name, input_size=16, num_classes=10, block=block, **{"depth": 2, **kwargs}).eval()
    analytic = dit_macs(model)
    measured = _measured_macs(model)
    assert analytic == measured, f"{name} {block}: analytic {analytic} MACs, FlopCounterMode {measured}"


def test_config_sources_agree_and_errors():
    model = create_model("DiT-T/4", input_size=16, in_channels=1, num_classes=10)
    assert dit_macs(model) == dit_macs(model_config(model)) == dit_macs("DiT-T/4", input_size=16, in_channels=1)
    with pytest.raises(ValueError, match="unknown model"):
        dit_macs("DiT-M/2")
    with pytest.raises(ValueError, match="unknown block"):
        dit_macs("DiT-S/2", block="film")
    with pytest.raises(ValueError, match="not divisible"):
        dit_macs("DiT-S/8", input_size=36)
