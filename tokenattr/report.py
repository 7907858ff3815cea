"""Paper tables from the evaluation scripts' JSON results: methods × metrics, ×100, the best value in bold.

Each results file is recognised by its keys; one table gathers any mix of them:

* ``ViT/imagenet_seg_eval.py`` (``{method}.json``): pixel accuracy, mIoU, mAP (higher is better);
* ``ViT/perturbation_eval_from_hdf5.py`` (``{method}_{vis_class}_{positive|negative}.json``): the perturbation AUC,
  lower is better for the positive test (most relevant pixels removed first), higher for the negative one;
* ``BERT/bert_pertub_movie.py`` / ``bert_pertub_20ng.py`` (``{"results": {method: ...}}``): the same AUCs per test;
* ``BERT/bert_pipeline.py`` (``{method}.json`` or ``token_f1.json``): token F1 at each k (instance macro, ERASER's
  number), higher is better; the random ranking of ``token_f1.json`` is a reference row, never bold.

    table = results_table(["seg/ours-h.json", "seg/rollout.json"])
    print(to_markdown(table)); print(to_latex(table))
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from .methods import METHODS
from .viz import latex_escape

AUC_KEYS = {"original": "auc_original", "chefer": "auc_chefer"}  # the two conventions of PerturbationCurve
SEGMENTATION_METRICS = {"pixel_accuracy": "pixel acc.", "mean_iou": "mIoU", "mean_ap": "mAP"}
RANDOM_ROW = "random ranking"  # bert_pipeline.py's floor in token_f1.json
VIS_CLASS_LABELS = {"top": "predicted", "target": "target"}  # the explained class, as the paper's tables say


@dataclass(frozen=True)
class Metric:
    """A column: its title and whether a larger value is better."""

    label: str
    higher_is_better: bool


@dataclass
class Table:
    """``values[method][metric]`` as fractions (printed ×100); ``references`` are rows shown but never bold."""

    values: dict[str, dict[Metric, float]] = field(default_factory=dict)
    references: set[str] = field(default_factory=set)

    @property
    def methods(self) -> list[str]:
        """Rows: registered methods in the registry's order, then the others as found, references last."""
        known = [name for name in METHODS if name in self.values]
        others = [name for name in self.values if name not in METHODS and name not in self.references]
        return known + others + [name for name in self.values if name in self.references]

    @property
    def metrics(self) -> list[Metric]:
        """Columns in the order they were first found."""
        return list(dict.fromkeys(metric for row in self.values.values() for metric in row))

    def add(self, method: str, metric: Metric, value: float, source: str) -> None:
        row = self.values.setdefault(method, {})
        if metric in row and not math.isclose(row[metric], value, rel_tol=1e-12):
            raise ValueError(
                f"{source} gives {method} / {metric.label} = {value}, but an earlier file gave {row[metric]}; "
                "pass each result once"
            )
        row[metric] = float(value)


def _perturbation_metric(positive: bool, prefix: str = "", suffix: str = "") -> Metric:
    """The AUC column of a perturbation test: removing the most relevant input first (positive) should hurt
    accuracy fast, so lower is better there; removing the least relevant first (negative), higher is better."""
    words = (prefix, "pos. AUC" if positive else "neg. AUC", suffix)
    return Metric(" ".join(word for word in words if word), higher_is_better=not positive)


def _add_file(table: Table, data: dict, source: str, auc: str) -> None:
    """Add one results file's rows to ``table``; raise naming the file if its layout is not known."""
    auc_key = AUC_KEYS[auc]
    if "token_f1" in data and "method" in data:  # bert_pipeline.py, one method
        _add_token_f1(table, data["method"], data["token_f1"], source)
    elif "results" in data and all(isinstance(r, dict) and "token_f1" in r for r in data["results"].values()):
        for method, summary in data["results"].items():  # bert_pipeline.py's token_f1.json
            _add_token_f1(table, method, summary["token_f1"], source)
        if RANDOM_ROW in data:
            _add_token_f1(table, RANDOM_ROW, data[RANDOM_ROW], source)
            table.references.add(RANDOM_ROW)
    elif "results" in data and "positive" in data:  # the BERT perturbation scripts
        kind = "positive" if data["positive"] else "negative"
        title = str(data.get("test", "")).removesuffix(f"{kind} perturbation").strip()
        metric = _perturbation_metric(data["positive"], prefix=title)
        for method, result in data["results"].items():
            table.add(method, metric, result[auc_key], source)
    elif "metrics" in data and "method" in data:  # ViT/imagenet_seg_eval.py
        for key, label in SEGMENTATION_METRICS.items():
            table.add(data["method"], Metric(label, higher_is_better=True), data["metrics"][key], source)
    elif {"method", "test", auc_key} <= set(data):  # ViT/perturbation_eval_from_hdf5.py
        vis_class = VIS_CLASS_LABELS.get(data.get("vis_class"), data.get("vis_class"))
        metric = _perturbation_metric(data["test"] == "positive", suffix=f"({vis_class})" if vis_class else "")
        table.add(data["method"], metric, data[auc_key], source)
    else:
        raise ValueError(
            f"{source} is not a results file this report knows (keys: {', '.join(sorted(data)[:8])}); expected the "
            "JSON of ViT/imagenet_seg_eval.py, ViT/perturbation_eval_from_hdf5.py, BERT/bert_pipeline.py or the "
            "BERT perturbation scripts"
        )


