"""The lab: training, evaluation, calibration, explanation and ensemble fitting, built on ``worker.detectors``.

Serving code (the pipeline, the tasks, the detectors) never imports this package; it imports them
(``tests/unit/test_import_graph.py`` checks both).
"""
