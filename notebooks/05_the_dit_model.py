# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · The DiT model: assembling the pieces, 12 configs and their Gflops
#
# **Paper:** DiT §3.2, *Model size* and *Transformer decoder*; Table 1 (the S, B, L, XL configs
# and their Gflops at $p = 4$); Table 4 (Gflops of every config); §4, *Compute*; Figure 2 and
# §5 (Gflops, not parameters, predict quality).
#
# **Learning objectives.** After this notebook you can
#
# 1. trace a batch through `DiT.forward` and name every tensor's shape: patch embedding, position
#    embedding, conditioning, blocks, final layer, unpatchify;
# 2. explain why the output has $2C$ channels (`learn_sigma`: noise and variance);
# 3. list the 12 DiT configs and reproduce the paper's Table 1 and Gflops column with an analytic
#    counter (`minidit.flops`);
# 4. explain why patch size, not parameter count, sets the compute, and see it in a plot.
#
# **Code:** `minidit/model.py` (`DiT`, `DiT_models`, `create_model`), `minidit/flops.py`
# (`dit_gflops`, `count_parameters`), `minidit/official.py` (loading the released weights).
# **Exercises:** none new; the last section runs *all* your exercises inside one DiT.

# %% [markdown]
# ## Parameters

# %%
import os

QUICK = os.environ.get("MINIDIT_QUICK", "0") == "1"
TIMING_BATCH = 2 if QUICK else 16  # images per forward pass in the CPU timing
TIMING_REPEATS = 1 if QUICK else 3
SEED = 0

# %%
import time

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import NullFormatter

from minidit import flops
from minidit.embeddings import unpatchify
from minidit.model import DiT_models, create_model

torch.manual_seed(SEED)
print(f"quick mode: {QUICK}")

# %% [markdown]
# ## 1. One forward pass, shape by shape
#
# DiT (Figure 3, left) is notebook 03's embeddings and notebook 04's blocks in a row:
#
# $$\underbrace{x_t}_{(N, C, I, I)} \xrightarrow{\text{x\_embedder}} (N, T, D) \xrightarrow{+\,\text{pos\_embed}} (N, T, D)
#   \xrightarrow{\text{blocks}(\,\cdot\,,\,c)} (N, T, D) \xrightarrow{\text{final\_layer}} (N, T, p^2 \cdot 2C)
#   \xrightarrow{\text{unpatchify}} (N, 2C, I, I),$$
#
# with $c = \text{t\_embedder}(t) + \text{y\_embedder}(y)$ of shape $(N, D)$. We build a DiT-S/2
# for Fashion-MNIST ($32\times32$, one channel, ten classes) and print the shape after each stage,
# using forward hooks so that we watch the real `forward` rather than a copy of it.

# %%
model = create_model("DiT-S/2", input_size=32, in_channels=1, num_classes=10).eval()
x = torch.randn(8, 1, 32, 32)  # x_t: (N, C, H, W)
t = torch.randint(0, 1000, (8,))  # (N,)
y = torch.randint(0, 10, (8,))  # (N,)

shapes = []
hooks = [getattr(model, name).register_forward_hook(
    lambda mod, inp, out, name=name: shapes.append((name, tuple(out.shape))))
    for name in ("x_embedder", "t_embedder", "y_embedder", "final_layer")]
hooks.append(model.blocks[0].register_forward_hook(lambda mod, inp, out: shapes.append(("blocks[0]", tuple(out.shape)))))
hooks.append(model.blocks[-1].register_forward_hook(lambda mod, inp, out: shapes.append((f"blocks[{len(model.blocks) - 1}]", tuple(out.shape)))))
with torch.no_grad():
    out = model(x, t, y)
for h in hooks:
    h.remove()

print(f"{'input x_t':<16} {tuple(x.shape)}")
for name, shape in shapes:
    print(f"{name:<16} {shape}")
print(f"{'unpatchify':<16} {tuple(out.shape)}   <- the model's output")
print(f"pos_embed {tuple(model.pos_embed.shape)}, trainable: {model.pos_embed.requires_grad}")

# %% [markdown]
# ## 2. The decoder: final layer and unpatchify
#
# DiT §3.2, *Transformer decoder*: after the last block, a final (adaptive) LayerNorm and one
# linear layer map every token to $p \times p \times 2C$ numbers, which `unpatchify` puts back in
# place. `DiT.unpatchify` is notebook 03's `unpatchify` with the model's patch size and output
# channels:

# %%
with torch.no_grad():
    h = model.x_embedder(x) + model.pos_embed  # (N, T, D)
    c = model.t_embedder(t) + model.y_embedder(y, train=False)  # (N, D)
    for block in model.blocks:
        h = block(h, c)  # (N, T, D)
    per_token = model.final_layer(h, c)  # (N, T, p*p*2C)
