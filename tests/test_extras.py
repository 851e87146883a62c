"""A missing optional package is one line naming its extra and the install command, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from sttrl import extras
from sttrl.errors import ConfigError, MissingExtraError

# A subprocess in which the named top-level packages look uninstalled (a fake finder in front of the real ones),
# then runs a module as ``python -m`` would.
FAKE_UNINSTALLED = textwrap.dedent(
    """
    import runpy, sys

    class FakeUninstalledFinder:
        def __init__(self, names):
            self.names = set(names)

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    hidden, module, *args = sys.argv[1:]
    sys.meta_path.insert(0, FakeUninstalledFinder(hidden.split(",")))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    """
)


def run_without(packages: str, module: str, *args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", FAKE_UNINSTALLED, packages, module, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_message_require_and_load():
    assert extras.message("ray", "--executor ray") == "--executor ray needs the 'ray' extra: pip install -e '.[ray]'"
    assert extras.missing(["json", "sttrl_no_such_package", "sttrl_no_such_package.sub"]) == [
        "sttrl_no_such_package",
        "sttrl_no_such_package.sub",
    ]
    extras.require("json", extra="core")
    assert extras.load("json.decoder", extra="core").__name__ == "json.decoder"
    with pytest.raises(MissingExtraError) as info:
        extras.require("json", "sttrl_no_such_package", extra="track", what="run.tracker=x", hint="or drop it")
    assert str(info.value) == "run.tracker=x needs the 'track' extra: pip install -e '.[track]' (or drop it)"
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)  # servers pass it through
    with pytest.raises(MissingExtraError, match=r"^sttrl_no_such_package needs the 'x' extra"):
        extras.load("sttrl_no_such_package", extra="x")


def test_call_sites_name_their_extra(monkeypatch):
    """Every routed call site says which extra installs what it needs."""
    from bench import executors, stats
    from sttrl.control import registry
    from sttrl.eval.engines.ct2 import import_ctranslate2
    from sttrl.outward.sinks import Sink

    monkeypatch.setattr(extras.importlib.util, "find_spec", lambda name: None)
    cases = [
        (lambda: executors.check_executor("ray"), "--executor ray needs the 'ray' extra"),
        (lambda: stats.wilcoxon_p([0.1, 0.2]), "the benchmark's statistics needs the 'bench' extra"),
        (lambda: registry.get("tpe"), "controller 'tpe' needs the 'bench' extra"),
        (import_ctranslate2, "train.eval_engine=ct2 needs the 'ct2' extra: pip install -e '.[ct2]'"),
        (lambda: Sink("s3://bucket/prefix"), "a s3:// sink needs the 'sinks' extra"),
    ]
    for call, text in cases:
        with pytest.raises(MissingExtraError) as info:
            call()
        assert text in str(info.value)
        assert "\n" not in str(info.value)


def test_a_command_without_its_extra_is_one_line(tmp_path):
    """``python -m graph.run`` without langgraph: the import-time check prints one line, no traceback."""
    done = run_without("langgraph", "graph.run", "--preset", "debug", cwd=str(tmp_path))
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0
    assert lines == ["error: sttrl's LangGraph layer (graph/) needs the 'graph' extra: pip install -e '.[graph]'"]
    assert "Traceback" not in done.stderr + done.stdout


def test_bench_cli_without_ray_is_one_line(tmp_path):
    done = run_without(
        "ray", "bench", "--preset", "debug", "--controllers", "static", "--seeds", "1", "--executor", "ray",
        "--out", str(tmp_path / "b"), cwd=str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr + done.stdout
    out = (done.stdout + done.stderr).strip().splitlines()
    assert out == ["error: --executor ray needs the 'ray' extra: pip install -e '.[ray]'"], out
