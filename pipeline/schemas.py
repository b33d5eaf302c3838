"""Record contracts between stages (DESIGN.md), checked at every boundary.

Each stage writes one Parquet table with one schema. ``validate`` checks a polars
DataFrame against a contract (columns, types, nulls and the uniqueness of the table's key)
and raises ``SchemaError`` naming the file, the first bad row and the column, so a user can
fix their input instead of reading a trace. It is the one boundary check: ``store.read_table``
and ``store.write_table`` call it with the file's path.
"""
from __future__ import annotations

from dataclasses import dataclass

import polars as pl

#: Tasks a prompt may declare; a rule judge or rubric exists for each.
KNOWN_TASKS = ("slogan", "poem", "math", "chat", "ifeval")


class SchemaError(ValueError):
    """Input that breaks a record contract; the message names file, row and field."""

    def __init__(self, path: str | None, row: int | None, field: str | None, problem: str):
        self.path, self.row, self.field, self.problem = path, row, field, problem
        where = [f"file {path}" if path else "input"]
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {problem}")


@dataclass(frozen=True)
class Contract:
    """Required and optional columns of one stage's table, with their polars dtypes."""

    name: str
    required: dict[str, pl.DataType]
    optional: dict[str, pl.DataType]
    nullable: tuple[str, ...] = ()
    #: Columns that identify a row: no two rows may share them (a duplicate would count or pair twice).
    key: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return list(self.required) + list(self.optional)


PROMPTS = Contract(
    "prompts",
    {"prompt_id": pl.String, "prompt": pl.String},
    {"task": pl.String, "meta": pl.String, "reference": pl.String, "split": pl.String},
    nullable=("task", "meta", "reference", "split"),
    key=("prompt_id",),
)
CANDIDATES = Contract(
    "candidates",
    {
        "prompt_id": pl.String, "prompt": pl.String, "candidate_id": pl.Int64, "text": pl.String,
        "model": pl.String, "seed": pl.Int64, "finish_reason": pl.String, "num_tokens": pl.Int64,
    },
    {"task": pl.String, "meta": pl.String},
    nullable=("task", "meta"),
    key=("prompt_id", "candidate_id"),
)
SCORES = Contract(
    "scores",
    {
        "prompt_id": pl.String, "candidate_id": pl.Int64, "judge": pl.String,
        "score": pl.Float64, "detail": pl.String, "error": pl.String,
    },
    {},
    nullable=("score", "error"),
    key=("prompt_id", "candidate_id"),
)
PAIRS = Contract(
    "pairs",
    {
        "prompt_id": pl.String, "prompt": pl.String, "chosen": pl.String, "rejected": pl.String,
        "chosen_id": pl.Int64, "rejected_id": pl.Int64, "chosen_score": pl.Float64,
        "rejected_score": pl.Float64, "margin": pl.Float64,
    },
    {"step_index": pl.Int64},
    nullable=("step_index",),
    key=("prompt_id", "chosen_id", "rejected_id"),
)
CHUNKS = Contract(
    "chunks",
    {**PAIRS.required, "chunk": pl.Int64, "difficulty": pl.Float64},
    PAIRS.optional,
    nullable=PAIRS.nullable,
    key=PAIRS.key,
)
JUDGMENTS = Contract(
    "judgments",
    {
        "prompt_id": pl.String, "repeat": pl.Int64, "model": pl.String, "baseline": pl.String,
        "judge": pl.String, "model_text": pl.String, "baseline_text": pl.String,
        "model_len": pl.Int64, "baseline_len": pl.Int64, "preference": pl.Float64,
        "error": pl.String,
    },
    {},
    nullable=("preference", "error"),
)

CONTRACTS = {c.name: c for c in (PROMPTS, CANDIDATES, SCORES, PAIRS, CHUNKS, JUDGMENTS)}


def _first_bad_row(mask: pl.Series) -> int:
    """1-based number of the first row where ``mask`` is true (rows as a person counts them)."""
    return int(mask.arg_true()[0]) + 1


def validate(df: pl.DataFrame, contract: Contract, path: str | None = None) -> pl.DataFrame:
    """Check ``df`` against ``contract``; return it with the contract's dtypes.

    Integer columns may arrive as any integer width and are cast losslessly; a column
    of the wrong kind (text where a number belongs) or a null in a required column is
    reported with its row (1-based: the first record is row 1) and column name.
    """
    for col, dtype in contract.required.items():
        if col not in df.columns:
            raise SchemaError(path, None, col, f"missing required column for the {contract.name} contract "
                              f"(has: {', '.join(df.columns) or 'no columns'})")
    casts = []
    for col, dtype in {**contract.required, **contract.optional}.items():
        if col not in df.columns:
            continue
        have = df.schema[col]
        if have == pl.Null:
            casts.append(pl.col(col).cast(dtype))
            continue
        if have != dtype:
            ok = (dtype.is_numeric() and have.is_numeric()) or (dtype == pl.String and have == pl.Categorical)
            if not ok:
                raise SchemaError(path, None, col, f"has type {have}, the {contract.name} contract wants {dtype}")
            casts.append(pl.col(col).cast(dtype, strict=True))
        if col not in contract.nullable:
            nulls = df[col].is_null()
            if nulls.any():
                raise SchemaError(path, _first_bad_row(nulls), col, "is null, but the column is required")
    df = df.with_columns(casts) if casts else df
    check_key(df, contract, path)
    return df


def check_key(df: pl.DataFrame, contract: Contract, path: str | None = None) -> None:
    """Raise ``SchemaError`` at the first row whose key (``contract.key``) an earlier row already has."""
    key = [c for c in contract.key if c in df.columns]
    if not key or len(key) < len(contract.key) or df.height < 2:
        return
    repeats = ~df.select(pl.struct(key).is_first_distinct()).to_series()
    if not repeats.any():
        return
    row = _first_bad_row(repeats)
    values = df.row(row - 1, named=True)
    first = _first_bad_row(df.select(pl.all_horizontal(pl.col(c).eq_missing(values[c]) for c in key)).to_series())
    label = key[0] if len(key) == 1 else f"({', '.join(key)})"
    shown = repr(values[key[0]]) if len(key) == 1 else f"({', '.join(repr(values[c]) for c in key)})"
    raise SchemaError(path, row, ", ".join(key), f"duplicate {label} {shown}, first at row {first}: the "
                      f"{contract.name} contract wants one row per {label}")
