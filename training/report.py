"""The human report: ``report.json`` rendered as Markdown."""

from __future__ import annotations

from training.robustness import table as robustness_table

SCORE_NOTES = {
    "msp": "max softmax probability",
    "max_logit": "largest logit",
    "energy": "logsumexp of the logits",
    "known_head": "sigmoid known-class head",
    "centroid": "minus distance to nearest class centroid",
    "prototypes": "minus distance to nearest of k-means centroids per class",
    "mahalanobis": "minus Mahalanobis distance, shared covariance",
    "knn": "minus k-th nearest training embedding distance",
}


def _combined_note(scores_cfg: dict) -> str:
    distance = "kNN distance" if scores_cfg["combined_distance"] == "knn" else "centroid distance"
    return f"**shipped**: {scores_cfg['combined_head_weight']:g} × head + " \
           f"{1 - scores_cfg['combined_head_weight']:g} × {distance}, standardised"


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def render_report(report: dict) -> str:
    shipped = report["shipped"]
    sets = list(shipped["unknown"])
    cls = shipped["open_set_classification"]
    lines = [
        f"# Open-set report: {report['name']}",
        "",
        f"Protocol: **{report['protocol']}**. Known classes: {', '.join(report['classes'])}; "
        f"anything else is `other`. Threshold {report['threshold']:.4f} on the combined score, chosen to "
        f"accept {_pct(report['target_tpr'])} of the known validation images "
        f"({_pct(report['val_accepted'])} accepted).",
        "",
        "## Shipped decision (test data)",
        "",
        f"- known-class accuracy (argmax, test {', '.join(report['classes'])}): **{_pct(shipped['known_accuracy'])}**",
        f"- knowns accepted at the threshold: {_pct(shipped['known_accepted'])}",
        f"- open-set ({len(report['classes'])} + other, knowns + {cls['unknown_set']}): accuracy "
        f"{_pct(cls['accuracy'])}, macro-F1 **{cls['macro']['f1']:.4f}**",
        "",
        "| unknowns | AUROC | AUPR-in | AUPR-out | FPR@95 %TPR | OSCR | accepted as known |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sets:
        u = shipped["unknown"][name]
        lines.append(f"| {name} | {u['auroc']:.4f} | {u['aupr_in']:.4f} | {u['aupr_out']:.4f} | "
                     f"{u['fpr_at_95tpr']:.4f} | {u['oscr']:.4f} | {_pct(u['accepted'])} |")
    lines += ["", "### Per class", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for label, row in cls["per_class"].items():
        lines.append(f"| {label} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |")
    lines += ["", "### Confusion matrix (rows: truth, columns: decision)", "",
              "| | " + " | ".join(cls["labels"]) + " |", "|---" * (len(cls["labels"]) + 1) + "|"]
    for label, row in zip(cls["labels"], cls["confusion_matrix"], strict=True):
        lines.append(f"| **{label}** | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "## Every score side by side (AUROC / FPR@95 %TPR; higher score = more known)", "",
              "| score | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
    notes = {**SCORE_NOTES, "combined": _combined_note(report["config"]["scores"])}
    for score, per_set in report["scores"].items():
        cells = [f"{per_set[s]['auroc']:.4f} / {per_set[s]['fpr_at_95tpr']:.3f}" for s in sets]
        lines.append(f"| {score} ({notes.get(score, '')}) | " + " | ".join(cells) + " |")
    if report.get("robustness"):
        shifted = report["robustness"]
        lines += ["", "## Shift benchmark (people's pictures; `openset robustness`)", "",
                  f"{shifted['samples']['known']} known and {shifted['samples']['unknown']} unknown test digits per "
                  "change and severity, drawn as dark ink on paper, changed, encoded as PNG or JPEG, then through "
                  "the service's preprocessing and the ONNX graph, at the shipped threshold. Per change: the mean "
                  "over severities 1-3. Design choices looked only at known digits under the `tuning` changes; the "
                  "`held_out` changes are unseen.", "", *robustness_table(shifted)]
    if report.get("printed"):
        printed = report["printed"]
        passed = ", ".join(f"{k} ×{v}" for k, v in list(printed["letters_passed"].items())[:12]) or "none"
        lines += ["", "## Printed characters (fonts training never saw)", "",
                  f"Letters and the known digits of the stroke fonts {', '.join(printed['fonts'])} (never used in "
                  f"training), printed dark on white at pen widths {', '.join(map(str, printed['pens']))} of the page, "
                  "through the service's preprocessing and the graph at the threshold. O, o, I and l are not counted "
                  "(they are a 0 and a 1).", "",
                  f"- letters answered `other`: **{_pct(printed['letters_refused'])}** of {printed['letters']}",
                  f"- known digits answered right: **{_pct(printed['digits_right'])}** of {printed['digits']}",
                  f"- letters let through, most often: {passed}"]
    parity = report["parity"]
    lines += [
        "",
        "## Export",
        "",
        f"ONNX Runtime ({parity['weights']} weights) vs torch over {parity['samples']} test images: "
        f"max abs difference {max(parity['max_abs_diff'].values()):.2e}, identical decisions: "
        f"{parity['identical_decisions']} ({100 * parity['decisions_agreeing']:.2f} % agreeing). An image alone "
        f"and in a shared call: outputs apart by at most {parity['batch_spread']:.1e}.",
    ]
    if report.get("figures"):
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({path})" for name, path in report["figures"].items()]
    return "\n".join(lines) + "\n"
