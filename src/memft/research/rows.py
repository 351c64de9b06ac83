"""Result rows: one experiment point's numbers, as `memft.research.runs.run_point` makes them (`ROW_FIELDS`, then the
resolved settings) and as the results store gives them back (`ResultRow`).

A `ResultRow` is typed (row.rank, row.delta_loss, ...) and is also a read-only mapping of the same keys
(row["rank"], row.get("lr_schedule")), so the pure functions of the law, the figures, the report and the claims take
it or any mapping shaped like it (a test's dict). What it holds:
- the row's fields (`ROW_FIELDS`, always there, None when not measured) and the resolved settings (`SETTINGS_FIELDS`,
  there when the row has them; stores written by older memft lack some);
- `extra`: every other key of the row, and, when read with its point, the point's config keys the row does not carry
  (lr_schedule, stop_when_certified, max_grad_norm, ...), which law fits and the claims group by;
- `point`: the requested point itself (the sweep config; a row's `length` is the value tokens it got, the point's
  what was asked), and, when read with them, `probs` / `correct` (per record, per position) and the training `curve`.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

ROW_FIELDS = (
    "benchmark", "model", "method", "rank", "length", "ratio", "records", "seed",
    "loss_init", "loss_final", "delta_loss", "token_accuracy", "token_accuracy_tf", "exact_match", "certified",
    "p_above_half", "min_prob", "steps", "steps_to_certify", "seconds",
    "heldout_exact_match", "heldout_token_accuracy",
    "first_failure", "earliest_stubborn", "stubborn_positions",
)
SETTINGS_FIELDS = ("lr", "max_steps", "margin", "batch_size", "preset", "dtype", "device")  # memft.research.runs.settings_of
ATTACHED = ("point", "probs", "correct", "curve")  # what a read adds next to the row (memft.research.results.read_rows)

Row = Mapping[str, Any]  # what the law, figures, report and claims take: a ResultRow, or a mapping shaped like one


@dataclass(frozen=True, eq=False)  # equality is the mapping's: a row equals a dict of the same keys and values
class ResultRow(Mapping[str, Any]):
    """One finished run (see the module docstring). Fractions in [0, 1]; losses are means over target tokens; per-record
    lists are in record order; positions from 0. As a mapping it has the keys it was read with, in their order
    (`keys_`; for a row built directly: ROW_FIELDS, the settings it has, the attachments it has, then `extra`)."""

    run_id: str | None = None
    benchmark: str | None = None
    model: str | None = None
    method: str | None = None
    rank: int | None = None
    length: int | None = None  # value tokens of the record set
    ratio: float | None = None  # stress only: the share of random tokens
    records: int | None = None
    seed: int | None = None
    loss_init: float | None = None
    loss_final: float | None = None
    delta_loss: float | None = None
    token_accuracy: float | None = None  # free run
    token_accuracy_tf: float | None = None  # teacher-forced: target = argmax
    exact_match: float | None = None
    certified: float | None = None
    p_above_half: float | None = None
    min_prob: float | None = None
    steps: int | None = None
    steps_to_certify: int | None = None
    seconds: float | None = None
    heldout_exact_match: float | None = None
    heldout_token_accuracy: float | None = None
    first_failure: list[int | None] | None = None  # per record
    earliest_stubborn: list[int | None] | None = None  # per record
    stubborn_positions: list[list[int]] | None = None  # per record
    lr: float | None = None
    max_steps: int | None = None
    margin: float | None = None
    batch_size: int | None = None
    preset: str | None = None
    dtype: str | None = None
    device: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    point: Mapping[str, Any] | None = None
    probs: list[list[float]] | None = None  # [record][position] teacher-forced p(target)
    correct: list[list[bool]] | None = None  # [record][position] target == argmax
    curve: list[dict[str, Any]] | None = None  # one {"step", *memft.research.results.CURVE_FIELDS} per step
    keys_: tuple[str, ...] | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, row: Mapping[str, Any], run_id: str | None = None, point: Mapping[str, Any] | None = None,
                  **attached: Any) -> ResultRow:
        """A stored row (what run_point returned) with its run id; `point`: the run's config, whose keys the row does
        not carry join `extra`; `attached`: probs, correct, curve.

        >>> r = ResultRow.from_json({"rank": 4, "lr": 0.01, "note": "x"}, "id", point={"rank": 4, "lr_schedule": "linear"})
        >>> r.rank, r["lr"], r.extra, r.get("lr_schedule"), r.get("margin"), list(r)
        (4, 0.01, {'note': 'x', 'lr_schedule': 'linear'}, 'linear', None, ['run_id', 'rank', 'lr', 'note', 'point', 'lr_schedule'])
        """
        stored = [k for k in row if k != "run_id" and k not in ATTACHED]
        merged = {k: row[k] for k in stored}
        for k, v in (point or {}).items():
            merged.setdefault(k, v)
        typed = {k: merged.pop(k) for k in (*ROW_FIELDS, *SETTINGS_FIELDS) if k in merged}
        attached = {k: v for k, v in attached.items() if v is not None}
        if point is not None:
            attached["point"] = dict(point)
        keys = (["run_id"] if run_id is not None else []) + stored + [k for k in ATTACHED if k in attached]
        keys += [k for k in (point or {}) if k not in keys and k not in ATTACHED and k != "run_id"]
        return cls(run_id=run_id, **typed, extra=merged, **attached, keys_=tuple(keys))

    def to_json(self) -> dict[str, Any]:
        """The row as the store holds it (its keys in order, without the run id and the attachments)."""
        return {k: self[k] for k in self if k != "run_id" and k not in ATTACHED}

    def replace(self, **changes: Any) -> ResultRow:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ the mapping view

    def _keys(self) -> tuple[str, ...]:
        if self.keys_ is not None:
            return self.keys_
        head = ("run_id",) if self.run_id is not None else ()
        rest = tuple(k for k in (*SETTINGS_FIELDS, *ATTACHED) if getattr(self, k) is not None)
        return (*head, *ROW_FIELDS, *rest, *self.extra)

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return self.extra[key] if key in self.extra else getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())
