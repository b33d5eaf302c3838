"""Generate prefwork's task data deterministically (stdlib only): ``python data/make_tasks.py``.

Writes ``data/prompts/train.jsonl``, ``data/prompts/heldout.jsonl`` (slogan and English poem
prompts with their constraint ``meta``) and ``data/corpus/sft.jsonl`` (the SFT corpus of the tiny
from-scratch policy). ``--stats`` also prints the corpus's per-rule pass rates with the rule
judge (``evaluators.rules``, needs the project's venv).

Held-out design (checked by tests/test_task_data.py):
- subjects, titles and keywords of held-out prompts never occur in the training prompts. The SFT
  corpus, the tiny policy's "pretraining", covers every subject (as a real LLM knows what a
  bookstore is), but never a held-out prompt: preference learning only ever sees training
  prompts, and the held-out split measures how far what it taught carries to new prompts;
- slogan lengths: train prompts {3, 4, 6, 7}, held-out {5};
- poem (rows, words per row): train prompts {2, 3, 4, 6} x {3, 4, 5, 6} minus (4, 4) and (3, 5);
  held-out (4, 4), (3, 5) and (5, 4) (5 rows: a value no training prompt has).
  The SFT corpus covers every length and shape, like the subjects: measured, a tiny policy
  that never saw a 5-word slogan cannot produce one, and nothing preference training teaches
  on training prompts carries over to a value the policy has no notion of.
- a tiny model cannot learn to copy words it never saw, so the corpus puts the subject word,
  when a response has it, second (lowercase: the same token as in the prompt), and a quoted word
  (required, or forbidden when a response wrongly uses it) first, lowercase as quoted. The corpus
  asks for required/forbidden words more often than the prompt files (``WORD_CONSTRAINT_RATES``)
  so that copying a quoted word is a habit the policy learns; poem end words come from
  ``END_FAMILIES`` rhyme families, a whole poem in one family when it rhymes.

The corpus's responses satisfy each constraint only part of the time, with independent,
prompt-agnostic failure modes (keyword missing, word count off by 1-2, a word used three times,
title line missing, row count off, a row's length off, end words that do not rhyme, a forbidden
word used) so that preference learning has room. Corpus per-rule pass rates (rule judge, ``--stats``):
  slogan (2400): word_count 0.55, required_words 0.63 (of 1449), forbidden_words 0.42 (of 974), content 0.53
  poem (2400):   title 0.54, row_number 0.54, words_per_row 0.54, rhyme 0.69 (of 1289), content 0.54
What the SFT policy makes of it on held-out prompts (all nine rules between 20% and 80%) is
measured by the loop's round-0 rule table and asserted in tests/test_loop_e2e.py.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from prefwork.data.task_prompts import (CORPUS_SIZE, COUNTS, POEM_FILLER, POEM_SUBJECTS, RHYME_FAMILIES,
                                        SLOGAN_FILLER, SLOGAN_SUBJECTS, make_prompts, parse_subjects,
                                        poem_prompt, slogan_prompt)

ROOT = Path(__file__).resolve().parent
SEED = 20240607


# --- SFT corpus: responses that meet each constraint only part of the time ---------------

P_KEYWORD, P_REPEAT, P_EXACT, P_TITLE, P_ROWS, P_ROW_LENGTHS, P_RHYME, P_REQUIRED, P_FORBIDDEN = (
    0.7, 0.25, 0.55, 0.55, 0.55, 0.55, 0.9, 0.7, 0.35)
#: poem end words come from these few rhyme families: a tiny model learns a few end-word habits,
#: not fourteen (with all of them its poems rhymed 4% of the time)
END_FAMILIES = 3
#: share of keyword mentions that use the head noun, which the prompt itself contains, so a
#: policy can learn to copy it from the prompt (the only way to be on topic for unseen subjects)
P_HEAD_NOUN = 0.9


class Bag:
    """Draws words at random, each at most ``cap`` times (so content fails only when we say)."""

    def __init__(self, rng: random.Random, words, banned=(), cap: int = 2):
        self.rng, self.cap = rng, cap
        self.words = sorted(set(words) - set(banned))
        self.count: dict[str, int] = {}

    def take(self, word: str) -> str:
        self.count[word] = self.count.get(word, 0) + 1
        return word

    def draw(self, choices=None) -> str:
        pool = [w for w in (choices or self.words) if self.count.get(w, 0) < self.cap]
        return self.take(self.rng.choice(pool or self.words))


def off_by(rng: random.Random, n: int, p_exact: float, deltas=(-2, -1, 1, 2)) -> int:
    return n if rng.random() < p_exact else max(1, n + rng.choice(deltas))


def inject_repeat(rng: random.Random, words: list[str], protect: set[int]) -> None:
    """Make one word occur three times by overwriting two other free positions."""
    free = [i for i in range(len(words)) if i not in protect]
    if len(free) >= 3:
        src, *dst = rng.sample(free, 3)
        for i in dst:
            words[i] = words[src]


def slogan_response(rng: random.Random, meta: dict, related: list[str]) -> str:
    length = off_by(rng, meta["words"], P_EXACT)
    special = []
    if rng.random() < P_KEYWORD:
        special.append(meta["keywords"][0] if rng.random() < P_HEAD_NOUN else rng.choice(meta["keywords"]))
    if meta["required"] and rng.random() < P_REQUIRED:
        special += meta["required"]
    if meta["forbidden"] and rng.random() >= P_FORBIDDEN:
        special += meta["forbidden"]
    banned = set(meta["keywords"]) | set(meta["required"]) | set(meta["forbidden"])
    bag = Bag(rng, related + SLOGAN_FILLER, banned, cap=1)
    words = (special + [bag.draw() for _ in range(length)])[:length]
    keyword = words[0] if special and special[0] in meta["keywords"] else None
    quoted = [w for w in meta["required"] + meta["forbidden"] if w in words]
    rng.shuffle(words)
    if quoted:  # a quoted word the answer uses goes first, lowercase as quoted, so copying it is one habit
        words.remove(quoted[0])
        words.insert(0, quoted[0])
    if keyword and len(words) > 1:  # the subject word goes second, lowercase: the same token as in the prompt
        words.remove(keyword)
        words.insert(1, keyword)
    if rng.random() < P_REPEAT:
        inject_repeat(rng, words, set())
    text = " ".join(words)
    return (text if quoted else text[:1].upper() + text[1:]) + rng.choice(("", ".", "!"))


def end_words(rng: random.Random, rows: int, groups, bag: Bag) -> dict[int, str]:
    """Row index (0-based) -> last word: with probability P_RHYME every row ends in one rhyme
    family (so any scheme the prompt asks for holds), else each rhyme group's rows do not rhyme."""
    ends = {}
    families = [[w for w in f if w in bag.words] for f in RHYME_FAMILIES[:END_FAMILIES]]
    families = [f for f in families if len(f) >= 3]
    if rng.random() < P_RHYME:  # the whole poem in one rhyme family: one habit, whatever the scheme
        fam = rng.choice(families)
        fresh = rng.sample(fam, min(rows, len(fam)))  # distinct words: a word does not rhyme with itself
        return {i: bag.take(fresh[i]) if i < len(fresh) else bag.draw(fam) for i in range(rows)}
    for group in groups or []:  # otherwise each rhyme group's rows end in different families
        members = [i - 1 for i in group if i - 1 < rows]
        for i, fam in zip(members, rng.sample(families, len(members))):
            ends[i] = bag.draw(fam)
    for i in range(rows):
        if i not in ends:
            ends[i] = bag.draw(rng.choice(families))
    return ends


