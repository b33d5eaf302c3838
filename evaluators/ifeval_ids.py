"""Which IFEval instruction ids the ``ifeval`` judge runs (``evaluators.ifeval``), and why it refuses the others.

A table of its own, so that the judge module stays short; ``evaluators.ifeval`` re-exports both names.
"""
from __future__ import annotations

#: IFEval instruction ids whose checker runs offline, with no NLTK data installed. Measured by
#: calling each checker on a passing and a failing text with NLTK data absent and the network
#: cut (``unshare -rn``); tests/test_ifeval.py keeps one hand-written pass/fail pair per id.
SUPPORTED_IDS: tuple[str, ...] = (
    "keywords:existence",
    "keywords:frequency",
    "keywords:forbidden_words",
    "keywords:letter_frequency",
    "language:response_language",
    "length_constraints:number_paragraphs",
    "length_constraints:number_words",
    "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders",
    "detectable_content:postscript",
    "detectable_format:number_bullet_lists",
    "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections",
    "detectable_format:multiple_sections",
    "detectable_format:json_format",
    "detectable_format:title",
    "combination:two_responses",
    "combination:repeat_prompt",
    "startend:end_checker",
    "startend:quotation",
    "change_case:english_capital",
    "change_case:english_lowercase",
    "punctuation:no_comma",
)

#: IFEval ids this judge refuses, and why (a row naming one gets an error, not a silent skip).
UNSUPPORTED_IDS: dict[str, str] = {
    "length_constraints:number_sentences": "its checker splits sentences with NLTK's punkt_tab data, "
    "which is not installed and cannot be downloaded here",
    "change_case:capital_word_frequency": "its checker tokenizes with nltk.word_tokenize, which needs "
    "NLTK's punkt_tab data, not installed and not downloadable here",
    "keywords:key_sentences": "disabled in IFEval's own registry (no sentence set)",
    "detectable_content:rephrase_paragraph": "disabled in IFEval's own registry",
    "detectable_format:rephrase": "disabled in IFEval's own registry",
    "multi-turn:constrained_start": "disabled in IFEval's own registry",
}
