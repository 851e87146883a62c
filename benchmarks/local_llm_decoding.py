"""Constrained decoding of a controller decision with a local model: lm-format-enforcer (what sttrl
uses) against outlines and xgrammar, and unconstrained generation, on the same prompts.

Prints, per method: decisions that parse into a valid ``Decision`` with an enabled action, answers
that ended on their own, mean / max seconds per decision, distinct actions. The prompts are the
real controller prompts (``graph.agents.build_messages``) for varied observations of the given
preset, plus the local model's JSON hint. outlines and xgrammar are not project dependencies:
install them aside (``pip install --target DIR outlines==1.3.3``; ``pip install --no-deps --target
DIR xgrammar==0.2.8 apache-tvm-ffi``) and pass ``--extra-path DIR`` (appended to sys.path).

    python benchmarks/local_llm_decoding.py --model smollm2-135m --n 6 --extra-path /tmp/llm-cmp/outlines
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def observations(n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        wer = 1.0 - 0.1 * i
        rows.append(
            dict(
                step=i,
                global_step=20 * i,
                lr=1e-3 * (2 ** ((i % 3) - 1)),
                batch_size=8 * (1 + i % 2),
                grad_accum=1,
                freeze_layers=i % 3,
                max_freeze_layers=4,
                train_loss=3.0 - 0.3 * i + 0.2 * (i % 2),
                wer=wer,
                cer=wer * 0.7,
                best_wer=min(1.0, wer + 0.02),
                previous_wer=wer + 0.05 * (-1) ** i,
                memory_gb=1.2 + 0.1 * i,
                status="ok" if i != 3 else "nan",
            )
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m", help="what follows local: (default smollm2-135m)")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--n", type=int, default=6, help="decisions per method")
    p.add_argument("--max-rationale-chars", type=int, default=200)
    p.add_argument("--extra-path", action="append", default=[], help="site dir with outlines / xgrammar")
    p.add_argument("--methods", default="lmfe,outlines,xgrammar,none")
    args = p.parse_args()
    sys.path.extend(args.extra_path)

    import torch

    from graph.agents import Decision, build_messages, load_prompt
    from graph.local_llm import build_local_chat_model, json_skeleton
    from sttrl.config import load_config
    from sttrl.llm.constrained import bound_strings, chat_prompt_ids, generate

    torch.set_num_threads(2)
    cfg = load_config(args.preset)
    chat = build_local_chat_model(args.model)
    loaded = chat.loaded
    print(
        f"model {args.model}: loaded in {loaded.load_seconds:.1f} s, "
        f"{loaded.model.num_parameters() / 1e6:.1f} M parameters"
    )
    schema = bound_strings(Decision.model_json_schema(), args.max_rationale_chars)
    hint = load_prompt("local_json").format(skeleton=json_skeleton(schema)).strip()
    roles = {"system": "system", "human": "user"}
    prompts = []
    for o in observations(args.n):
        turns = [{"role": roles[m.type], "content": str(m.content)} for m in build_messages(o, [], cfg)]
        prompts.append(chat_prompt_ids(loaded, turns + [{"role": "system", "content": hint}]))
    budget = 16 + 2 * (len("action") + 8 + 4) + args.max_rationale_chars + 40

    def run_lmfe(ids: list[int]) -> tuple[str, bool]:
        g = generate(loaded, ids, schema=schema, max_string_chars=args.max_rationale_chars)
        return g.text, g.finished

    def run_none(ids: list[int]) -> tuple[str, bool]:
        g = generate(loaded, ids, max_new_tokens=budget)
        return g.text, g.finished

    def hf_generate(ids: list[int], processors: list[Any]) -> tuple[str, bool]:
        tok = loaded.tokenizer
        x = torch.tensor([ids])
        with torch.inference_mode():
            out = loaded.model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=budget,
                logits_processor=processors,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        new = out[0, len(ids) :].tolist()
        return tok.decode(new, skip_special_tokens=True), bool(new) and new[-1] == tok.eos_token_id

    def make_xgrammar() -> Callable[[list[int]], tuple[str, bool]]:
        import xgrammar as xgr
        from xgrammar.contrib.hf import LogitsProcessor

        info = xgr.TokenizerInfo.from_huggingface(loaded.tokenizer, vocab_size=loaded.model.config.vocab_size)
        compiled = xgr.GrammarCompiler(info).compile_json_schema(json.dumps(schema), any_whitespace=False)
        return lambda ids: hf_generate(ids, [LogitsProcessor(compiled)])

    def make_outlines() -> Callable[[list[int]], tuple[str, bool]]:
        import outlines

        model = outlines.from_transformers(loaded.model, loaded.tokenizer)
        gen = outlines.Generator(model, outlines.json_schema(json.dumps(schema)))

        def run(ids: list[int]) -> tuple[str, bool]:
            text = gen(loaded.tokenizer.decode(ids), max_new_tokens=budget)
            return text, True

        return run

    makers: dict[str, Callable[[], Callable[[list[int]], tuple[str, bool]]]] = {
        "lmfe": lambda: run_lmfe,
        "none": lambda: run_none,
        "xgrammar": make_xgrammar,
        "outlines": make_outlines,
    }
    allowed = set(cfg.env.actions)
    print(f"{args.n} decisions per method, preset {args.preset}, greedy, rationale <= {args.max_rationale_chars} chars")
    print(f"{'method':10} {'setup s':>8} {'valid':>7} {'ended':>6} {'mean s':>7} {'max s':>7}  actions")
    for name in args.methods.split(","):
        try:
            t0 = time.perf_counter()
            fn = makers[name]()
            setup = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - a missing optional library: say so, go on
            print(f"{name:10} unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            continue
        secs, valid, ended, actions = [], 0, 0, []
        for ids in prompts:
            t = time.perf_counter()
            text, done = fn(ids)
            secs.append(time.perf_counter() - t)
            ended += done
            try:
                d = Decision.model_validate_json(text)
                valid += d.action.value in allowed
                actions.append(d.action.value)
            except ValueError:
                actions.append("invalid")
        print(
            f"{name:10} {setup:8.2f} {valid:>3}/{len(prompts):<3} {ended:>3}/{len(prompts):<2} "
            f"{statistics.mean(secs):7.2f} {max(secs):7.2f}  {','.join(actions)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
