"""JSON records that slamgeo writes and later reads back, checked against a schema before use.

A record is a JSON file slamgeo writes and reads again: a checkpoint's `model.json`, a season's
`pipeline_state.json` and run manifests, a synthetic scene's `scene.json`. Each has a pydantic
model (kept next to its writer) derived from `Record`: strict JSON types (the string "3" is not
the number 3, `true` is not a number), fields slamgeo does not know kept as they are (a newer
slamgeo may add some). `load_json` parses a record's text and `check_record` validates the
value; either refuses a file that is not JSON, or JSON of another shape, with one line that
names the file and the field (`where: field 'weights': expected an object, found the string
"abc"`), raised as the caller's error class.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from slamgeo.errors import InputError, SlamgeoError

MAX_PROBLEMS = 3  # fields named in one error line; the rest are counted


class Record(BaseModel):
    """Base of the records' models: strict JSON types, unknown fields allowed and kept."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


def _iso_date(value: str) -> str:
    """`value` unchanged if NumPy reads it as a date or date-time (`2017-01-03`,
    `2017-01-03T00:00:00`); else a ValueError."""
    try:
        np.datetime64(value, "ns")
    except ValueError:
        raise ValueError(f"expected an ISO date such as 2017-01-03, found {_found(value)}") from None
    return value


IsoDate = Annotated[str, AfterValidator(_iso_date)]
"""A string holding an ISO date or date-time; kept as the string."""

M = TypeVar("M", bound=BaseModel)

# what a field should have held, by pydantic's error type
_EXPECTED = {
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dict_type": "an object",
    "list_type": "a list",
    "tuple_type": "a list",
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
}


def _found(value: Any) -> str:
    """A JSON value as a user reads it: `null`, `true`, `the number 3`, `the string "abc"`,
    `a list of 2 items`, `an object`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        if len(text) > 40:
            text = text[:36] + '..."'
        return f"the string {text}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _field(loc: tuple) -> str:
    """A pydantic error location as a key path: `normalisation.mean[1]`, `steps.train.status`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(err: Any) -> str:
    """One pydantic error as `field 'a.b': expected ..., found ...`."""
    where = f"field '{_field(err['loc'])}'" if err["loc"] else "the top level"
    kind = err["type"]
    if kind == "missing":
        return f"{where}: missing"
    if kind == "extra_forbidden":
        return f"{where}: unknown field"
    if kind == "value_error":
        return f"{where}: {err['ctx']['error']}"
    expected = _EXPECTED.get(kind)
    what = f"expected {expected}" if expected else err["msg"]
    return f"{where}: {what}, found {_found(err.get('input'))}"


def describe(exc: ValidationError, *, limit: int = MAX_PROBLEMS) -> str:
    """A pydantic validation error as one line: up to `limit` fields, each with what it should
    hold and what it holds, and how many more there are."""
    errors = exc.errors()
    parts = [_problem(e) for e in errors[:limit]]
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def load_json(text: str | bytes, where: object, *, error: type[SlamgeoError] = InputError, advice: str = "") -> Any:
    """The JSON value of a record's `text`; raises `error` naming `where` (the file) when it is
    not JSON. `advice` (e.g. `"; remove it"`) is appended to the message."""
    try:
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not a text file ({exc.reason}){advice}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}){advice}") from None


def check_record(
    data: Any, model: type[M], where: object, *, error: type[SlamgeoError] = InputError, advice: str = ""
) -> M:
    """`data` (a parsed JSON value) validated against `model`; raises `error` with one line
    naming `where` (the file) and the offending fields, `advice` appended."""
    if not isinstance(data, Mapping):
        raise error(f"{where}: expected a JSON object, found {_found(data)}{advice}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{where}: {describe(exc)}{advice}") from None


def record_json(data: Mapping[str, Any], model: type[BaseModel], *, indent: int | None = 2) -> str:
    """`data` as JSON text (NumPy scalars and other values as strings, like `json.dumps(...,
    default=str)`), checked against `model` first: what a writer calls so that the shape of what
    it writes is the one its reader accepts. A mismatch is a bug, raised as ValueError."""
    text = json.dumps(data, indent=indent, default=_plain)
    try:
        model.model_validate(json.loads(text))
    except ValidationError as exc:
        raise ValueError(f"{model.__name__} to write does not validate: {describe(exc)}") from None
    return text


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


__all__ = ["IsoDate", "Record", "check_record", "describe", "load_json", "record_json"]
