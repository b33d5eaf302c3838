"""Prefect flows on tiny inputs against a real (temporary) Prefect server.

- ``refresh_dataset``: a run killed after judging (an injected crash) and run again ends its
  finished sample/judge/pairs task runs ``Cached`` in Prefect's API and samples/judges nothing
  twice (generations and judged rows are counted); it publishes v0001, which loads with polars,
  ``datasets.load_from_disk`` and ``load_dataset("parquet")`` under the pairs contract; new
  prompts append v0002; no new prompts publish nothing.
- ``winrate_report``: k-repeat evaluation + report + history; a second run reuses the evaluation.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import polars as pl
import pytest

DATA = Path(__file__).resolve().parent.parent / "data"

pytestmark = pytest.mark.slow


@pytest.fixture
def counts(monkeypatch):
    """Count generations (prompts x n through the engine) and judged candidates."""
    import prefwork.evaluators.rules as rules
    from prefwork.pipeline import engines_factory

    seen = {"generate_calls": 0, "generated": 0, "judged": 0}
    lock = threading.Lock()
    real_make, real_score = engines_factory.shared_engine, rules.score_candidates

    class Counting:
        def __init__(self, engine):
            self.engine, self.name = engine, engine.name

        def generate(self, prompts, cfg, shard_seed):
            with lock:
                seen["generate_calls"] += 1
                seen["generated"] += len(prompts) * cfg.n
            return self.engine.generate(prompts, cfg, shard_seed)

    def score(candidates):
        with lock:
            seen["judged"] += candidates.height
        return real_score(candidates)

    monkeypatch.setattr(engines_factory, "shared_engine", lambda name, model_dir: Counting(real_make(name, model_dir)))
    monkeypatch.setattr(rules, "score_candidates", score)
    return seen


def _prompts(path: Path, start: int, stop: int) -> str:
    lines = (DATA / "prompts" / "train.jsonl").read_text().splitlines()[start:stop]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def task_run_states(flow_run_id, expected: int, timeout: float = 60) -> dict[str, list[str]]:
    """Task name -> state names of a flow run's task runs, read back through Prefect's API.

    Task run states reach the server as events, so this polls until ``expected`` runs are final.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.time() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            final = [r for r in runs if r.state is not None and r.state.is_final()]
            if len(final) >= expected or time.time() > deadline:
                break
            time.sleep(0.5)
    out: dict[str, list[str]] = {}
    for r in final:
        out.setdefault(r.name.rsplit("-", 1)[0], []).append(r.state.name)
    return out


def test_refresh_resumes_publishes_and_appends(prefect_harness, tiny_random_policy, tmp_path, counts, monkeypatch):
    import prefwork.flows.refresh as refresh
    from prefwork.pipeline import engines_factory
    from prefwork.pipeline.datasets_store import DatasetStore
    from prefwork.pipeline.schemas import CHUNKS, PAIRS, validate

    ws = tmp_path / "ws"
    cfg = {"workspace": str(ws), "prompts": _prompts(tmp_path / "a.jsonl", 0, 6), "policy": str(tiny_random_policy),
           "engine": "transformers", "n": 4, "max_tokens": 8, "shard_size": 2, "curriculum": "judge_margin"}

    def crash(*a, **k):
        raise RuntimeError("injected crash after sampling and judging")

    monkeypatch.setattr(refresh, "_assemble", crash)
    first = refresh.refresh_dataset(config=cfg, return_state=True)
    assert first.is_failed()
    assert counts == {"generate_calls": 3, "generated": 24, "judged": 24}
    assert DatasetStore(ws).versions() == []
    monkeypatch.undo()  # the crash is gone; counting continues below with a fresh wrapper
    monkeypatch.setattr(engines_factory, "shared_engine", _counting_again(counts))

    again = refresh.refresh_dataset(config=cfg, return_state=True)
    assert again.is_completed(), again
    out = again.result()
    assert out["published"] == "v0001" and out["new_prompts"] == 6
    assert counts["generate_calls"] == 3 and counts["generated"] == 24  # nothing sampled twice
    states = task_run_states(again.state_details.flow_run_id, expected=3 * 3 + 5)
    for name in ("sample", "judge", "pairs"):
        assert states[name] == ["Cached"] * 3, states
    assert states["publish"] == ["Completed"] and states["assemble"] == ["Completed"]

    v1 = DatasetStore(ws).get("v0001")
    m = v1.manifest
    assert m["rows"]["prompts"] == 6 and m["rows"]["pairs"] == out["pairs"] and m["judge"] == "rules"
    assert m["policy"]["path"] == str(tiny_random_policy.resolve()) and m["config"]["n"] == 4
    import datasets
    hf = datasets.load_from_disk(str(v1.hf_path))
    pq = datasets.load_dataset("parquet", data_files=str(v1.pairs_path), split="train",
                               cache_dir=str(tmp_path / "hf_cache"))
    frame = pl.read_parquet(v1.pairs_path)
    assert hf.num_rows == pq.num_rows == frame.height == out["pairs"]
    validate(frame, PAIRS)
    if frame.height:
        validate(frame, CHUNKS)
        assert (frame["chosen_score"] > frame["rejected_score"]).all()

    # two new prompts beside the six old ones: only they are sampled; v0002 appends to v0001
    cfg["prompts"] = _prompts(tmp_path / "b.jsonl", 0, 8)
    third = refresh.refresh_dataset(config=cfg)
    assert third["published"] == "v0002" and third["new_prompts"] == 2
    assert counts["generated"] == 24 + 2 * 4
    v2 = DatasetStore(ws).get("v0002")
    assert v2.manifest["parent"] == "v0001" and v2.manifest["mode"] == "append"
    assert v2.manifest["rows"]["kept_pairs"] == v1.manifest["rows"]["pairs"]
    assert set(v1.pairs()["prompt_id"]) <= set(v2.pairs()["prompt_id"])
    # nothing new: no version, no sampling
    assert refresh.refresh_dataset(config=cfg)["published"] is None
    assert counts["generated"] == 32 and len(DatasetStore(ws).versions()) == 2


