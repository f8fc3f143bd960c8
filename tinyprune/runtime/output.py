"""What ``tinyprune infer`` writes: JSON lines or CSV of the HR readings, a PNG plot, an HTML page.

Why: the plot is drawn with OpenCV (already in ``tinyprune[pi]``) so the Pi install needs no
plotting library; the HTML page embeds the PNG and the summary so one file can be shared.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from tinyprune.fileio import write_bytes_atomic, write_text_atomic

PLOT_W, PANEL_H, MARGIN = 960, 220, 48
READING_FIELDS = ("t", "hr", "sqi", "hr_method")


def readings_jsonl(result: dict[str, Any]) -> str:
    """One JSON object per HR reading, then one ``summary`` object."""
    lines = [json.dumps(r) for r in result["readings"]]
    summary = {k: v for k, v in result.items() if k not in ("bvp", "timestamps", "readings")}
    lines.append(json.dumps({"summary": summary}))
    return "\n".join(lines) + "\n"


def readings_csv(result: dict[str, Any]) -> str:
    """The HR readings as CSV (``t,hr,sqi,hr_method``)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=READING_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(result["readings"])
    return buf.getvalue()


def _panel(
    values: np.ndarray, t: np.ndarray, title: str, colour: tuple[int, int, int]
) -> np.ndarray:
    import cv2

    img = np.full((PANEL_H, PLOT_W, 3), 255, np.uint8)
    x0, x1, y0, y1 = MARGIN, PLOT_W - 16, 28, PANEL_H - 28
    cv2.rectangle(img, (x0, y0), (x1, y1), (160, 160, 160), 1)
    cv2.putText(img, title, (x0, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    ok = np.isfinite(values)
    if ok.sum() >= 2 and t[-1] > t[0]:
        v, tt = values[ok], t[ok]
        lo, hi = float(v.min()), float(v.max())
        hi = hi if hi > lo else lo + 1.0
        px = x0 + (tt - t[0]) / (t[-1] - t[0]) * (x1 - x0)
        py = y1 - (v - lo) / (hi - lo) * (y1 - y0)
        pts = np.stack([px, py], axis=1).round().astype(np.int32)
        cv2.polylines(img, [pts], False, colour, 1, cv2.LINE_AA)
        for val, y in ((hi, y0 + 10), (lo, y1)):
            cv2.putText(img, f"{val:.3g}", (2, y), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    label = f"{t[0]:.0f} s" if t.size else ""
    cv2.putText(img, label, (x0, PANEL_H - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    end = f"{t[-1]:.1f} s" if t.size else ""
    cv2.putText(img, end, (x1 - 50, PANEL_H - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    return img


def plot_png(result: dict[str, Any]) -> bytes:
    """PNG bytes: the BVP stream (top) and the HR readings (bottom) over time."""
    import cv2

    bvp = np.asarray(result["bvp"], np.float64)
    t = np.asarray(result["timestamps"], np.float64)
    rt = np.asarray([r["t"] for r in result["readings"]], np.float64)
    rh = np.asarray([r["hr"] for r in result["readings"]], np.float64)
    top = _panel(bvp, t, f"BVP ({result['method']})", (200, 60, 20))
    bottom = _panel(rh, rt, f"HR (bpm), overall {result['hr']:.1f}", (20, 20, 200))
    ok, png = cv2.imencode(".png", cv2.cvtColor(np.vstack([top, bottom]), cv2.COLOR_RGB2BGR))
    if not ok:
        msg = "OpenCV failed to encode the plot"
        raise RuntimeError(msg)
    return png.tobytes()


def html_page(result: dict[str, Any], png: bytes) -> str:
    """A self-contained HTML page: summary table and the embedded plot."""
    rows = [
        ("source", result.get("source")),
        ("method", result["method"]),
        ("heart rate (bpm)", f"{result['hr']:.1f}"),
        ("signal quality (SNR dB)", f"{result['sqi']:.1f}"),
        ("device HR (bpm)", result.get("device_hr")),
        ("frames", result["frames"]),
        ("frames per second (end to end)", result.get("frames_per_s")),
    ]
    rows += [(f"HRV {k}", v) for k, v in (result.get("hrv") or {}).items()]
    body = "\n".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    img = base64.b64encode(png).decode("ascii")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>tinyprune infer</title>"
        "<style>body{font-family:sans-serif}th{text-align:left;padding-right:1em}</style>"
        f"</head><body><h1>Heart rate from video</h1><table>{body}</table>"
        f"<p><img alt='BVP and HR over time' src='data:image/png;base64,{img}'></p></body></html>\n"
    )


def write_outputs(result: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``readings.jsonl``, ``readings.csv``, ``result.json``, ``plot.png``, ``infer.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_png(result)
    files = {
        "jsonl": write_text_atomic(out / "readings.jsonl", readings_jsonl(result)),
        "csv": write_text_atomic(out / "readings.csv", readings_csv(result)),
        "json": write_text_atomic(out / "result.json", json.dumps(result, indent=1)),
        "png": write_bytes_atomic(out / "plot.png", png),
    }
    files["html"] = write_text_atomic(out / "infer.html", html_page(result, png))
    return files
