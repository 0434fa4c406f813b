"""The time budget (callbacks.TimeBudget) on a simulated clock: where it stops, what it holds in reserve, and
what a resumed run keeps of it."""

import dataclasses
import time

import pytest
from tests_support import TRAINER, Clock, Ticks, compiled, tiny_data

from nnlab.job.body import how_it_stopped
from nnlab.training import train
from nnlab.training.callbacks import TimeBudget


def run(monkeypatch, clock: Clock, epochs: int, max_minutes: float):
    """fit() of the 64-row data (4 batches of 16 an epoch) on the simulated clock; returns the result and the
    simulated seconds the fit took from its first batch to its end."""
    monkeypatch.setattr(time, "perf_counter", clock)
    data = tiny_data()
    model = compiled(data)
    start = clock.now
    result = train.fit(model, data, dataclasses.replace(TRAINER, epochs=epochs, max_minutes=max_minutes),
                       callbacks=[Ticks(clock)])
    return result, clock.now - start


def test_the_budget_stops_mid_epoch_and_the_partial_epoch_is_still_validated(monkeypatch):
    """5 s a batch, 20 s an epoch, a 50 s budget: two epochs, then two batches of the third."""
    result, seconds = run(monkeypatch, Clock(per_batch=5.0), epochs=5, max_minutes=50 / 60)
    assert result.stopped_by == "time_budget"
    assert result.epochs_run == 3 and result.last_epoch_share == pytest.approx(0.5)
    assert len(result.history["val_loss"]) == 3  # the cut epoch is scored and logged like the others
    assert seconds == pytest.approx(50.0)
    assert how_it_stopped(result, dataclasses.replace(TRAINER, epochs=5)) == \
        "stopped by the time budget 50% into epoch 3 of 5"


def test_the_measured_validation_time_is_held_back_so_the_run_ends_within_the_budget(monkeypatch):
    """5 s a batch and 10 s of validation an epoch, a 55 s budget: epoch 1 ends at 30 s. Epoch 2 must stop
    after its third batch (45 s) to leave 10 s for its validation; going on to the epoch's end would take 60 s."""
    result, seconds = run(monkeypatch, Clock(per_batch=5.0, per_validation=10.0), epochs=5, max_minutes=55 / 60)
    assert result.epochs_run == 2 and result.last_epoch_share == pytest.approx(0.75)
    assert seconds == pytest.approx(55.0)


def test_a_budget_ending_on_the_last_batch_counts_as_all_epochs(monkeypatch):
    """7 s a batch, one epoch, a 30 s budget: after the 4th batch (28 s) no other would fit, but none is due."""
    result, seconds = run(monkeypatch, Clock(per_batch=7.0), epochs=1, max_minutes=0.5)
    assert result.epochs_run == 1 and result.stopped_by == "epochs" and result.last_epoch_share == 1.0
    assert seconds == pytest.approx(28.0)


def test_a_stop_at_an_epochs_end_reports_the_whole_epoch(monkeypatch):
    """5 s a batch, a 40 s budget: the budget is spent exactly as epoch 2 ends."""
    result, _ = run(monkeypatch, Clock(per_batch=5.0), epochs=5, max_minutes=40 / 60)
    assert result.stopped_by == "time_budget" and result.epochs_run == 2 and result.last_epoch_share == 1.0
    assert how_it_stopped(result, dataclasses.replace(TRAINER, epochs=5)) == \
        "stopped by the time budget after epoch 2 of 5"


def test_a_resumed_budget_keeps_the_time_used_and_the_measured_speed():
    budget = TimeBudget(1.0, used=12.0)
    for seconds in (0.5, 1.5):
        budget.add_duration(seconds)
    budget.tail = 3.0
    again = TimeBudget(1.0, **budget.state())
    assert again.used() == 12.0 and again.tail == 3.0 and again.step_seconds() == pytest.approx(1.0)
    # (48 s left - 3 s for this epoch's end - 3 s for the next one's) / 1 s a step, in epochs of 30 steps
    assert again.steps_that_fit(batch=0, steps=30) == pytest.approx(42.0)


def test_a_checkpoint_of_an_earlier_version_resumes_with_its_time_used():
    """Earlier checkpoints kept the slowest epoch's time instead of the speed: it is accepted and ignored."""
    budget = TimeBudget(1.0, used=30.0, slowest=20.0)
    assert budget.used() == 30.0 and budget.step_seconds() is None and budget.steps_that_fit(0, 10) is None


def test_the_speed_is_the_mean_of_the_last_window_of_batches():
    budget = TimeBudget(1.0)
    for seconds in [9.0] * 10 + [1.0] * TimeBudget.WINDOW:  # the slow start has left the window
        budget.add_duration(seconds)
    assert budget.step_seconds() == pytest.approx(1.0)
