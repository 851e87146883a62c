"""The house's import rules for sttrl and tools: the torch-free modules import without torch, ``sttrl.SttEnv`` loads
the environment on first use, and scripts/check_imports.py finds no circle and no unexplained function-level import
in sttrl/ or tools/."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TORCH_FREE = (
    "sttrl",
    "sttrl.config",
    "sttrl.rundir",
    "sttrl.keys",
    "sttrl.io",
    "sttrl.env.actions",
    "sttrl.env.decision",
    "sttrl.env.phases",
    "sttrl.env.episode",
    "sttrl.env.instances",
    "sttrl.env.reward",
    "sttrl.eval.engines",
    "sttrl.eval.result",
    "sttrl.train.blocks",
    "sttrl.judge.integrity",
    "sttrl.control.registry",
    "sttrl.control.spec",
    "sttrl.control.classical",
    "sttrl.control.schedule",
    "sttrl.control.prompting",
    "sttrl.control.prompt_facts",
    "sttrl.control.prompts",
    "sttrl.control.run",
    "sttrl.outward.trajectory",
    "sttrl.outward.sinks",
    "sttrl.outward.publish",
    "sttrl.outward.tracking",
    "sttrl.outward.sync",
    "sttrl.outward.export",
    "tools",
)

CHILD = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
    heavy = [m for m in ("torch", "transformers", "ctranslate2", "datasets", "fsspec") if m in sys.modules]
    if heavy:
        sys.exit(f"importing {name} loaded {', '.join(heavy)}")
import sttrl
assert "torch" not in sys.modules
env = sttrl.SttEnv  # resolved on first use: the environment (and torch) load now
assert env.__name__ == "SttEnv" and sttrl.make_env.__name__ == "make_env" and "torch" in sys.modules
print("ok")
"""


def test_torch_free_modules_import_without_torch():
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *TORCH_FREE], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_no_circle_and_every_function_level_import_says_why_in_sttrl_and_tools():
    spec = importlib.util.spec_from_file_location("check_imports", ROOT / "scripts" / "check_imports.py")
    assert spec is not None and spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    cycles, unexplained = check.analyse(ROOT)
    ours = ("sttrl", "tools")
    assert [c for c in cycles if any(m.split(".")[0] in ours for m in c)] == []
    assert [u for u in unexplained if u.split("/")[0] in ours] == []
