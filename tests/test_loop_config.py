"""The loop's config resolves into each round's training config (pure, no training)."""
from __future__ import annotations

import pytest

from prefwork.flows.loop_config import LoopConfig


def test_lr_decay_lowers_each_later_rounds_learning_rate():
    cfg = LoopConfig(learning_rate=2e-4, lr_decay=0.5)
    assert [cfg.dpo_config(r).learning_rate for r in (1, 2, 3)] == pytest.approx([2e-4, 1e-4, 5e-5])
    assert LoopConfig(learning_rate=2e-4, lr_decay=1.0).dpo_config(3).learning_rate == pytest.approx(2e-4)


def test_round_training_config_carries_the_loop_settings():
    d = LoopConfig(loss="ipo", beta=0.3, epochs=1.0, batch_size=8, seed=5).dpo_config(2)
    assert (d.loss, d.beta, d.epochs, d.batch_size, d.seed) == ("ipo", 0.3, 1.0, 8, 5)


@pytest.mark.parametrize("field, value, words", [("pairs_per_prompt", 0, "at least 1"), ("rounds", 0, "at least 1"),
                                                 ("lr_decay", 0.0, "positive"), ("beta", -0.1, "positive")])
def test_settings_that_cannot_run_are_refused_up_front(field, value, words):
    with pytest.raises(ValueError, match=f"--{field.replace('_', '-')} must be {words}"):
        LoopConfig(**{field: value})


def test_results_title_counts_the_stages_this_invocation_took_from_the_cache(tmp_path):
    from prefwork.flows.commands.loop import _reused
    from prefwork.pipeline.run import RunDir

    run, since = RunDir(tmp_path), 1000.0
    run.log_metric(stage="judge", cached=False, time=since - 60)  # an earlier, killed invocation
    for stage, cached in (("sample", True), ("judge", True), ("train", False)):
        run.log_metric(stage=stage, cached=cached, time=since + 1)
    run.log_metric(stage="round_done", win_rate=0.6, time=since + 2)
    assert _reused(tmp_path, since) == "; 2 of 3 stages from the cache"
    assert _reused(tmp_path, since + 10) == ""


def test_sft_progress_bar_only_on_a_terminal(monkeypatch):
    """In a log file (stderr not a tty) the policy build prints loss lines, not one endless tqdm line."""
    import io

    from prefwork.train.sft import progress_bar_on

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("PREFWORK_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not progress_bar_on()
    monkeypatch.setattr("sys.stderr", Tty())
    assert progress_bar_on()
    monkeypatch.setenv("PREFWORK_PROGRESS", "0")
    assert not progress_bar_on()