def poem_response(rng: random.Random, meta: dict, related: list[str]) -> str:
    rows = off_by(rng, meta["rows"], P_ROWS, (-2, -1, 1, 1))
    lengths = [meta["words_per_row"]] * rows
    if rng.random() >= P_ROW_LENGTHS:
        for k in rng.sample(range(rows), min(rows, rng.choice((1, 2)))):
            lengths[k] = max(1, lengths[k] + rng.choice((-1, 1)))
    bag = Bag(rng, related + POEM_FILLER + [w for f in RHYME_FAMILIES for w in f], meta["keywords"])
    ends = end_words(rng, rows, meta["rhyme"], bag)
    lines = [[bag.draw(related + POEM_FILLER) for _ in range(n - 1)] + [ends[i]] for i, n in enumerate(lengths)]
    flat = [(r, c) for r, line in enumerate(lines) for c in range(len(line) - 1)]
    if flat and rng.random() < P_KEYWORD:
        r, c = flat[min(1, len(flat) - 1)]  # second word of the first row, like the slogans
        lines[r][c] = meta["keywords"][0] if rng.random() < P_HEAD_NOUN else rng.choice(meta["keywords"])
    if rng.random() < P_REPEAT:
        words = [w for line in lines for w in line]
        inject_repeat(rng, words, {len(words) - 1})
        it = iter(words)
        lines = [[next(it) for _ in line] for line in lines]
    text = [" ".join(line) for line in lines]
    text = [t[:1].upper() + t[1:] + rng.choice(("", "", ",")) for t in text]
    if rng.random() < P_TITLE:
        text.insert(0, meta["title"])
    return "\n".join(text)