print("final layer:", tuple(per_token.shape), f"= (N, T, p*p*2C) = (8, 256, 2*2*{model.out_channels})")
torch.testing.assert_close(model.unpatchify(per_token), unpatchify(per_token, 2, model.out_channels))
torch.testing.assert_close(model.unpatchify(per_token), out)
print("model.unpatchify(final_layer(...)) == model(x, t, y)")

# %% [markdown]
# **`learn_sigma`: why $2C$ output channels.** The first $C$ output channels are the predicted
# noise $\varepsilon_\theta(x_t)$. With `learn_sigma=True` (DiT's setting, from Improved DDPM) the
# other $C$ are a number $v$ per pixel that sets the reverse-process variance between the two
# natural choices $\beta_t$ and $\tilde\beta_t$ (notebook 02, section 7; $v = -1$ gives $\tilde\beta_t$,
# $v = +1$ gives $\beta_t$, and nothing clamps $v$ to that range):
#
# $$\Sigma_\theta(x_t) = \exp\!\big(\tfrac{v+1}{2}\log\beta_t + \big(1-\tfrac{v+1}{2}\big)\log\tilde\beta_t\big).$$
#
# Without it, the output has $C$ channels and the variance is fixed. The difference in size is one
# linear layer's output width:

# %%
for learn_sigma in (True, False):
    m = create_model("DiT-S/2", input_size=32, in_channels=1, num_classes=10, learn_sigma=learn_sigma)
    print(f"learn_sigma={learn_sigma!s:<5}: out_channels = {m.out_channels}, output {tuple(m(x, t, y).shape)}, "
          f"final linear {tuple(m.final_layer.linear.weight.shape)}, parameters {flops.count_parameters(m):,}")

# %% [markdown]
# ## 3. The 12 configs
#
# DiT scales two knobs (§3.2, *Model size*): the transformer size, S / B / L / XL (depth $N$,
# width $D$, heads, as ViT), and the patch size $p \in \{8, 4, 2\}$. Names read `DiT-XL/2`: size XL,
# $p = 2$. minidit adds a tiny `T` size for CPUs (notebooks 02 and 06 train it). We count
# parameters on PyTorch's `meta` device (no memory) in the paper's setting: $32\times32\times4$
# latents, 1000 classes.

