"""Time travel from Studio: through langgraph-sdk against ``langgraph dev``, a finished debug episode's state at
step 1 is given another decision (the update-state API on that past checkpoint), and the run that follows
trains block 2 from block 1's checkpoint (optimizer step count, weights and hyperparameters of block 1), not
from the latest weights."""

from __future__ import annotations

from test_studio import server  # noqa: F401 - the langgraph dev fixture (a free loopback port)

from sttrl.config import config_from_dict
from sttrl.env import episode
from sttrl.env.actions import Action
from sttrl.env.decision import Decided


def test_studio_edit_at_a_past_checkpoint_trains_from_that_block(server, data_cache, tmp_path):  # noqa: F811
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=server)
    tid = client.threads.create()["thread_id"]
    inp = {
        "preset": "debug",
        "agent": "static",
        "overrides": [
            f"data.cache_dir={data_cache}",
            f"run.out_dir={tmp_path / 'runs'}",
            "env.max_actions=3",
            "env.steps_per_action=2",
            "env.keep_checkpoints=0",
        ],
    }
    first = client.runs.wait(tid, "sttrl", input=inp)
    original = client.threads.get_state(tid)["values"]
    assert [r["action"] for r in original["records"]] == ["keep"] * 3 and first["judge"]
    after_1 = next(
        s
        for s in client.threads.get_history(tid, limit=200)
        if s["next"] == ["observe"] and s["values"].get("step") == 1 and len(s["values"]["records"]) == 1
    )
    v = after_1["values"]
    progress = episode.Progress.from_state(v)
    progress.observation = {**progress.observation, "step": 1, "steps_left": progress.max_actions - 1}
    pend = episode.pending(
        progress, Decided(Action.LR_DOWN, "edited in Studio", "studio"), config_from_dict(v["config"])
    )
    client.threads.update_state(
        tid,
        {
            "observation": progress.observation,
            "decision": pend.to_dict(),
            "hp": pend.hp_after,
            "train": None,
            "eval": None,
        },
        as_node="decide",
        checkpoint_id=after_1["checkpoint"]["checkpoint_id"],
    )
    client.runs.wait(tid, "sttrl", input=None)
    branch = client.threads.get_state(tid)["values"]
    recs = branch["records"]
    assert [r["action"] for r in recs] == ["keep", "lr_down", "keep"] and recs[1]["source"] == "studio"
    assert recs[0] == original["records"][0]
    # block 2 started from block 1's checkpoint: 2 optimizer steps before it, not the 6 of the latest weights
    assert recs[1]["train"]["global_step"] == 4 and recs[2]["train"]["global_step"] == 6
    assert recs[1]["hp_before"] == original["records"][0]["hp_after"]
    assert recs[1]["train"]["losses"] != original["records"][1]["train"]["losses"]
    assert branch["judge"]["passed_all_checks"] is True
    assert branch["final"]["sha256"] != original["final"]["sha256"]
