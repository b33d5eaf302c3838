"""Versioned dataset store: immutable versions, append/replace, lineage, idempotent publish, diff,
loading with polars and `datasets`, prompt sources, and the `prefwork datasets` commands."""
from __future__ import annotations

import json
import os

import polars as pl
import pytest

from prefwork.pipeline.datasets_store import DatasetStore, diff, load_prompt_source
from prefwork.pipeline.schemas import PAIRS, SchemaError, validate


def _pairs(ids, tag="a"):
    return pl.DataFrame({
        "prompt_id": ids, "prompt": [f"prompt {i}" for i in ids], "chosen": [f"good {tag} {i}" for i in ids],
        "rejected": [f"bad {tag} {i}" for i in ids], "chosen_id": [0] * len(ids), "rejected_id": [1] * len(ids),
        "chosen_score": [1.0] * len(ids), "rejected_score": [0.0] * len(ids), "margin": [1.0] * len(ids)})


def test_append_replace_lineage_and_loading(tmp_path):
    store = DatasetStore(tmp_path)
    assert store.versions() == [] and store.held_prompt_ids() == set()
    v1 = store.publish(store.compose(_pairs(["p1", "p2"])), ["p1", "p2", "p3"], config={"n": 4},
                       policy={"path": "/m", "sha256": "abc"})
    assert v1.name == "v0001" and v1.manifest["parent"] is None
    assert store.held_prompt_ids() == {"p1", "p2", "p3"}  # p3 was processed without a pair: still held
    v2 = store.publish(store.compose(_pairs(["p4"])), ["p4"], config={"n": 8})
    m2 = v2.manifest
    assert (m2["parent"], m2["mode"], m2["rows"]["pairs"], m2["rows"]["new_pairs"]) == ("v0001", "append", 3, 1)
    assert v2.pairs()["added_in"].to_list() == ["v0001", "v0001", "v0002"]
    v3 = store.publish(store.compose(_pairs(["p5"]), mode="replace"), ["p5"], mode="replace")
    assert v3.pairs()["prompt_id"].to_list() == ["p5"] and v3.manifest["parent"] == "v0002"
    # immutable: published files are read-only and v1 is unchanged by later publishes
    assert not os.access(v1.pairs_path, os.W_OK) or os.geteuid() == 0
    assert oct(v1.pairs_path.stat().st_mode & 0o777) == "0o444"
    assert v1.pairs().height == 2
    # loads with polars, datasets.load_from_disk and datasets' parquet loader, with the pairs contract
    import datasets
    validate(pl.read_parquet(v2.pairs_path), PAIRS)
    hf = datasets.load_from_disk(str(v2.hf_path))
    assert hf.num_rows == 3 and set(PAIRS.required) <= set(hf.column_names)
    pq = datasets.load_dataset("parquet", data_files=str(v2.pairs_path), split="train",
                               cache_dir=str(tmp_path / "hf_cache"))
    assert pq["chosen"] == hf["chosen"]
    # lookups: name, number, latest, hash prefix; unknown lists the valid ones
    assert store.get("2") == v2 and store.get("latest") == v3 and store.get(m2["content_hash"][:10]) == v2
    with pytest.raises(FileNotFoundError, match="v0001, v0002, v0003"):
        store.get("v9")
    d = diff(v1, v2)
    assert d["added"]["prompt_id"].to_list() == ["p4"] and d["removed"].height == 0
    assert d["config_changes"] == {"n": (4, 8)}


def test_publish_is_idempotent_and_claims_numbers(tmp_path):
    store = DatasetStore(tmp_path, "x")
    v1 = store.publish(store.compose(_pairs(["a"])), ["a"])
    again = store.publish(DatasetStore(tmp_path, "x").compose(_pairs(["b"])), ["b"])
    assert again.name == "v0002"
    # the same publish on the same parent (a retry after a crash) returns the existing version
    v3 = store.publish(_pairs(["c"]), ["c"], parent="v0002")
    assert store.publish(_pairs(["c"]), ["c"], parent="v0002") == v3 and len(store.versions()) == 3
    with pytest.raises(ValueError, match="moved on"):  # composed on v0002, but v0003 is out now
        store.publish(_pairs(["z"]), ["z"], parent="v0002")
    assert v1.manifest["content_hash"] != again.manifest["content_hash"]
    # a number taken by someone else in the meantime is skipped, not overwritten
    (store.root / "v0005").mkdir()
    (store.root / "v0005" / "manifest.json").write_text("{}")
    (store.root / "v0005" / "other").write_text("theirs")
    assert store.publish(_pairs(["d"]), ["d"]).name == "v0006"
    assert (store.root / "v0005" / "other").read_text() == "theirs"
    with pytest.raises(ValueError, match="append, replace"):
        store.compose(_pairs(["e"]), mode="merge")


def test_prompt_sources(tmp_path):
    d = tmp_path / "incoming"
    d.mkdir()
    (d / "a.jsonl").write_text(json.dumps({"prompt": "one", "task": "chat"}) + "\n" +
                               json.dumps({"prompt": "two"}) + "\n")
    pl.DataFrame({"prompt": ["two", "three"]}).write_parquet(d / "b.parquet")
    got = load_prompt_source(str(d))
    assert got["prompt"].to_list() == ["one", "two", "three"]  # 'two' twice, kept once
    assert load_prompt_source(str(d / "a.jsonl")).height == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(SchemaError, match="no .jsonl/.parquet"):
        load_prompt_source(str(tmp_path / "empty"))


def test_datasets_cli(tmp_path, capsys, monkeypatch):
    """The `prefwork datasets` actions, parsed by the command's own parser (no other command is imported)."""
    import argparse

    from prefwork.flows.commands import datasets as cmd

    monkeypatch.setenv("COLUMNS", "240")
    parser = argparse.ArgumentParser(prog="prefwork datasets")
    cmd.register(parser)

    def run(*argv):
        args = parser.parse_args([*argv, "--workspace", str(tmp_path)])
        assert args.func(args) == 0
        return capsys.readouterr().out

    store = DatasetStore(tmp_path)
    store.publish(store.compose(_pairs(["p1", "p2"])), ["p1", "p2"])
    store.publish(store.compose(_pairs(["p3"], tag="b")), ["p3"])
    out = run("list")
    assert "v0001" in out and "v0002" in out and "append" in out
    out = run("show", "latest", "--limit", "3")
    assert "good b p3" in out and "bad b p3" in out and "1.00" in out and "0.00" in out
    out = run("diff", "v0001", "v0002")
    assert "+1" in out and "-0" in out and "good b p3" in out
    with pytest.raises(FileNotFoundError, match="no version 'v7'"):
        run("show", "v7")