# %%
print(f"{'config':<10} {'depth':>5} {'D':>5} {'heads':>5} {'p':>2} {'T':>5} {'params':>9}")
params = {}
for name, build in DiT_models.items():
    with torch.device("meta"):
        m = create_model(name)  # paper setting: input_size 32, in_channels 4, num_classes 1000
    params[name] = flops.count_parameters(m)
    pre = build.preset
    tokens = (32 // pre["patch_size"]) ** 2
    print(f"{name:<10} {pre['depth']:>5} {pre['hidden_size']:>5} {pre['num_heads']:>5} {pre['patch_size']:>2} "
          f"{tokens:>5} {params[name] / 1e6:>8.1f}M")

# %% [markdown]
# DiT-XL/2 has 675M parameters, the number the paper quotes. Note how little the parameter
# count depends on $p$: only the patch embedding ($p^2C \times D$) and the final linear layer
# ($D \times 2p^2C$) change.
#
# ## 4. Reproducing Table 1 and the Gflops column
#
# The paper's "Gflops" count the multiply-accumulates of one forward pass (DiT §4, *Compute*).
# `minidit.flops.dit_gflops` adds them up from the config alone: every linear layer and the two
# matrix products of attention ($QK^\top$ and $AV$), per block and for the embedders and the final
# layer. Table 1 lists the four sizes at $p = 4$; Table 4 lists every config. We print ours next
# to the numbers the paper gives.

# %%
PAPER_TABLE1 = {  # DiT Table 1: layers N, hidden size d, heads, Gflops (I = 32, p = 4)
    "S": (12, 384, 6, 1.4), "B": (12, 768, 12, 5.6), "L": (24, 1024, 16, 19.7), "XL": (28, 1152, 16, 29.1)}
print("DiT Table 1 (Gflops at I = 32, p = 4)")
print(f"{'model':<7} {'layers':>6} {'D':>5} {'heads':>5} | {'Gflops (minidit)':>16} {'(paper)':>8}")
for size, (depth, hidden, heads, paper) in PAPER_TABLE1.items():
    pre = DiT_models[f"DiT-{size}/4"].preset
    assert (pre["depth"], pre["hidden_size"], pre["num_heads"]) == (depth, hidden, heads)
    print(f"DiT-{size:<3} {depth:>6} {hidden:>5} {heads:>5} | {flops.dit_gflops(f'DiT-{size}/4'):>16.2f} {paper:>8.1f}")

# %%
PAPER_TABLE4 = {"DiT-S/2": 6.06, "DiT-B/2": 23.01, "DiT-L/2": 80.71, "DiT-XL/2": 118.64, "DiT-S/8": 0.36}  # DiT Table 4
PAPER_P4 = {f"DiT-{size}/4": v[3] for size, v in PAPER_TABLE1.items()}  # Table 1, one decimal
gflops = {name: flops.dit_gflops(name) for name in DiT_models if not name.startswith("DiT-T")}
print(f"{'config':<10} {'Gflops (minidit)':>16} {'paper':>8} {'difference':>10}  source")
for name, value in gflops.items():
    paper, source = PAPER_TABLE4.get(name), "Table 4"
    if paper is None and name in PAPER_P4:
        paper, source = PAPER_P4[name], "Table 1 (rounded to 0.1)"
    shown = f"{paper:>8.2f} {100 * (value - paper) / paper:>+9.2f}%  {source}" if paper is not None else f"{'':>8} {'':>10}  -"
    print(f"{name:<10} {value:>16.2f} {shown}")

# %% [markdown]
# Rounded to the paper's precision, S/2, B/2 and S/8 (Table 4) and S/4, B/4, L/4 (Table 1)
# match exactly; L/2 and XL/2 come out 0.01 and 0.02 lower, XL/4 0.06 lower. All within 0.2 %:
# the paper's counter seems to include a few small operations more, and the percentages in the
# table are otherwise rounding. Counting only the matrix products is enough: LayerNorm, softmax,
# GELU and the residual adds are elementwise, a fraction of a per cent.
#
# ## 5. Gflops against patch size
#
# Left: Gflops of every config against $p$ (log scale). Each halving of $p$ quadruples the
# number of tokens and multiplies the Gflops by a little more than 4 (attention's $T^2$ terms).
# Right: parameters against $p$: flat. Patch size is a pure compute knob, which is why DiT can
# show that Gflops, not parameters, predict FID (Figures 2 and 8).

# %%
sizes = ["S", "B", "L", "XL"]
patches = [8, 4, 2]
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for i, size in enumerate(sizes):
    g = [gflops[f"DiT-{size}/{p}"] for p in patches]
    n = [params[f"DiT-{size}/{p}"] / 1e6 for p in patches]
    axes[0].semilogy(patches, g, "o-", color=f"C{i}", label=f"DiT-{size}")
    axes[1].semilogy(patches, n, "o-", color=f"C{i}", label=f"DiT-{size}")
    for p, v in zip(patches, g):
        axes[0].annotate(f"{v:.2f}" if v < 10 else f"{v:.0f}", (p, v), textcoords="offset points", xytext=(6, -3), fontsize=7)
for name, value in PAPER_TABLE4.items():
    axes[0].plot(int(name.split("/")[1]), value, "kx", ms=8, mew=1.5)
for name, value in PAPER_P4.items():
    axes[0].plot(4, value, "k+", ms=9, mew=1.5)
axes[0].plot([], [], "kx", label="paper (Table 4)")
axes[0].plot([], [], "k+", label="paper (Table 1)")
for ax, label in zip(axes, ["Gflops per image (log)", "parameters, millions (log)"]):
    ax.set_xscale("log", base=2)
    ax.set_xticks(patches)
    ax.set_xticklabels([str(p) for p in patches])
    ax.invert_xaxis()
    ax.set_xlabel("patch size p  (T = 16, 64, 256 tokens)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
axes[1].set_yticks([30, 100, 200, 400, 700])
axes[1].set_yticklabels(["30", "100", "200", "400", "700"])
axes[1].yaxis.set_minor_formatter(NullFormatter())
axes[0].set_title("Compute grows 4x per halving of p")
axes[1].set_title("Parameters hardly change with p")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Our setting.** On Fashion-MNIST ($C = 1$, 10 classes) the Gflops are almost the paper's
# (only the first and last layers see $C$), and the DiT-S/2 we train in notebook 08 costs about
# 6 Gflops per image per forward pass:

# %%
for name in ("DiT-T/4", "DiT-T/2", "DiT-S/8", "DiT-S/4", "DiT-S/2"):
    ours = flops.dit_gflops(name, in_channels=1)
    with torch.device("meta"):
        n_params = flops.count_parameters(create_model(name, in_channels=1, num_classes=10))
    print(f"{name:<8} C=1: {ours:6.3f} Gflops, {n_params / 1e6:5.2f}M parameters")

# %% [markdown]
# **Gflops against CPU time.** Gflops are a machine-independent measure; wall-clock time is what
# you wait for. A forward pass of `TIMING_BATCH` images on this machine's CPU (a shared machine
# gives noisy numbers; the trend is what matters):

# %%
timings = []
for name in ("DiT-S/8", "DiT-S/4", "DiT-S/2"):
    m = create_model(name, in_channels=1, num_classes=10).eval()
    xb, tb, yb = torch.randn(TIMING_BATCH, 1, 32, 32), torch.randint(0, 1000, (TIMING_BATCH,)), torch.randint(0, 10, (TIMING_BATCH,))
    with torch.no_grad():
        m(xb, tb, yb)  # warm-up
        best = float("inf")
        for _ in range(TIMING_REPEATS):
            start = time.perf_counter()
            m(xb, tb, yb)
            best = min(best, time.perf_counter() - start)
    g = flops.dit_gflops(name, in_channels=1)
    timings.append((name, g, best))
    print(f"{name}: {g:5.2f} Gflops/image, {1000 * best / TIMING_BATCH:7.2f} ms/image, "
          f"{g * TIMING_BATCH / best:6.1f} GMAC/s")

# %% [markdown]
# Small models use the CPU less efficiently (the matrices are too small to keep it busy), so time
# grows a little slower than Gflops; on a GPU the gap is larger still, which is why notebook 08
# measures images per second rather than trusting Gflops alone.
#
# ## 6. The same weights as the official DiT
#
# `block="adaLN-Zero"` is exactly the official model, with the official module names
# (`x_embedder.proj`, `t_embedder.mlp`, `y_embedder.embedding_table`, `blocks.i.attn.qkv`,
# `blocks.i.adaLN_modulation.1`, `final_layer.linear`, ...), so a released checkpoint loads as it
# is: `minidit.load_official_dit("DiT-XL-2-256x256.pt")` (the file must be downloaded first, and
# pictures need the Stable Diffusion VAE; see the README). Here are the first state-dict keys:

# %%
for key, value in list(model.state_dict().items())[:12]:
    print(f"{key:<42} {tuple(value.shape)}")

# %% [markdown]
# ## 7. Your implementation, inside the whole model
#
# There is no new exercise here, but this is where your pieces meet. `course.use("student")`
# swaps in every exercise you have started (patchify, position and timestep embeddings, the
# blocks, ...) and leaves minidit's code for the rest; the DiT is built and run inside it with
# the same weights as minidit's, and we compare the outputs. A non-zero difference points at an
# exercise (`course.compare` tells you which).

# %%
import warnings

from minidit import course

torch.manual_seed(SEED)
reference = create_model("DiT-T/2", input_size=32, in_channels=1, num_classes=10).eval()
for p in reference.parameters():  # replace the zero init by random weights, so every layer matters in the comparison
    torch.nn.init.normal_(p, std=0.05)
with torch.no_grad():
    expected = reference(x, t, y)
with warnings.catch_warnings(record=True) as caught, course.use("student"):
    warnings.simplefilter("always")
    yours = create_model("DiT-T/2", input_size=32, in_channels=1, num_classes=10).eval()
    yours.load_state_dict(reference.state_dict())
    with torch.no_grad():
        got = yours(x, t, y)
for w in caught:
    if "course.use" in str(w.message):  # which exercises kept minidit's code
        print(w.message)
print(f"DiT-T/2 with your code: output {tuple(got.shape)}, max |yours - minidit| = {(got - expected).abs().max():.2e}")

# %% [markdown]
# ## Summary
#
# * DiT = patch embedding + fixed 2D sin-cos positions, $c = $ t-embedding $+$ y-embedding, $N$
#   blocks, an adaLN final layer and `unpatchify`; output $(N, 2C, I, I)$: noise and variance.
# * 12 configs: S / B / L / XL ($D$ = 384 / 768 / 1024 / 1152; depth 12 / 12 / 24 / 28) times
#   $p$ = 8 / 4 / 2. `minidit.flops` reproduces Table 1 (1.4, 5.6, 19.7, 29.1 Gflops at $p = 4$)
#   and Table 4 (S/2 6.06, B/2 23.01, L/2 80.71, XL/2 118.64, S/8 0.36).
# * Halving $p$ quadruples the tokens and a bit more than quadruples the Gflops, while the
#   parameters stay put: compute is the knob DiT scales.
#
# **Exercises:** all of ex05–ex11 show up in section 7; run `pytest exercises` to see where you
# stand. **Next:** notebook 06, classifier-free guidance.
