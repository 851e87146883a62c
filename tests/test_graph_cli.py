"""The options of ``python -m graph.run`` (graph.cli): which of ``--max-actions`` and ``--set env.max_actions`` wins,
stated in the help and in a note (issue 24 item 6: ``--set env.max_actions=0 --max-actions 2`` silently ran 2)."""

from __future__ import annotations

from graph.cli import build_parser, resolve, shortcut_notes


def test_the_shortcut_options_win_over_set_and_say_so():
    args = build_parser().parse_args(
        ["--preset", "debug", "--set", "env.max_actions=5", "--max-actions", "2", "--seed", "4", "--set", "run.seed=4"]
    )
    cfg = resolve(args)
    assert cfg.env.max_actions == 2 and cfg.run.seed == 4
    assert shortcut_notes(args) == ["--max-actions 2 wins over --set env.max_actions=5"]  # the same seed: no note


def test_the_help_states_the_precedence():
    text = " ".join(build_parser().format_help().split())
    assert "decisions per episode (wins over --set env.max_actions)" in text
    assert "(wins over --set env.steps_per_action)" in text and "run.seed (wins over --set run.seed)" in text
