"""Evaluation: how good are the samples? (notebook 07)

metrics.py    FID, precision/recall, sFID, Inception-style score, class accuracy (and the checks)
evaluator.py  the small Fashion-MNIST classifier whose features the metrics use
evaluate.py   `python -m minidit.evaluate`: score a checkpoint or a folder of samples
"""
