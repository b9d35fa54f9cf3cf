"""Fitting the one-class ensemble (``fakescan fit-ensemble``); its scoring stays in ``worker.detectors.ensemble``."""
