"""The batch run's report: `summary.json` and a self-contained `report.html`.

The report shows, in this order: which notebooks ran and how long they took; the results table that a
notebook stored under the key `results_table` of its metrics.json (per model: per-task main metrics
and delta_m); every notebook's key numbers; and the figures the notebooks saved as PNG (embedded) or
as plotly HTML fragments (plotly.js inlined once, so the report works offline).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from densemtl_lab.atomic import write_json_atomic, write_text_atomic

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f2f2f2; } td.name, th.name { text-align: left; }
.ok { color: #1a7f37; } .failed { color: #c62828; font-weight: bold; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 90%; }
img { max-width: 100%; }
"""

DELTA_M_TEXT = (
    "delta_m is the mean relative change of each task's main metric against its single-task "
    "baseline, in percent, signed so that positive is better: (100/T) sum_t +-(M_t - B_t) / B_t "
    "(+ for mIoU and F1, - for RMSE and angle errors)."
)


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"semseg": {"mIoU": 0.5}} -> {"semseg/mIoU": 0.5}; lists and tables are left out."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[name] = value
    return flat


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def _table(rows: list[dict[str, Any]], name_columns: int = 1) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    head = "".join(
        f'<th class="name">{html.escape(c)}</th>' if i < name_columns else f"<th>{html.escape(c)}</th>"
        for i, c in enumerate(columns)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="name">{_format(row.get(c))}</td>' if i < name_columns else f"<td>{_format(row.get(c))}</td>"
            for i, c in enumerate(columns)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _figures(folder: Path) -> tuple[list[str], bool]:
    """HTML for the PNG and plotly-fragment figures in `folder`; whether plotly.js is needed."""
    parts, needs_plotly = [], False
    for path in sorted(folder.glob("*.png")):
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{html.escape(path.stem)}</figcaption></figure>")
    for path in sorted(folder.glob("*.plotly.html")):
        parts.append(f"<figure>{path.read_text()}<figcaption>{html.escape(path.stem)}</figcaption></figure>")
        needs_plotly = True
    return parts, needs_plotly


def render_report(run_dir: Path, summary: dict[str, Any]) -> str:
    """The report page as one HTML string."""
    output_dir = Path(summary["parameters"]["OUTPUT_DIR"])
    notebooks = summary["notebooks"]
    status_rows = [{"notebook": nb["name"], "status": nb["status"], "seconds": nb["seconds"],
                    "error": nb["error"]} for nb in notebooks]
    sections = [
        f"<h1>densemtl-lab batch run: profile {html.escape(summary['profile'])}</h1>",
        f"<p>{len(notebooks)} notebook(s) in {summary['seconds']:.0f} s; "
        f"run folder <code>{html.escape(str(run_dir))}</code>.</p>",
        "<h2>Notebooks</h2>",
        _table(status_rows).replace("<td>ok</td>", '<td class="ok">ok</td>')
        .replace("<td>failed</td>", '<td class="failed">failed</td>'),
    ]
    tables = [(nb["name"], nb["metrics"]["results_table"]) for nb in notebooks
              if isinstance(nb["metrics"].get("results_table"), list) and nb["metrics"]["results_table"]]
    if tables:
        sections.append("<h2>Results</h2>")
        sections.append(f"<p>{html.escape(DELTA_M_TEXT)}</p>")
        for name, rows in tables:
            sections.append(f"<h3>from {html.escape(name)}</h3>{_table(rows, name_columns=2)}")
    needs_plotly = False
    for nb in notebooks:
        flat = flatten({k: v for k, v in nb["metrics"].items() if k != "results_table"})
        figures, plotly_here = _figures(output_dir / nb["name"] / "figures")
        needs_plotly |= plotly_here
        if not flat and not figures:
            continue
        sections.append(f"<h2>{html.escape(nb['name'])}</h2>")
        if flat:
            sections.append(_table([{"quantity": k, "value": v} for k, v in flat.items()]))
        sections.extend(figures)
    script = ""
    if needs_plotly:
        from plotly.offline import get_plotlyjs

        script = f"<script>{get_plotlyjs()}</script>"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>densemtl-lab report</title>"
            f"<style>{_STYLE}</style>{script}</head><body>{''.join(sections)}</body></html>")


def write_report(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Write `summary.json` and `report.html` into `run_dir`; returns the report's path."""
    write_json_atomic(run_dir / "summary.json", summary)
    return write_text_atomic(run_dir / "report.html", render_report(run_dir, summary))
