"""Checkpoint averaging of the fine-tuning recipe (pom.recipe.checkpoints):
SpeechBrain's average_checkpoints over the N best or N last validated
checkpoints, saved apart so that final_checkpoint returns it and recovery
never resumes from it."""

import torch
from speechbrain.utils.checkpoints import Checkpointer

from pom.recipe.checkpoints import (
    AVERAGED_FOLDER,
    final_checkpoint,
    remove_averaged_checkpoint,
    save_averaged_checkpoint,
    select_checkpoints,
)


def modules():
    torch.manual_seed(0)
    return {"model": torch.nn.Linear(3, 2), "pt_model": torch.nn.Conv1d(2, 2, 3), "counter": torch.nn.Linear(1, 1)}


def state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def save_epochs(checkpointer, recoverables, wers, change=True):
    """One validated checkpoint per WER (weights changed before each when ``change``); their states."""
    states = []
    for i, wer in enumerate(wers):
        if change:
            with torch.no_grad():
                for module in recoverables.values():
                    for p in module.parameters():
                        p.copy_(torch.randn_like(p) * (i + 1))
        states.append({name: state(m) for name, m in recoverables.items()})
        checkpointer.save_checkpoint(meta={"WER": wer, "epoch": i + 1})
    return states


def test_identical_checkpoints_average_to_themselves(tmp_path):
    recoverables = modules()
    checkpointer = Checkpointer(tmp_path, recoverables)
    states = save_epochs(checkpointer, recoverables, [3.0, 2.0, 1.0], change=False)
    with torch.no_grad():  # the live weights change: averaging must not read them
        recoverables["model"].weight.add_(5.0)
    save_averaged_checkpoint(checkpointer, select_checkpoints(checkpointer, 3, "WER"))
    for name in ("model", "pt_model"):
        for key, value in recoverables[name].state_dict().items():
            torch.testing.assert_close(value, states[0][name][key])


def test_different_checkpoints_average_to_their_mean(tmp_path):
    recoverables = modules()
    checkpointer = Checkpointer(tmp_path, recoverables)
    states = save_epochs(checkpointer, recoverables, [30.0, 10.0, 20.0, 40.0])
    best = select_checkpoints(checkpointer, 2, "WER")  # WER 10 and 20: epochs 2 and 3
    assert [c.meta["epoch"] for c in best] == [2, 3]
    averaged = save_averaged_checkpoint(checkpointer, best, meta={"averaged": [c.path.name for c in best]})
    for name in ("model", "pt_model"):  # averaged
        for key, value in recoverables[name].state_dict().items():
            torch.testing.assert_close(value, (states[1][name][key] + states[2][name][key]) / 2)
    for key, value in recoverables["counter"].state_dict().items():  # not averaged: from the best checkpoint
        torch.testing.assert_close(value, states[1]["counter"][key])

    # saved apart, loaded like any checkpoint by a fresh Checkpointer; final_checkpoint returns it
    assert averaged.path.parent == tmp_path / AVERAGED_FOLDER
    found = final_checkpoint(str(tmp_path), "WER")
    assert found.path == averaged.path and found.meta["averaged"] == [c.path.name for c in best]
    fresh = modules()
    Checkpointer(tmp_path / "unused", fresh).load_checkpoint(found)
    torch.testing.assert_close(fresh["model"].weight, (states[1]["model"]["weight"] + states[2]["model"]["weight"]) / 2)

    # the last N instead of the best N; one averaged checkpoint at a time
    last = select_checkpoints(checkpointer, 2, "WER", select="last")
    assert [c.meta["epoch"] for c in last] == [4, 3]
    again = save_averaged_checkpoint(checkpointer, last)
    assert [p.name for p in (tmp_path / AVERAGED_FOLDER).iterdir()] == [again.path.name]
    torch.testing.assert_close(
        recoverables["model"].weight, (states[3]["model"]["weight"] + states[2]["model"]["weight"]) / 2
    )

    # recovery (resuming training) never sees it; without averaging the best one is tested
    assert checkpointer.find_checkpoint().meta["epoch"] == 4
    remove_averaged_checkpoint(str(tmp_path))
    assert final_checkpoint(str(tmp_path), "WER").meta["epoch"] == 2


def test_checkpoints_without_the_metric_are_never_averaged(tmp_path):
    recoverables = modules()
    checkpointer = Checkpointer(tmp_path, recoverables)
    save_epochs(checkpointer, recoverables, [5.0])
    checkpointer.save_checkpoint(meta={"brain_intra_epoch_ckpt": True}, end_of_epoch=False)  # not validated
    assert [c.meta["WER"] for c in select_checkpoints(checkpointer, 3, "WER", select="last")] == [5.0]
    assert final_checkpoint(str(tmp_path / "nowhere"), "WER") is None
    assert not (tmp_path / "nowhere").exists()
