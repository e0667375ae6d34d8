"""Tools that use minidit and that minidit never imports: the measurements behind the README's numbers.

bench.py              `python -m minidit.tools.bench`: training-step and sampling speed (README "Training speed")
scaling.py            `python -m minidit.tools.scaling`: many GPUs, one run per process count
experiments.py        `python -m minidit.tools.experiments`: notebook 08's runs (parts A-C) and tables
latent_experiment.py  `python -m minidit.tools.latent_experiment`: notebook 10's latent vs pixel DiT
"""
