"""Progress lines: step i/N, what it did, time spent and left; on stderr, in a pipe as in a terminal."""

from __future__ import annotations

import re

import pytest

from retailgan import progress
from retailgan.data.dataset import InteractionDataset
from retailgan.models.base import TrainingOptions
from retailgan.models.baselines import BPR


@pytest.fixture
def enabled(monkeypatch):
    monkeypatch.setattr(progress, "_enabled", True)


def test_duration_reads_like_a_person_would_write_it():
    assert [progress.duration(s) for s in (4.4, 125, 3720)] == ["4 s", "2 min 05 s", "1 h 02 min"]


def test_lines_count_steps_and_estimate_the_time_left(capsys, enabled, monkeypatch):
    clock = iter([0.0, 10.0, 20.0, 30.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    with progress.steps("tune ease", 3, "trial") as steps:
        steps.done(1, "validation ndcg@20 0.1000")
        steps.done(2)
        steps.done(3)
    assert capsys.readouterr().err.splitlines() == [
        "tune ease: trial 1/3 done, validation ndcg@20 0.1000; 10 s elapsed, ~20 s left",
        "tune ease: trial 2/3 done; 20 s elapsed, ~10 s left",
        "tune ease: trial 3/3 done; 30 s elapsed",
    ]


def test_nothing_is_printed_unless_switched_on(capsys, monkeypatch):
    monkeypatch.setattr(progress, "_enabled", False)  # the retailgan command switches it on
    with progress.steps("quiet", 2) as steps:
        steps.done(1)
    assert capsys.readouterr().err == ""


def test_training_reports_epochs_with_the_validation_score_nested_under_its_job(capsys, enabled):
    users = [f"u{u}" for u in range(20) for _ in range(4)]
    items = [f"i{(u * 7 + j) % 15}" for u in range(20) for j in range(4)]
    ds = InteractionDataset.from_arrays(users, items, timestamps=list(range(len(users))))
    held_out = ds.timestamp % 4 == 3  # each customer's last product
    with progress.steps("tune bpr", 1, "trial"):
        options = TrainingOptions(seed=0, validation=ds.subset(held_out))
        BPR(factors=4, epochs=3, eval_every=1).fit(ds.subset(~held_out), options)
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"  fit bpr: epoch 1/3 done, validation ndcg@20 \d\.\d{4}; \d+ s elapsed, ~\d+ s left at most",
                        lines[0]), lines
    assert lines[-1].startswith(("  fit bpr: epoch 3/3 done", "  fit bpr: early stop"))
