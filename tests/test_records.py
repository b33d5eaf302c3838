"""Record contracts, the atomic store, the content cache, and prompt loading with clear errors."""
from __future__ import annotations

import json
import os

import polars as pl
import pytest

from prefwork.pipeline.prompts import load_prompts, prompt_id_for
from prefwork.pipeline.schemas import CANDIDATES, PAIRS, SchemaError, validate
from prefwork.pipeline.store import StageCache, content_key, frame_hash, read_table, write_table


def _cands(**over) -> pl.DataFrame:
    base = {"prompt_id": ["a", "a"], "prompt": ["p", "p"], "candidate_id": [0, 1], "text": ["x", "y"],
            "model": ["m", "m"], "seed": [1, 2], "finish_reason": ["stop", "length"], "num_tokens": [3, 4]}
    base.update(over)
    return pl.DataFrame(base)


def test_validate_names_missing_column():
    with pytest.raises(SchemaError, match=r"file f.parquet, field 'seed': missing required column"):
        validate(_cands().drop("seed"), CANDIDATES, "f.parquet")


def test_validate_names_first_null_row_one_based():
    with pytest.raises(SchemaError) as err:
        validate(_cands(text=["x", None]), CANDIDATES, "c.parquet")
    assert (err.value.path, err.value.row, err.value.field) == ("c.parquet", 2, "text")


def test_validate_rejects_text_where_number_belongs():
    with pytest.raises(SchemaError, match="field 'candidate_id': has type String"):
        validate(_cands(candidate_id=["0", "1"]), CANDIDATES)


def test_validate_casts_integer_width():
    out = validate(_cands().with_columns(pl.col("seed").cast(pl.Int32)), CANDIDATES)
    assert out.schema["seed"] == pl.Int64


def test_write_table_is_atomic_and_keeps_old_file_on_bad_input(tmp_path):
    path = tmp_path / "c.parquet"
    write_table(_cands(), path, CANDIDATES)
    before = path.read_bytes()
    with pytest.raises(SchemaError):
        write_table(_cands().drop("text"), path, CANDIDATES)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.parquet"]  # no temp file left behind
    assert read_table(path, CANDIDATES).height == 2


def test_read_table_missing_and_corrupt(tmp_path):
    with pytest.raises(SchemaError, match="does not exist"):
        read_table(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match="not a readable Parquet"):
        read_table(bad)


def test_frame_hash_depends_on_values_and_order():
    a = _cands()
    assert frame_hash(a) == frame_hash(a.clone())
    assert frame_hash(a) != frame_hash(a.reverse())
    assert frame_hash(a) != frame_hash(_cands(text=["x", "z"]))


def test_content_key_changes_with_config_and_inputs():
    k = content_key("s", {"a": "1"}, {"beta": 0.1})
    assert k == content_key("s", {"a": "1"}, {"beta": 0.1})
    assert k != content_key("s", {"a": "1"}, {"beta": 0.2})
    assert k != content_key("s", {"a": "2"}, {"beta": 0.1})
    assert k != content_key("t", {"a": "1"}, {"beta": 0.1})


def test_stage_cache_runs_once_and_resumes_from_partial(tmp_path):
    cache, calls = StageCache(tmp_path), []

    def crash(work):
        (work / "piece-0").write_text("done")  # finished piece before the crash
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.run("stage", "k1", crash)
    assert not cache.has("stage", "k1")

    def produce(work):
        calls.append(sorted(p.name for p in work.iterdir()))
        (work / "out.txt").write_text("ok")

    entry, cached = cache.run("stage", "k1", produce)
    assert not cached and calls == [["piece-0"]]  # the partial piece was there to reuse
    entry2, cached2 = cache.run("stage", "k1", produce)
    assert cached2 and entry2 == entry and len(calls) == 1
    assert (entry / "out.txt").read_text() == "ok"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_load_prompts_ids_are_stable_content_hashes(tmp_path):
    p = _jsonl(tmp_path / "p.jsonl", [{"prompt": "hi", "task": "chat"}, {"prompt": "yo", "prompt_id": "given"}])
    df = load_prompts(p)
    assert df["prompt_id"].to_list() == [prompt_id_for("hi", "chat", None), "given"]
    assert df.columns == ["prompt_id", "prompt", "task", "meta", "reference", "split"]


def test_load_prompts_chat_messages_and_meta_dict(tmp_path):
    msgs = [{"role": "user", "content": "hi"}]
    df = load_prompts(_jsonl(tmp_path / "p.jsonl", [{"prompt": msgs, "meta": {"words": 3}}]))
    assert json.loads(df["prompt"][0]) == msgs and json.loads(df["meta"][0]) == {"words": 3}


@pytest.mark.parametrize("content,row,field,msg", [
    (b'{"prompt": "a"}\n{"task": "poem"}\n', 2, "prompt", "missing required field"),
    (b'{"prompt": "a", "task": "haiku"}\n', 1, "task", "unknown task 'haiku'"),
    (b'{"prompt": "a"}\n{"prompt": "\xff\xfe"}\n', 2, None, "not valid UTF-8"),
    (b'{"prompt": "a"}\n{"prompt": \n', 2, None, "not valid JSON"),
    (b'{"prompt": "a", "meta": "{oops"}\n', 1, "meta", "not valid JSON"),
    (b'{"prompt": "a"}\n{"prompt": "a"}\n', 2, "prompt_id", "duplicate prompt_id"),
])
def test_load_prompts_bad_input_names_file_row_field(tmp_path, content, row, field, msg):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(SchemaError, match=msg) as err:
        load_prompts(path)
    assert (err.value.path, err.value.row, err.value.field) == (str(path), row, field)
    assert str(path) in str(err.value)


def test_load_prompts_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(SchemaError, match="is empty"):
        load_prompts(path)


def test_load_prompts_parquet_missing_column(tmp_path):
    path = tmp_path / "p.parquet"
    pl.DataFrame({"text": ["a"]}).write_parquet(path)
    with pytest.raises(SchemaError, match="field 'prompt': missing required column"):
        load_prompts(path)


def test_shipped_prompt_sets_load():
    root = os.path.join(os.path.dirname(__file__), "..", "data", "prompts")
    train, held = load_prompts(os.path.join(root, "train.jsonl")), load_prompts(os.path.join(root, "heldout.jsonl"))
    assert train.height >= 300 and held.height >= 100
    assert set(train["prompt_id"]).isdisjoint(set(held["prompt_id"]))
    assert validate(pl.DataFrame({c: ["x"] for c in PAIRS.required if PAIRS.required[c] == pl.String}
                                 | {"chosen_id": [0], "rejected_id": [1], "chosen_score": [1.0],
                                    "rejected_score": [0.0], "margin": [1.0]}), PAIRS).height == 1


def test_redact_hides_secrets_but_keeps_token_counts():
    from prefwork.pipeline.run import redact

    cfg = {"api_key": "sk-1", "openai_api_key": "sk-2", "hf_token": "hf-3", "token": "t", "db_password": "p",
           "max_tokens": 48, "num_tokens": 3, "api_key_env": "OPENAI_API_KEY", "launcher": {"secret": "s"}}
    out = redact(cfg)
    assert [out[k] for k in ("api_key", "openai_api_key", "hf_token", "token", "db_password")] == ["***"] * 5
    assert out["launcher"]["secret"] == "***"
    assert (out["max_tokens"], out["num_tokens"], out["api_key_env"]) == (48, 3, "OPENAI_API_KEY")