def _counting_again(counts):
    from prefwork.pipeline import engines_factory

    real = engines_factory.shared_engine

    class Counting:
        def __init__(self, engine):
            self.engine, self.name = engine, engine.name

        def generate(self, prompts, cfg, shard_seed):
            counts["generate_calls"] += 1
            counts["generated"] += len(prompts) * cfg.n
            return self.engine.generate(prompts, cfg, shard_seed)

    return lambda name, model_dir: Counting(real(name, model_dir))


def flow_run_artifacts(flow_run_id) -> list:
    """The artifacts a flow run (and its task runs) published, read back through Prefect's API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def test_winrate_report_flow(prefect_harness, tiny_random_policy, tmp_path, counts):
    from prefwork.evaluators.report_history import load_history
    from prefwork.flows.winrate_flow import winrate_report

    ws = tmp_path / "ws"
    cfg = {"model": str(tiny_random_policy), "baseline": str(tiny_random_policy), "workspace": str(ws),
           "prompts": _prompts(tmp_path / "p.jsonl", 0, 3), "engine": "transformers", "stage": "test"}
    ev = {"repeats": 2, "max_tokens": 8}
    out = winrate_report(config=cfg, eval_config=ev)
    (summary,) = out["models"].values()
    assert summary["n_repeats"] == 2 and summary["n_prompts"] == 3
    assert summary["win_rate"] is None or 0.0 <= summary["win_rate"] <= 1.0
    assert Path(out["report"]).exists() and (Path(out["run_dir"]) / "judgments.parquet").exists()
    calls = counts["generate_calls"]
    assert calls == 2  # the model and the baseline, once each
    state = winrate_report(config=cfg, eval_config=ev, return_state=True)
    assert state.is_completed() and counts["generate_calls"] == calls  # the evaluation is reused
    assert task_run_states(state.state_details.flow_run_id, expected=2)["evaluate"] == ["Cached"]
    history = load_history(ws / "history.parquet")
    assert history.height == 2 and history["stage"].to_list() == ["test", "test"]
    # the report is in the Prefect UI too: report.md and the overall table as artifacts of the flow run
    artifacts = flow_run_artifacts(state.state_details.flow_run_id)
    assert {(a.key, a.type) for a in artifacts} == {("winrate-test", "markdown"), ("winrate-test-table", "table")}
    (md,) = [a for a in artifacts if a.type == "markdown"]
    assert md.data == (Path(state.result()["report"])).read_text() and "| Model | Win Rate |" in md.data


def test_loop_results_are_published_only_inside_a_flow_run(prefect_harness):
    """The loop's results table reaches the Prefect UI from its flow run; outside a run nothing is sent."""
    from prefect import flow

    from prefwork.evaluators.report_loop import publish_results

    rows = [{"round": 0, "stage": "SFT", "win_rate": 0.498, "std": 0.029, "min": 0.454, "max": 0.554, "pairs": None,
             "rule_pass_rate": 0.503}]
    assert publish_results(rows, "outside") == []

    @flow(name="publish-check")
    def publish_check():
        return publish_results(rows, "20250101-loop")

    state = publish_check(return_state=True)
    assert len(state.result()) == 2
    artifacts = flow_run_artifacts(state.state_details.flow_run_id)
    (table,) = [a for a in artifacts if a.type == "table"]
    assert table.key == "loop-20250101-loop-table" and "49.8%" in str(table.data)
