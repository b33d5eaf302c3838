"""The loop's config resolves into each round's training config (pure, no training)."""
from __future__ import annotations

import pytest

from prefwork.flows.loop_config import LoopConfig


def test_lr_decay_lowers_each_later_rounds_learning_rate():
    cfg = LoopConfig.from_dict({"learning_rate": 2e-4, "lr_decay": 0.5})
    assert [cfg.dpo_config(r).learning_rate for r in (1, 2, 3)] == pytest.approx([2e-4, 1e-4, 5e-5])
    assert LoopConfig.from_dict({"learning_rate": 2e-4, "lr_decay": 1.0}).dpo_config(3).learning_rate == \
        pytest.approx(2e-4)


def test_round_training_config_carries_the_loop_settings():
    d = LoopConfig.from_dict({"loss": "ipo", "beta": 0.3, "epochs": 1.0, "batch_size": 8, "seed": 5}).dpo_config(2)
    assert (d.loss, d.beta, d.epochs, d.batch_size, d.seed) == ("ipo", 0.3, 1.0, 8, 5)


@pytest.mark.parametrize("field, value, words", [("pairs_per_prompt", 0, "at least 1"), ("rounds", 0, "at least 1"),
                                                 ("lr_decay", 0.0, "positive"), ("beta", -0.1, "positive")])
def test_settings_that_cannot_run_are_refused_up_front(field, value, words):
    with pytest.raises(ValueError, match=f"--{field.replace('_', '-')}\\)? must be {words}"):
        LoopConfig.from_dict({field: value})


def test_the_loop_carries_typed_configs_and_the_cli_keeps_its_flat_options():
    """--beta lands in the carried DPOConfig (no copy of its fields); a run saved before the configs
    were carried (flat keys) and one saved after (nested) read back to the same config."""
    import argparse
    from dataclasses import asdict

    from prefwork.flows.options import add_dataclass, from_args
    from prefwork.train.configs import DPOConfig

    parser = argparse.ArgumentParser()
    add_dataclass(parser, LoopConfig)
    cfg = from_args(LoopConfig, parser.parse_args(["--beta", "0.5", "--curriculum", "random", "--launcher", "local"]))
    assert isinstance(cfg.train, DPOConfig) and cfg.train.beta == 0.5 and cfg.chunk.method == "random"
    assert cfg.train.max_length == cfg.dpo_config(2).max_length == 192 and cfg.train.seed == cfg.chunk.seed == 0
    assert LoopConfig.from_dict(cfg.to_dict()) == cfg
    flat = {k: v for k, v in asdict(LoopConfig()).items() if k not in ("sample", "chunk", "pair", "train", "launch")}
    flat.update(n=16, beta=0.5, curriculum="random", launcher="local", pairs_per_prompt=3, min_margin=0.3)
    assert LoopConfig.from_dict(flat) == cfg
    with pytest.raises(TypeError):
        LoopConfig.from_dict({"train": {"betta": 0.1}})


def test_beta_travels_typed_to_the_training_launch(tmp_path, monkeypatch):
    """The loop's DPOConfig reaches launch_training inside a TrainSpec, unconverted; the spec is
    serialised once (config.json for a launched process) and reads back to the same DPOConfig."""
    from prefwork.flows import stages
    from prefwork.pipeline.store import StageCache
    from prefwork.train import launch
    from prefwork.train.launch_config import TrainSpec

    seen = []

    def fake_launch(spec, **_):
        seen.append(spec)
        raise RuntimeError("stop before training")

    monkeypatch.setattr(launch, "launch_training", fake_launch)
    (tmp_path / "chunks.parquet").write_text("x")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    cfg = LoopConfig.from_dict({"beta": 0.7})
    with pytest.raises(RuntimeError, match="stop before training"):
        stages.train_stage(StageCache(tmp_path / "cache"), tmp_path / "chunks.parquet", tmp_path / "model",
                           cfg.dpo_config(1), cfg.schedule, cfg.launcher_config())
    (spec,) = seen
    assert isinstance(spec, TrainSpec) and spec.dpo == cfg.train and spec.dpo.beta == 0.7
    assert TrainSpec.from_dict(spec.to_dict()).dpo == spec.dpo


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


def test_a_recipe_sets_the_loop_and_the_command_line_wins(tmp_path):
    """`prefwork loop --config NAME|FILE`: shipped recipes by name, paths beside the file or in data/."""
    from prefwork.flows.cli import build_parser
    from prefwork.flows.commands.loop import recipes, with_recipe
    from prefwork.flows.options import from_args
    from prefwork.pipeline import DATA_DIR

    assert {"smollm2_rules", "smollm2_ifeval"} <= set(recipes())
    args = build_parser().parse_args(["loop", "--config", "smollm2_rules", "--rounds", "3", "--beta", "0.2"])
    cfg = with_recipe(from_args(LoopConfig, args), args.config)
    assert (cfg.policy, cfg.judge, cfg.engine, cfg.sample.n) == ("smollm2-135m-instruct", "rules", "vllm", 8)
    assert (cfg.rounds, cfg.train.beta) == (3, 0.2)  # given on the command line: they win
    assert cfg.train.learning_rate == 2e-5 and cfg.eval_prompts == str(DATA_DIR / "prompts" / "heldout_test.jsonl")

    mine = tmp_path / "mine.yaml"
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    mine.write_text("rounds: 1\ntrain_prompts: p.jsonl\njudge: ifeval\n")
    cfg = with_recipe(LoopConfig(), str(mine))
    assert cfg.train_prompts == str(tmp_path / "p.jsonl") and cfg.judge == "ifeval"
    mine.write_text("rounds: 1\nbta: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown option\(s\) bta"):
        with_recipe(LoopConfig(), str(mine))
    with pytest.raises(ValueError, match="no recipe of that name"):
        with_recipe(LoopConfig(), "no-such-recipe")


def test_a_round_without_enough_pairs_stops_with_what_to_change():
    from prefwork.flows.loop import _need_pairs

    stats = {"pairs": 0, "prompts": 4, "dropped_all_tied": 2, "dropped_min_margin": 2, "dropped_identical": 0}
    with pytest.raises(ValueError, match=r"round 1: 0 preference pairs from 4 prompts, fewer than --chunks 2 .*--n"):
        _need_pairs(1, stats, LoopConfig())
    _need_pairs(1, {**stats, "pairs": 2}, LoopConfig())  # enough for two sDPO steps
