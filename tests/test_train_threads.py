"""`training.threads`: torch's intra-op threads during a real training, restored after."""

from __future__ import annotations

import datetime as dt

import pytest
import pytorch_lightning as pl
import torch
from _training_data import simulate, write_histories_days
from conftest import make_config

from propensity.config import load_config
from propensity.cycle.demo import write_config
from propensity.training.run import train

D = dt.date(2026, 1, 20)


class Stop(pl.Callback):
    """Records torch's threads when the fit starts, then stops the run (cheaply)."""

    def on_fit_start(self, trainer, pl_module):
        self.threads = torch.get_num_threads()
        raise RuntimeError("stop after recording")


@pytest.fixture(scope="module")
def histories(tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp("histories"))
    events = simulate(200, D - dt.timedelta(days=20), D, seed=3)
    write_histories_days(cfg, events, [D - dt.timedelta(days=7), D])
    return cfg.uri("histories")


@pytest.mark.parametrize("choice", ["default", "one", "more than now"])
def test_training_runs_with_the_configured_threads_and_restores_them(tmp_path, histories,
                                                                    choice):
    before = torch.get_num_threads()
    setting = {"default": 0, "one": 1, "more than now": before + 2}[choice]
    cfg = make_config(tmp_path / "data", f"storage.histories={histories}",
                      f"training.work_dir={tmp_path}/work", "training.snapshot_pairs=1",
                      "training.accelerator=cpu", f"training.threads={setting}")
    stop = Stop()
    with pytest.raises(RuntimeError, match="stop after recording"):
        train(cfg, D, cold=True, callbacks=[stop])
    assert stop.threads == (setting or before)
    assert torch.get_num_threads() == before  # restored, also after a failure


def test_the_demo_config_trains_on_one_thread(tmp_path):
    cfg = load_config(write_config(tmp_path / "demo", days=16))
    assert cfg.training.threads == 1
    assert load_config().training.threads == 0  # the embedded default leaves torch's choice
