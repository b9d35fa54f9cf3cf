"""Training, evaluation and calibration of detectors (worker role: imports torch)."""
