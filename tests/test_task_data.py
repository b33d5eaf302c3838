"""The shipped task data: contracts, held-out disjointness, corpus difficulty, determinism."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import polars as pl
import pytest

from prefwork.evaluators.rules import check_meta, rule_pass_rates, score_candidates
from prefwork.pipeline.prompts import load_prompts

DATA = Path(__file__).resolve().parents[1] / "data"
TRAIN, HELDOUT, CORPUS = DATA / "prompts" / "train.jsonl", DATA / "prompts" / "heldout.jsonl", DATA / "corpus" / "sft.jsonl"
TEMPLATES = [re.compile(p) for p in (
    r'^Write a slogan for an? [a-z ]+ in exactly \d words\.',
    r'^Write a \d-word slogan for an? [a-z ]+\.',
    r'^Write a \d-line poem titled "[A-Za-z ]+" with \d words per line\.',
    r'^Write a poem titled "[A-Za-z ]+" in \d lines of \d words each\.',
)]


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def words(text):
    return {t.strip("\"'.,!?;:").lower() for t in text.split()}


@pytest.fixture(scope="module")
def files():
    return read(TRAIN), read(HELDOUT), read(CORPUS)


def test_prompt_files_load_under_the_contract(files):
    train, heldout, _ = files
    assert load_prompts(TRAIN).height == len(train) >= 300
    assert load_prompts(HELDOUT).height == len(heldout) >= 100
    for split, rows in (("train", train), ("heldout", heldout)):
        assert {r["split"] for r in rows} == {split}
        assert {r["task"] for r in rows} == {"slogan", "poem"}
        for r in rows:
            check_meta(r["task"], r["meta"])
            assert any(t.match(r["prompt"]) for t in TEMPLATES), r["prompt"]


def test_heldout_subjects_titles_keywords_never_in_training_prompts(files):
    """Held-out subjects, titles and keywords never occur in the training prompts (issue 3).

    The SFT corpus, the policy's "pretraining", covers every subject, so the policy knows
    what a held-out subject is about; the preference data never shows a held-out prompt.
    """
    train, heldout, corpus = files
    for field in ("subject", "title"):
        seen = {r["meta"].get(field) for r in train} - {None}
        assert not seen & {r["meta"].get(field) for r in heldout} - {None}, field
    training_words = set()
    for r in train:
        training_words |= words(r["prompt"]) | {k.lower() for k in r["meta"]["keywords"]}
    held_keywords = {k.lower() for r in heldout for k in r["meta"]["keywords"]}
    assert held_keywords and not held_keywords & training_words
    assert not {r["prompt"] for r in heldout} & {r["prompt"] for r in corpus}


def test_heldout_numeric_constraints_never_in_training_prompts(files):
    """Held-out slogan lengths and poem shapes occur in no training prompt; the corpus has them all."""
    train, heldout, corpus = files
    lengths = lambda rows: {r["meta"]["words"] for r in rows if r["task"] == "slogan"}  # noqa: E731
    shapes = lambda rows: {(r["meta"]["rows"], r["meta"]["words_per_row"]) for r in rows if r["task"] == "poem"}  # noqa: E731
    assert lengths(train) == {3, 4, 6, 7} and lengths(heldout) == {5} and lengths(corpus) == {3, 4, 5, 6, 7}
    assert shapes(heldout) == {(4, 4), (3, 5), (5, 4)} and not shapes(heldout) & shapes(train)
    assert 5 not in {s[0] for s in shapes(train)}
    assert shapes(heldout) | shapes(train) == shapes(corpus)


def test_corpus_shape(files):
    _, _, corpus = files
    assert 3000 <= len(corpus) <= 6000
    for r in corpus:
        assert isinstance(r["prompt"], str) and isinstance(r["response"], str) and r["response"].strip()
        assert any(t.match(r["prompt"]) for t in TEMPLATES)


def test_corpus_leaves_room_for_preference_learning(files):
    """Every rule passes on 20-80% of the corpus responses (scored with the rule judge)."""
    _, _, corpus = files
    df = pl.DataFrame({
        "prompt_id": [str(i) for i in range(len(corpus))], "candidate_id": [0] * len(corpus),
        "text": [r["response"] for r in corpus], "task": [r["task"] for r in corpus],
        "meta": [json.dumps(r["meta"]) for r in corpus],
    })
    scores = score_candidates(df)
    assert scores["error"].null_count() == len(corpus)
    for task in ("slogan", "poem"):
        ids = [str(i) for i, r in enumerate(corpus) if r["task"] == task]
        rates = rule_pass_rates(scores.filter(pl.col("prompt_id").is_in(ids)))
        assert rates.height >= 4
        for row in rates.iter_rows(named=True):
            assert 0.2 <= row["rate"] <= 0.8, (task, row)


def test_generator_is_deterministic(files):
    spec = importlib.util.spec_from_file_location("make_tasks", DATA / "make_tasks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import random
    train, heldout, corpus = files
    assert mod.make_prompts(random.Random(mod.SEED), "train") == train
    assert mod.make_prompts(random.Random(mod.SEED + 1), "heldout") == heldout
    assert mod.make_corpus(random.Random(mod.SEED + 2), exclude={r["prompt"] for r in heldout}) == corpus


def test_a_keyword_can_be_copied_from_every_prompt(files):
    """Content is learnable on unseen subjects: some keyword always appears in the prompt itself."""
    train, heldout, _ = files
    for r in train + heldout:
        assert words(r["prompt"]) & {k.lower() for k in r["meta"]["keywords"]}, r["prompt"]
