"""The runtime and the ``infer`` / ``bench-runtime`` CLI path import no torch or TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
import tinyprune.runtime.pipeline, tinyprune.runtime.infer, tinyprune.runtime.bench
import tinyprune.runtime.output, tinyprune.runtime.vision, tinyprune.runtime.sources
bad = sorted(m for m in ("torch", "tensorflow", "onnx") if m in sys.modules)
print(",".join(bad))
"""


def test_runtime_modules_are_torch_free():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"runtime imported {out.stdout.strip()}"


def test_infer_path_with_torch_hidden(tmp_path):
    """With torch hidden, ``infer --help`` and ``bench-runtime --help`` still work."""
    hide = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'tensorflow'):\n"
        "            raise ImportError('hidden: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from tinyprune.cli import main\n"
        "for cmd in ('infer', 'bench-runtime'):\n"
        "    try:\n"
        "        main([cmd, '--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
    )
    out = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--method" in out.stdout and "--seconds" in out.stdout


@pytest.mark.parametrize("cmd", [["infer", "--method", "pos"]])
def test_no_torch_usage_error_is_exit_2(cmd):
    hide = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('hidden: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from tinyprune.cli import main\n"
        f"raise SystemExit(main({cmd!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True)
    assert out.returncode == 2 and "give exactly one of" in out.stderr
