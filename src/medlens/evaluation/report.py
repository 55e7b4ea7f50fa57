"""``report.html``: one self-contained page (figures embedded as PNG) for a clinical reader."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medlens._fs import atomic_write_text

HEADLINE = ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "pr_auc")


@dataclass(frozen=True)
class Case:
    """A test case for the gallery: a 2D view, what was true, what was predicted, and where the
    model looked (a Grad-CAM map of the predicted class on the same view, when known)."""

    image: NDArray[np.float32]
    title: str
    correct: bool
    relevance: NDArray[np.float32] | None = None


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _figure().close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _curves(metrics: dict[str, Any]) -> str:
    plt = _figure()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, c in metrics["curves"].items():
        if name == "reliability":
            continue
        roc.plot(c["fpr"], c["tpr"], label=name)
        pr.plot(c["recall"], c["precision"], label=name)
    test = metrics["test"]
    if metrics["task"] == "binary":
        roc.plot(
            1 - test["specificity"],
            test["sensitivity"],
            "ko",
            label=f"operating point (threshold {metrics['threshold']:.3f}, from validation)",
        )
    roc.plot([0, 1], [0, 1], ":", color="grey")
    roc.set(
        xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC (test AUC {test['auc']:.3f})"
    )
    pr.set(
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        title=f"Precision-recall (AP {test['pr_auc']:.3f})",
    )
    roc.legend(fontsize=8, loc="lower right")
    pr.legend(fontsize=8, loc="lower left")
    return _png(fig)


def _confusion_and_calibration(metrics: dict[str, Any]) -> str:
    plt = _figure()
    fig, (cm_ax, cal) = plt.subplots(1, 2, figsize=(10, 4.2))
    cm = np.asarray(metrics["test"].get("confusion_matrix", [[0]]))
    cm_ax.imshow(cm, cmap="Blues")
    classes = metrics["classes"] if cm.shape[0] == len(metrics["classes"]) else []
    for (i, j), v in np.ndenumerate(cm):
        cm_ax.text(
            j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black"
        )
    cm_ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xlabel="predicted",
        ylabel="true",
        title="Confusion matrix (test)",
    )
    cm_ax.set_xticklabels(classes, rotation=30)
    cm_ax.set_yticklabels(classes)
    bins = metrics["curves"]["reliability"]
    cal.plot([0, 1], [0, 1], ":", color="grey")
    cal.plot(
        [b["confidence"] for b in bins],
        [b["observed"] for b in bins],
        "o-",
        label=f"calibrated (T={metrics['temperature']:.2f})",
    )
    cal.set(
        xlabel="predicted probability",
        ylabel="observed frequency",
        title=f"Calibration (ECE {metrics['test']['ece']:.3f}; "
        f"before scaling {metrics['test']['ece_uncalibrated']:.3f})",
    )
    cal.legend(fontsize=8)
    return _png(fig)


def _learning_curves(history: Sequence[dict[str, Any]]) -> str:
    if not history:
        return "<p>no training history</p>"
    plt = _figure()
    fig, (loss, auc) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [int(h["epoch"]) for h in history]
    loss.plot(epochs, [float(h["train_loss"]) for h in history], label="train")
    loss.plot(epochs, [float(h["val_loss"]) for h in history], label="validation")
    loss.set(xlabel="epoch", title="Loss")
    loss.legend()
    auc.plot(epochs, [float(h["val_auc"]) for h in history], color="C2")
    best = [int(h["epoch"]) for h in history if str(h["best"]) == "True"]
    if best:
        auc.axvline(best[-1], ls=":", color="k", label=f"kept: epoch {best[-1]}")
        auc.legend()
    auc.set(xlabel="epoch", title="Validation AUC")
    return _png(fig)


def _gallery(cases: Sequence[Case]) -> str:
    if not cases:
        return ""
    plt = _figure()
    cols = 8
    rows = (len(cases) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, case in zip(axes.ravel(), cases, strict=False):
        ax.imshow(case.image, cmap="gray")
        if case.relevance is not None:
            ax.imshow(case.relevance, cmap="inferno", alpha=0.55 * np.clip(case.relevance, 0, 1))
        ax.set_title(case.title, fontsize=6.5, color="green" if case.correct else "red")
    return _png(fig)


def _table(metrics: dict[str, Any]) -> str:
    test, ci = metrics["test"], metrics["test"].get("ci", {})
    val = metrics.get("val", {})
    rows = []
    for key in HEADLINE:
        if key not in test:
            continue
        low_high = ci.get(key)
        interval = f"{low_high[0]:.3f} – {low_high[1]:.3f}" if low_high else ""
        v = val.get(key)
        rows.append(
            f"<tr><td>{key}</td><td><b>{test[key]:.3f}</b></td><td>{interval}</td>"
            f"<td>{'' if v is None else f'{v:.3f}'}</td></tr>"
        )
    return (
        "<table><tr><th>metric</th><th>test</th><th>95% CI (bootstrap)</th><th>validation</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _typicality(metrics: dict[str, Any]) -> str:
    """The share of each split's images unlike the training images (medlens.data.typicality)."""
    found = metrics.get("typicality")
    if not found:
        return ""
    shares = ", ".join(
        f"{html.escape(split)} {100 * share:.1f} %"
        for split, share in found["unlike_training"].items()
        if share is not None
    )
    where = "in their pixels or in the model's features" if found.get("features") else "in pixels"
    return (
        f"<p class='note'>Images unlike the training images ({where}, further from the training "
        "images than all but 1 % of validation's; predictions flag such inputs as "
        f"<code>unlike_training</code>): {shares}.</p>"
    )


