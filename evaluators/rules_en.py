"""English rule checks for slogans and short poems (used through ``evaluators.rules``).

Text conventions (the contract a policy's answer is judged under):

- A *word* is a maximal run of letters or digits, possibly joined by internal apostrophes
  or hyphens ("don't", "sun-lit" are one word each); other punctuation separates words and
  never counts. Words are compared case-insensitively.
- A *slogan* is the whole answer; every word in it counts (a second line adds words).
- A *poem* is a list of non-empty lines (surrounding whitespace stripped). Its first line is
  the *title line* when, after normalisation, it equals the requested title; normalisation
  lowercases, drops an optional leading ``title:`` label, removes every character that is not
  a letter, digit or space (quotes, ``#``, ``*``, punctuation) and collapses spaces. So
  ``"Autumn Rain"``, ``# autumn rain`` and ``Title: Autumn Rain.`` are title lines for
  "Autumn Rain". The *rows* are the remaining non-empty lines (all lines when there is no
  title line): a poem without a title line has all its lines counted as rows.
- Rhyme: two rows rhyme when their last words differ and share a rhyming part (the last
  stressed vowel, primary or secondary, and what follows) in the CMU Pronouncing Dictionary
  (``pronouncing``), under any of their listed pronunciations. Identical last words do not
  count (repeating a word is not a rhyme, and would be a trivial way to game the rule). If
  either word is missing from the dictionary both fall back to a spelling key: the last vowel
  group (a e i o u y) and the consonants after it, with a silent final "e" kept after a
  consonant ("flame" -> "ame", "zorp" -> "orp", "sky" -> "y").
"""
from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

import pronouncing

WORD_RE = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
_TITLE_LABEL_RE = re.compile(r"^\s*title\s*:\s*", re.IGNORECASE)
_NON_TITLE_CHARS_RE = re.compile(r"[^\w\s]|_")
_VOWEL_TAIL_RE = re.compile(r"[aeiouy]+[^aeiouy]*$")

#: A word may occur at most this many times in an answer for the ``content`` rule.
MAX_REPEAT = 2


@lru_cache(maxsize=256)
def words(text: str) -> tuple[str, ...]:
    """The answer's words, lowercased, in order (see the module docstring); cached because
    several rules of one answer ask for them."""
    return tuple(WORD_RE.findall(text.lower()))


def normalise_title(line: str) -> str:
    """Canonical form used to decide whether a line is the requested title."""
    line = _TITLE_LABEL_RE.sub("", line.lower())
    return " ".join(_NON_TITLE_CHARS_RE.sub(" ", line).split())