def make_corpus(rng: random.Random, exclude: set[str] = frozenset()) -> list[dict]:
    """SFT examples over every subject, slogan length and poem shape (the policy's "pretraining"
    knowledge), never a held-out prompt (``exclude``): preference data only ever comes from
    training prompts, and held-out prompts are new to the policy."""
    out = []
    for make, respond, block, count in ((slogan_prompt, slogan_response, SLOGAN_SUBJECTS, CORPUS_SIZE[0]),
                                        (poem_prompt, poem_response, POEM_SUBJECTS, CORPUS_SIZE[1])):
        subjects = parse_subjects(block["train"]) + parse_subjects(block["extra"]) + parse_subjects(block["heldout"])
        made = 0
        while made < count:
            subj = rng.choice(subjects)
            rec = make(rng, subj, "corpus")
            if rec["prompt"] in exclude:
                continue
            made += 1
            out.append({"prompt": rec["prompt"], "response": respond(rng, rec["meta"], subj["words"]),
                        "task": rec["task"], "meta": rec["meta"]})
    rng.shuffle(out)
    return out


def tokens(text: str) -> set[str]:
    return {t.strip("\"'.,!?;:").lower() for t in text.split()}


def check_disjoint(train: list[dict], heldout: list[dict], corpus: list[dict]) -> list[str]:
    """Problems with the held-out claims (empty when they hold): no held-out keyword in a training prompt."""
    seen = set()
    for rec in train:
        seen |= tokens(rec["prompt"]) | {w.lower() for w in rec["meta"]["keywords"]}
    problems = []
    for rec in heldout:
        clash = {k for k in rec["meta"]["keywords"] if k.lower() in seen}
        if clash:
            problems.append(f"held-out keywords {sorted(clash)} occur in training data")
    return sorted(set(problems))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def print_stats(corpus: list[dict]) -> None:
    """Per-rule pass rates of the corpus with the project's rule judge."""
    import sys
    sys.path.insert(0, str(ROOT.parent))
    from prefwork.evaluators.rules import judge_text
    tally: dict[tuple[str, str], list[int]] = {}
    for rec in corpus:
        _, detail = judge_text(rec["task"], rec["meta"], rec["response"])
        for rule, ok in detail.items():
            t = tally.setdefault((rec["task"], rule), [0, 0])
            t[0] += ok
            t[1] += 1
    for (task, rule), (passed, total) in sorted(tally.items()):
        print(f"{task:7s} {rule:16s} {passed / total:.2f}  ({passed}/{total})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stats", action="store_true", help="print the corpus's per-rule pass rates")
    parser.add_argument("--train-counts", nargs=2, type=int, metavar=("SLOGANS", "POEMS"),
                        help="write only a training split of this size to --train-out (for data-size "
                             "experiments; the shipped files are left alone)")
    parser.add_argument("--train-out", type=Path, help="where --train-counts writes its training prompts")
    args = parser.parse_args()
    if args.train_counts:
        if not args.train_out:
            parser.error("--train-counts needs --train-out")
        COUNTS["train"] = tuple(args.train_counts)
        train = make_prompts(random.Random(SEED), "train")
        problems = check_disjoint(train, make_prompts(random.Random(SEED + 1), "heldout"), [])
        if problems:
            raise SystemExit("held-out data leaks into training:\n" + "\n".join(problems))
        write_jsonl(args.train_out, train)
        print(f"train {len(train)} -> {args.train_out}")
        return
    train = make_prompts(random.Random(SEED), "train")
    heldout = make_prompts(random.Random(SEED + 1), "heldout")
    corpus = make_corpus(random.Random(SEED + 2), exclude={r["prompt"] for r in heldout})
    problems = check_disjoint(train, heldout, corpus)
    if problems:
        raise SystemExit("held-out data leaks into training:\n" + "\n".join(problems))
    write_jsonl(ROOT / "prompts" / "train.jsonl", train)
    write_jsonl(ROOT / "prompts" / "heldout.jsonl", heldout)
    write_jsonl(ROOT / "corpus" / "sft.jsonl", corpus)
    print(f"train {len(train)}, heldout {len(heldout)}, corpus {len(corpus)}")
    if args.stats:
        print_stats(corpus)


if __name__ == "__main__":
    main()