def _shift(metrics: dict[str, Any]) -> str:
    """The split-shift table (medlens.data.shift) and what a flagged row means."""
    shifts = metrics.get("shift") or []
    if not shifts:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(s['split'])}</td><td>{html.escape(s['label'])}</td>"
        f"<td>{s['n']} ({s['n_reference']})</td><td>{'<b>' if s['flagged'] else ''}{s['auc']:.2f}"
        f"{'</b>' if s['flagged'] else ''} ({s['ci'][0]:.2f} – {s['ci'][1]:.2f})</td></tr>"
        for s in shifts
    )
    flagged = [s for s in shifts if s["flagged"]]
    meaning = (
        f"<p><b>{len(flagged)} of {len(shifts)}</b> differ (bold: the 95% CI reaches "
        "0.6): those images do not look like the ones the operating point was chosen on, "
        "and sensitivity or specificity may not carry over from validation.</p>"
        if flagged
        else "<p>No split differs from training's images.</p>"
    )
    return (
        "<h2>Split shift</h2><p class='note'>How well a cross-validated linear classifier "
        "tells a split's images from training's, class by class (AUC; 0.5: alike).</p>"
        "<table><tr><th>split</th><th>class</th><th>images (train)</th><th>AUC (95% CI)</th></tr>"
        + rows
        + "</table>"
        + meaning
    )


def write_report(
    path: str | Path,
    metrics: dict[str, Any],
    *,
    title: str,
    history: Sequence[dict[str, Any]] = (),
    cases: Sequence[Case] = (),
    notes: Sequence[str] = (),
) -> Path:
    """Render the report and write it atomically."""
    threshold = metrics["threshold"]
    op = (
        f"threshold {threshold:.4f}"
        if isinstance(threshold, float)
        else "argmax"
        if threshold is None
        else "per-label thresholds"
    )
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
th{{background:#f3f3f3}}img{{max-width:100%}}.note{{color:#555;font-size:0.9em}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Task: {metrics["task"]}; classes: {html.escape(", ".join(metrics["classes"]))};
test n = {metrics["test"]["n"]}. Operating point chosen on validation ({metrics["threshold_method"]}, {op})
and applied unchanged to test; probabilities calibrated by temperature scaling fitted on validation.</p>
{_table(metrics)}
{"".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)}
{_typicality(metrics)}
{_shift(metrics)}
<h2>ROC and precision-recall</h2>{_curves(metrics)}
<h2>Confusion matrix and calibration</h2>{_confusion_and_calibration(metrics)}
<h2>Learning curves</h2>{_learning_curves(history)}
<h2>Test cases (green: correct, red: wrong)</h2>
<p class="note">{"Overlay: Grad-CAM of the predicted class (where the model looked); run `medlens explain` for faithfulness figures." if any(c.relevance is not None for c in cases) else ""}</p>
{_gallery(cases)}
</body></html>
"""
    atomic_write_text(path, body)
    return Path(path)
