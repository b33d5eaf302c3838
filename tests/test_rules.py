"""The rule judge on real poems and slogans; every expected value is derived by hand (see comments)."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from prefwork.evaluators import rules_en, rules_zh
from prefwork.evaluators.rules import RULES, TASK_RULES, judge_text, rule_pass_rates, score_candidates
from prefwork.pipeline.schemas import SCORES, validate

POEMS = json.loads((Path(__file__).resolve().parents[1] / "data" / "poems" / "poems.json").read_text(encoding="utf-8"))


def en_meta(name, rows, wpr, rhyme=None, keywords=("woods",)):
    return {"subject": "x", "keywords": list(keywords), "title": POEMS[name]["title"], "rows": rows,
            "words_per_row": wpr, "rhyme": rhyme, "lang": "en"}


def zh_meta(name, chars, rhyme="default"):
    meta = {"title": POEMS[name]["title"], "rows": 4, "chars_per_row": chars, "lang": "zh"}
    if rhyme != "default":
        meta["rhyme"] = rhyme
    return meta


def with_title(name):
    return POEMS[name]["title"] + "\n" + POEMS[name]["text"]


# --- English poems ------------------------------------------------------------------------

def test_frost_stanza_one_aaba():
    # know / though / snow share OW1; row words: 8, 7, 7, 8 (counted by hand), so no fixed
    # words-per-row value passes; "woods" twice, no word three times -> content passes.
    score, detail = judge_text("poem", en_meta("frost_woods_1", 4, 8, [[1, 2, 4]]), with_title("frost_woods_1"))
    assert detail == {"title": True, "row_number": True, "words_per_row": False, "rhyme": True, "content": True}
    assert score == pytest.approx(4 / 5)
    # row 3 ends in "here" (IH1 R), which does not rhyme with "know": the B of AABA
    assert judge_text("poem", en_meta("frost_woods_1", 4, 7, [[1, 3]]), with_title("frost_woods_1"))[1]["rhyme"] is False


def test_missing_title_line_keeps_all_rows():
    # no title line: title fails, but the four lines are still the four rows
    _, detail = judge_text("poem", en_meta("frost_woods_1", 4, 8), POEMS["frost_woods_1"]["text"])
    assert detail["title"] is False and detail["row_number"] is True
    assert "rhyme" not in detail  # meta rhyme null -> not applicable


def test_title_line_variants():
    meta = en_meta("frost_woods_1", 4, 8)
    for first in ('"Stopping by Woods on a Snowy Evening"', "# stopping by woods on a snowy evening",
                  "Title: Stopping by Woods on a Snowy Evening."):
        assert RULES["title"](first + "\n" + POEMS["frost_woods_1"]["text"], meta) is True
    assert RULES["title"]("Stopping by Woods\n" + POEMS["frost_woods_1"]["text"], meta) is False


def test_frost_last_stanza_identical_words_and_repetition():
    # deep / keep / sleep rhyme (IY1 P); sleep / sleep is the same word: not a rhyme here
    text = POEMS["frost_woods_4"]["text"]
    assert RULES["rhyme"](text, en_meta("frost_woods_4", 4, 7, [[1, 2, 3]])) is True
    assert RULES["rhyme"](text, en_meta("frost_woods_4", 4, 7, [[3, 4]])) is False
    # "and" (rows 1, 3, 4) and "I" (rows 2, 3, 4) occur three times -> content fails
    assert RULES["content"](text, en_meta("frost_woods_4", 4, 7)) is False


def test_tyger_aabb_with_famous_eye_rhyme():
    # bright / night rhyme (AY1 T); eye (AY1) / symmetry (IH1 M AH0 T R IY0) only look alike
    text = POEMS["blake_tyger_1"]["text"]
    assert RULES["rhyme"](text, en_meta("blake_tyger_1", 4, 4, [[1, 2]])) is True
    assert RULES["rhyme"](text, en_meta("blake_tyger_1", 4, 4, [[1, 2], [3, 4]])) is False


def test_wordsworth_ababcc_secondary_stress():
    # cloud/crowd (AW1 D), hills/daffodils (IH1 L Z vs IH2 L Z), trees/breeze (IY1 Z)
    meta = en_meta("wordsworth_daffodils_1", 6, 6, [[1, 3], [2, 4], [5, 6]], keywords=("daffodils",))
    _, detail = judge_text("poem", meta, POEMS["wordsworth_daffodils_1"]["text"])
    assert detail["rhyme"] is True and detail["row_number"] is True
    # "a" (rows 1, 3, 4) and "the" (rows 5, 5, 6) occur three times -> content fails
    assert detail["content"] is False
    # row 2 "That floats on high o'er vales and hills" has 8 words, row 1 has 6
    assert detail["words_per_row"] is False


def test_row_too_long_and_broken_rhyme():
    base = "Autumn Rain\nsoft rain falls on stones\nthe wind sings a low song\n"
    meta = {"subject": "rain", "keywords": ["rain"], "title": "Autumn Rain", "rows": 2,
            "words_per_row": 5, "rhyme": [[1, 2]], "lang": "en"}
    # "stones" (OW1 N Z) / "song" (AO1 NG) do not rhyme; row 2 has 6 words
    _, detail = judge_text("poem", meta, base)
    assert detail == {"title": True, "row_number": True, "words_per_row": False, "rhyme": False, "content": True}
    _, detail = judge_text("poem", meta, "Autumn Rain\nsoft rain falls on stones\nthe wind sings low tones\n")
    assert detail == {"title": True, "row_number": True, "words_per_row": True, "rhyme": True, "content": True}


def test_spelling_fallback_for_unknown_words():
    # neither word is in the CMU dictionary: spelling keys "orple" == "orple", "orp" != "ump"
    assert rules_en.rhymes("zorple", "florple") is True
    assert rules_en.rhymes("zorp", "blump") is False
    assert rules_en.spelling_key("flame") == "ame" and rules_en.spelling_key("sky") == "y"


# --- slogans ------------------------------------------------------------------------------

SLOGAN = {"subject": "coffee shop", "keywords": ["coffee", "espresso"], "words": 4, "required": [], "forbidden": []}


@pytest.mark.parametrize("text, expected", [
    ("Fresh coffee, warm smiles!", {"word_count": True, "content": True}),
    ("a a a a", {"word_count": True, "content": False}),              # 4 words, but "a" x4 and no keyword
    ("Coffee coffee coffee daily", {"word_count": True, "content": False}),  # keyword three times
    ("Your daily cup of coffee", {"word_count": False, "content": True}),     # 5 words
    ("Fresh coffees every morning", {"word_count": True, "content": False}),  # "coffees" != "coffee"
    ("ESPRESSO: sun-lit mornings start", {"word_count": True, "content": True}),  # "sun-lit" is one word
])
def test_slogans(text, expected):
    score, detail = judge_text("slogan", SLOGAN, text)
    assert detail == expected
    assert score == sum(expected.values()) / len(expected)


def test_required_and_forbidden_words():
    meta = {**SLOGAN, "required": ["fresh"], "forbidden": ["cheap"]}
    _, detail = judge_text("slogan", meta, "Fresh coffee, never cheap")
    assert detail == {"word_count": True, "required_words": True, "forbidden_words": False, "content": True}
    _, detail = judge_text("slogan", meta, "Good coffee, every day")
    assert detail["required_words"] is False and detail["forbidden_words"] is True


# --- Chinese quatrains -------------------------------------------------------------------

def test_jingyesi_is_not_regulated():
    # 霜/乡(鄉) are both 下平七阳; row 2 疑是地上霜 has 是 and 上 (both oblique) at positions
    # 2 and 4, breaking 二四分明, so the tone pattern fails (a 古绝, well known).
    score, detail = judge_text("poem", zh_meta("li_bai_jingyesi", 5), POEMS["li_bai_jingyesi"]["text"])
    assert detail == {"row_number": True, "chars_per_row": True, "rhyme": True, "tone_pattern": False, "title": False}
    assert score == pytest.approx(3 / 5)
    assert judge_text("poem", zh_meta("li_bai_jingyesi", 5), with_title("li_bai_jingyesi"))[1]["title"] is True


def test_dengguanquelou_regulated():
    # positions 2/4: 日仄 山平 | 河平 海仄 | 穷平 里仄 | 上仄 层平 -> alternation, 对 and 粘 hold;
    # 流/楼 are both 下平十一尤.
    score, detail = judge_text("poem", zh_meta("wang_zhihuan_dengguanquelou", 5), with_title("wang_zhihuan_dengguanquelou"))
    assert score == 1.0 and all(detail.values()) and len(detail) == 5


def test_chunxiao_oblique_rhyme_and_broken_adhesion():
    # 晓/鸟/少 all in 上声十七筱 (oblique rhyme is allowed); row 3's 来 (level) should repeat
    # row 2's 处 (oblique) at position 2 (粘), so the tone pattern fails.
    meta = zh_meta("meng_haoran_chunxiao", 5, [[1, 2, 4]])
    _, detail = judge_text("poem", meta, POEMS["meng_haoran_chunxiao"]["text"])
    assert detail["rhyme"] is True and detail["tone_pattern"] is False and detail["chars_per_row"] is True


def test_du_fu_jueju_seven_chars():
    # positions 2/4/6: 个仄 鹂平 翠仄 | 行(either) 鹭仄 青平 | 含平 岭仄 秋平 | 泊仄 吴平 万仄;
    # 天/船 both 下平一先.
    _, detail = judge_text("poem", zh_meta("du_fu_jueju", 7), POEMS["du_fu_jueju"]["text"])
    assert detail == {"row_number": True, "chars_per_row": True, "rhyme": True, "tone_pattern": True, "title": False}
    assert RULES["chars_per_row"](POEMS["du_fu_jueju"]["text"], zh_meta("du_fu_jueju", 5)) is False


def test_chinese_near_misses():
    meta = zh_meta("wang_zhihuan_dengguanquelou", 5)
    broken_rhyme = "白日依山尽，黄河入海流。\n欲穷千里目，更上一层台。"  # 台 is 上平十灰, not 尤
    assert RULES["rhyme"](broken_rhyme, meta) is False
    too_long = "白日依山尽头，黄河入海流。\n欲穷千里目，更上一层楼。"
    assert RULES["chars_per_row"](too_long, meta) is False
    one_per_line = "白日依山尽，\n黄河入海流。\n欲穷千里目，\n更上一层楼。"
    assert judge_text("poem", meta, one_per_line)[1]["row_number"] is True
    three_rows = "白日依山尽，黄河入海流。\n欲穷千里目。"
    assert RULES["row_number"](three_rows, meta) is False and RULES["rhyme"](three_rows, meta) is False


def test_modern_fallback():
    # 啼 is missing from the package's table: pypinyin reads tí (tone 2) -> level
    assert not rules_zh.rhyme_groups("啼") and rules_zh.tones("啼") == {"P"}
    assert rules_zh.modern_rhyme_key("iou") == "ou" and rules_zh.modern_rhyme_key("uan") == rules_zh.modern_rhyme_key("ian") == "an"


# --- API, errors and tables --------------------------------------------------------------

def test_task_rules_cover_registry():
    assert {r for names in TASK_RULES.values() for r in names} == set(RULES)
    assert TASK_RULES["poem:zh"] == ["row_number", "chars_per_row", "rhyme", "tone_pattern", "title"]


@pytest.mark.parametrize("task, meta, message", [
    ("math", SLOGAN, "known: slogan, poem"),
    ("slogan", {**SLOGAN, "words": True}, "'words'"),
    ("slogan", {**SLOGAN, "keywords": []}, "'keywords'"),
    ("poem", {"title": "T", "rows": 2, "words_per_row": 3, "keywords": ["x"], "rhyme": [[1, 3]]}, "'rhyme'"),
    ("poem", {"title": "T", "rows": 2, "keywords": ["x"]}, "'words_per_row'"),
    ("slogan", "{not json", "not valid JSON"),
])
def test_malformed_meta_raises(task, meta, message):
    with pytest.raises(ValueError, match=message):
        judge_text(task, meta, "some text")


def test_score_candidates_keeps_every_row():
    good = json.dumps(SLOGAN)
    df = pl.DataFrame({
        "prompt_id": ["p1", "p1", "p2", "p3", "p1"], "candidate_id": [0, 1, 0, 0, 2],
        "text": ["Fresh coffee, warm smiles!", "a a a a", "x", None, "Fresh coffee, warm smiles!"],
        "task": ["slogan", "slogan", "slogan", "math", "slogan"],
        "meta": [good, good, '{"words": "four"}', good, good],
    })
    out = score_candidates(df)
    validate(out, SCORES)
    assert out["candidate_id"].to_list() == [0, 1, 0, 0, 2] and out["judge"].unique().to_list() == ["rules"]
    assert out["score"].to_list() == [1.0, 0.5, None, None, 1.0]
    assert json.loads(out["detail"][1]) == {"word_count": True, "content": False}
    assert "'words'" in out["error"][2] and "unknown task" in out["error"][3] and out["error"][0] is None


def test_rule_pass_rates():
    meta = json.dumps(SLOGAN)
    df = pl.DataFrame({"prompt_id": ["p"] * 3, "candidate_id": [0, 1, 2],
                       "text": ["Fresh coffee, warm smiles!", "a a a a", "two words"],
                       "task": ["slogan"] * 3, "meta": [meta] * 3})
    rates = rule_pass_rates(score_candidates(df))
    # word count: rows 1, 2 pass (4 words), row 3 fails; content: only row 1 passes
    assert rates.to_dicts() == [
        {"rule": "Word Count", "passed": 2, "total": 3, "rate": pytest.approx(2 / 3)},
        {"rule": "Content", "passed": 1, "total": 3, "rate": pytest.approx(1 / 3)},
    ]
