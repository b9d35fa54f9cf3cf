"""``fakescan evaluate --report DIR``: metrics.json, a classification report TSV and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from worker.lab.evaluate import CLEAN, Scored


def write_report(folder: Path, summary: dict[str, Any], results: dict[str, Scored]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "metrics.json", folder / "classification_report.tsv"]
    written[0].write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    written[1].write_text(_classification_tsv(summary))
    ranked = {name: scored for name, scored in results.items() if len(set(scored.labels)) == 2}
    if ranked:
        written += [_roc(folder, ranked), _precision_recall(folder, ranked)]
    clean = results[CLEAN]
    written += [_confusion(folder, summary), _histogram(folder, clean, summary["threshold"])]
    return written


def _classification_tsv(summary: dict[str, Any]) -> str:
    rows = ["condition\tclass\tprecision\trecall\tf1\tsupport"]
    conditions = {CLEAN: summary, **summary.get("perturbations", {})}
    for name, metrics in conditions.items():
        for label, values in metrics["per_class"].items():
            rows.append(f"{name}\t{label}\t{values['precision']:.4f}\t{values['recall']:.4f}\t"
                        f"{values['f1']:.4f}\t{values['support']}")
        rows.append(f"{name}\taccuracy\t\t\t{metrics['accuracy']:.4f}\t{metrics['n']}")
    return "\n".join(rows) + "\n"


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 4.5), dpi=100)
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return figure, axes


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _roc(folder: Path, results: dict[str, Scored]) -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    figure, axes = _figure("ROC (positive class: fake)", "false-positive rate", "true-positive rate")
    for name, scored in results.items():
        fpr, tpr, _ = roc_curve(scored.labels, scored.scores)
        axes.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(scored.labels, scored.scores):.4f})")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.legend(loc="lower right", fontsize="small")
    return _save(figure, folder / "roc.png")


def _precision_recall(folder: Path, results: dict[str, Scored]) -> Path:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    figure, axes = _figure("Precision-recall (positive class: fake)", "recall", "precision")
    for name, scored in results.items():
        precision, recall, _ = precision_recall_curve(scored.labels, scored.scores)
        axes.plot(recall, precision, label=f"{name} (AP {average_precision_score(scored.labels, scored.scores):.4f})")
    axes.legend(loc="lower left", fontsize="small")
    return _save(figure, folder / "precision_recall.png")


def _confusion(folder: Path, summary: dict[str, Any]) -> Path:
    matrix = np.asarray(summary["confusion_matrix"]["rows_true_cols_predicted"])
    figure, axes = _figure(f"Confusion matrix (threshold {summary['threshold']:.3g})", "predicted", "true")
    axes.imshow(matrix, cmap="Blues")
    labels = summary["confusion_matrix"]["labels"]
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    for (row, column), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        axes.text(column, row, str(value), ha="center", va="center", color=colour)
    return _save(figure, folder / "confusion_matrix.png")


def _histogram(folder: Path, scored: Scored, threshold: float) -> Path:
    figure, axes = _figure("Scores by true class", "P(fake)", "images")
    labels, scores = np.asarray(scored.labels), np.asarray(scored.scores)
    bins = np.linspace(0, 1, 41)
    for value, name in ((0, "real"), (1, "fake")):
        axes.hist(scores[labels == value], bins=bins, alpha=0.6, label=name)
    axes.axvline(threshold, color="black", linestyle="--", label="threshold")
    axes.set_yscale("log")
    axes.legend(fontsize="small")
    return _save(figure, folder / "score_histogram.png")
