"""tinyprune.runtime imports neither torch nor TensorFlow (it must install alone on a Pi)."""

from __future__ import annotations

import subprocess
import sys


def test_runtime_modules_import_no_torch_or_tensorflow() -> None:
    code = (
        "import sys, numpy as np\n"
        "import tinyprune.runtime.hr as hr, tinyprune.runtime.hrv, tinyprune.runtime.unsupervised\n"
        "t = np.arange(600) / 30.0\n"
        "hr.estimate_hr(np.sin(2 * np.pi * 1.2 * t), 30.0)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "", out.stdout
