"""Super-resolution: DiT conditioned on a degraded image instead of a class label (notebook 09).

DiT (Peebles & Xie 2023) conditions on a class label; super-resolution conditions on a whole image.

    degrade.py     the degradations: blur, resize filter, noise and JPEG, drawn per image (x4, x2 presets)
    model.py       SRDiT and its three ways to see the low-resolution image (concat, in-context,
                   cross-attention); exercise ex15's two pieces
    distortion.py  PSNR and SSIM
    experiment.py  training (minidit.train's step with an SR batch and loss), sampling, the evaluation
                   against bicubic and a regression baseline, the figures; `python -m minidit.superres`
"""