@lru_cache(maxsize=1024)
def split_poem(text: str, title: str) -> tuple[bool, tuple[str, ...]]:
    """``(has_title_line, rows)`` of a poem answer; cached because several rules ask."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    want = normalise_title(title)
    if lines and want and normalise_title(lines[0]) == want:
        return True, tuple(lines[1:])
    return False, tuple(lines)


@lru_cache(maxsize=4096)
def _split_phrases(phrases: tuple[str, ...]) -> tuple[frozenset[str], tuple[tuple[str, ...], ...]]:
    """Single-word phrases as a set (fast membership), longer ones as word tuples."""
    parsed = [words(p) for p in phrases]
    return frozenset(p[0] for p in parsed if len(p) == 1), tuple(p for p in parsed if len(p) > 1)


def has_phrase(tokens: tuple[str, ...], phrase: str) -> bool:
    """True when ``phrase`` (one or more words) occurs as consecutive tokens."""
    return any_phrase(tokens, (phrase,))


def any_phrase(tokens: tuple[str, ...], phrases) -> bool:
    """True when any of ``phrases`` occurs in ``tokens`` (whole words, case-insensitive)."""
    singles, multi = _split_phrases(tuple(phrases))
    if singles and not singles.isdisjoint(tokens):
        return True
    return any(tokens[i:i + len(m)] == m for m in multi for i in range(len(tokens) - len(m) + 1))


def content_ok(tokens: tuple[str, ...], keywords) -> bool:
    """At least one keyword is mentioned and no word occurs more than ``MAX_REPEAT`` times."""
    if not tokens or not any_phrase(tokens, keywords):
        return False
    return max(Counter(tokens).values()) <= MAX_REPEAT


# --- slogan rules -------------------------------------------------------------------------

def slogan_word_count(text: str, meta: dict) -> bool:
    """The slogan has exactly ``meta["words"]`` words."""
    return len(words(text)) == meta["words"]


def slogan_required(text: str, meta: dict) -> bool | None:
    """Every word or phrase in ``meta["required"]`` occurs (None when nothing is required)."""
    req = meta.get("required") or []
    if not req:
        return None
    tokens = words(text)
    return all(has_phrase(tokens, r) for r in req)


def slogan_forbidden(text: str, meta: dict) -> bool | None:
    """No word or phrase in ``meta["forbidden"]`` occurs (None when nothing is forbidden)."""
    bad = meta.get("forbidden") or []
    if not bad:
        return None
    tokens = words(text)
    return not any_phrase(tokens, bad)


def slogan_content(text: str, meta: dict) -> bool:
    """On topic (a keyword occurs) and not degenerate (no word more than twice)."""
    return content_ok(words(text), meta["keywords"])


# --- English poem rules -------------------------------------------------------------------

def poem_title(text: str, meta: dict) -> bool:
    """The first non-empty line is the requested title."""
    return split_poem(text, meta["title"])[0]


def poem_row_number(text: str, meta: dict) -> bool:
    """The poem has exactly ``meta["rows"]`` rows (title line excluded)."""
    return len(split_poem(text, meta["title"])[1]) == meta["rows"]


def poem_words_per_row(text: str, meta: dict) -> bool:
    """Every row has exactly ``meta["words_per_row"]`` words (and there is at least one row)."""
    rows = split_poem(text, meta["title"])[1]
    n = meta["words_per_row"]
    return bool(rows) and all(len(words(r)) == n for r in rows)


def poem_content(text: str, meta: dict) -> bool:
    """Content over the rows only, so copying the title line earns no keyword."""
    rows = split_poem(text, meta["title"])[1]
    return content_ok(words("\n".join(rows)), meta["keywords"])


def poem_rhyme(text: str, meta: dict) -> bool | None:
    """Each group of 1-based rows in ``meta["rhyme"]`` ends in mutually rhyming words."""
    groups = meta.get("rhyme")
    if not groups:
        return None
    rows = split_poem(text, meta["title"])[1]
    for group in groups:
        if any(i > len(rows) for i in group):
            return False
        ends = [last_word(rows[i - 1]) for i in group]
        if not all(rhymes(ends[0], e) for e in ends[1:]):
            return False
    return True


def last_word(row: str) -> str:
    """The row's last word, lowercased ('' when the row has none)."""
    found = WORD_RE.findall(row)
    return found[-1].lower() if found else ""


_STRESS_RE = re.compile(r"\d")


@lru_cache(maxsize=65536)
def _cmu_keys(word: str) -> frozenset[str]:
    """Rhyming parts of a word's CMU pronunciations, stress digits dropped after locating
    the last stressed vowel (so "hills" / "daffodils", IH1 vs IH2, rhyme)."""
    if pronouncing.lookup is None:  # the dictionary loads once, from the installed package
        pronouncing.init_cmu()
    phones = pronouncing.lookup.get(word, ())
    return frozenset(_STRESS_RE.sub("", pronouncing.rhyming_part(p)) for p in phones)


def spelling_key(word: str) -> str:
    """Fallback rhyme key from spelling, for words the CMU dictionary lacks."""
    w = re.sub(r"[^a-z]", "", word.lower())
    silent_e = len(w) > 3 and w.endswith("e") and w[-2] not in "aeiouy"
    stem = w[:-1] if silent_e else w
    m = _VOWEL_TAIL_RE.search(stem)
    key = m.group(0) if m else stem
    return key + ("e" if silent_e else "")


@lru_cache(maxsize=65536)
def rhymes(a: str, b: str) -> bool:
    """Whether two (lowercase) words rhyme; see the module docstring for the definition."""
    if not a or not b or a == b:
        return False
    ka, kb = _cmu_keys(a), _cmu_keys(b)
    if ka and kb:
        return not ka.isdisjoint(kb)
    return spelling_key(a) == spelling_key(b)