def _add_token_f1(table: Table, method: str, token_f1: dict, source: str) -> None:
    for k in sorted(token_f1, key=int):
        table.add(method, Metric(f"F1@{k}", higher_is_better=True), token_f1[k]["instance_macro"]["f1"], source)


def results_table(paths: Iterable[str | PathLike], auc: str = "original") -> Table:
    """One table from the JSON results files ``paths`` (see the module docstring for the layouts read).

    Args:
        paths: results files; a method/metric given by two files must have the same value in both.
        auc: the perturbation AUC convention, ``"original"`` (the paper's repository, to 100% removed) or
            ``"chefer"`` (Chefer et al.'s, over the removed fractions only).
    """
    if auc not in AUC_KEYS:
        raise ValueError(f"auc must be one of {', '.join(AUC_KEYS)}, got {auc!r}")
    table = Table()
    paths = list(paths)
    if not paths:
        raise ValueError("no results files given; expected one or more JSON files of the evaluation scripts")
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"results file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"results file {path} is not valid JSON ({error})") from error
        if not isinstance(data, dict):
            raise ValueError(f"results file {path} holds a JSON {type(data).__name__}; expected an object")
        _add_file(table, data, str(path), auc)
    return table


def _cells(table: Table, digits: int) -> tuple[list[list[str | None]], list[list[bool]]]:
    """Each cell's printed value (×100, ``None`` where missing) and whether it is its column's best.

    The best is decided on the printed values, so equal printed numbers are bold together; references never are.
    """
    methods, metrics = table.methods, table.metrics
    printed = [
        [None if m not in table.values[name] else f"{100 * table.values[name][m]:.{digits}f}" for m in metrics]
        for name in methods
    ]
    bold = [[False] * len(metrics) for _ in methods]
    for col, metric in enumerate(metrics):
        candidates = [
            float(printed[row][col])
            for row, name in enumerate(methods)
            if printed[row][col] is not None and name not in table.references
        ]
        if not candidates:
            continue
        best = max(candidates) if metric.higher_is_better else min(candidates)
        for row, name in enumerate(methods):
            if printed[row][col] is not None and name not in table.references:
                bold[row][col] = float(printed[row][col]) == best
    return printed, bold


def _header(metric: Metric, up: str, down: str) -> str:
    return f"{metric.label} {up if metric.higher_is_better else down}"


def to_markdown(table: Table, digits: int = 2) -> str:
    """A Markdown table: one row per method, ×100 with ``digits`` decimals, each column's best in ``**bold**``,
    ↑/↓ marking whether higher or lower is better, ``–`` where a method has no value."""
    printed, bold = _cells(table, digits)
    lines = [
        "| method | " + " | ".join(_header(metric, "↑", "↓") for metric in table.metrics) + " |",
        "|---|" + "---:|" * len(table.metrics),
    ]
    for name, values, bolds in zip(table.methods, printed, bold):
        cells = ["–" if v is None else f"**{v}**" if b else v for v, b in zip(values, bolds)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(table: Table, digits: int = 2) -> str:
    """A LaTeX ``tabular`` (booktabs rules) of the same table as :func:`to_markdown`, best values in ``\\textbf``."""
    printed, bold = _cells(table, digits)
    header = " & ".join(
        latex_escape(metric.label) + (r" $\uparrow$" if metric.higher_is_better else r" $\downarrow$")
        for metric in table.metrics
    )
    lines = [
        "% needs \\usepackage{booktabs}",
        r"\begin{tabular}{l" + "r" * len(table.metrics) + "}",
        r"\toprule",
        f"Method & {header} \\\\",
        r"\midrule",
    ]
    first_reference = next((name for name in table.methods if name in table.references), None)
    for name, values, bolds in zip(table.methods, printed, bold):
        if name == first_reference:
            lines.append(r"\midrule")
        cells = ["--" if v is None else rf"\textbf{{{v}}}" if b else v for v, b in zip(values, bolds)]
        lines.append(f"{latex_escape(name)} & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


__all__ = ["AUC_KEYS", "Metric", "Table", "results_table", "to_latex", "to_markdown"]
