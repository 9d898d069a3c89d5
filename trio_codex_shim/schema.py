"""JSON Schema of the wire protocol, generated from the protocol Structs.

The Structs in :mod:`~.protocol` are the single source of truth; msgspec
writes the schema from them (``msgspec.json.schema``), so the two cannot
drift.  ``trio-codex-shim schema`` prints :func:`schema_json`.

:func:`validate` checks a decoded JSON value against the subset of JSON
Schema (draft 2020-12) that msgspec emits — ``type``, ``enum``, ``const``,
``required``, ``properties``, ``additionalProperties``, ``items``,
``anyOf``/``oneOf``/``allOf`` (with an OpenAPI ``discriminator`` as a
shortcut), local ``$ref``, numeric bounds and string lengths — and refuses
any other assertion keyword rather than ignoring it.  Numbers follow
msgspec's JSON rules: ``1.0`` is a number but not an integer, and booleans
are neither.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

from . import protocol as p

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
_REF_TEMPLATE: Final = "#/$defs/{name}"
_COMMAND: Final = "Command"
_EVENT: Final = "Event"


def command_schema() -> dict[str, Any]:
    """The schema of one orchestrator → shim frame (any Command), self-contained."""
    return _with_dialect(msgspec.json.schema(p.AnyCommand))


def event_schema() -> dict[str, Any]:
    """The schema of one shim → orchestrator frame (any Event), self-contained."""
    return _with_dialect(msgspec.json.schema(p.AnyEvent))


def protocol_schema() -> dict[str, Any]:
    """One document for both directions.

    ``$defs`` holds every message and enum plus ``Command`` and ``Event`` (the
    two tagged unions); the document itself accepts either.
    """
    (commands, events), defs = msgspec.json.schema_components(
        [p.AnyCommand, p.AnyEvent], ref_template=_REF_TEMPLATE
    )
    assert not {_COMMAND, _EVENT} & defs.keys(), "a message is named like a union"
    defs[_COMMAND] = commands
    defs[_EVENT] = events
    return {
        "$schema": DIALECT,
        "title": "trio-codex-shim wire protocol (batty-compatible)",
        "description": (
            "One frame's JSON payload: a Command (tagged by `cmd`) from the "
            "orchestrator, or an Event (tagged by `event`) from the shim. Frames are a "
            f"4-byte big-endian length (at most {p.MAX_FRAME_BYTES}) and that many bytes."
        ),
        "anyOf": [{"$ref": _REF_TEMPLATE.format(name=n)} for n in (_COMMAND, _EVENT)],
        "$defs": dict(sorted(defs.items())),
    }


def schema_json() -> str:
    """:func:`protocol_schema` as indented JSON text (ends with a newline)."""
    text = msgspec.json.format(msgspec.json.encode(protocol_schema()), indent=2)
    return text.decode() + "\n"


def _with_dialect(schema: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": DIALECT, **schema}


# ---------------------------------------------------------------------------
# A validator for the subset msgspec emits
# ---------------------------------------------------------------------------

_ANNOTATIONS: Final = frozenset(
    {
        "$schema",
        "$id",
        "$defs",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "discriminator",  # used as a shortcut under anyOf/oneOf, asserts nothing itself
        "format",  # an annotation by default in draft 2020-12
    }
)
_HANDLED: Final = frozenset(
    {
        "$ref",
        "type",
        "enum",
        "const",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "anyOf",
        "oneOf",
        "allOf",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
    }
)


class UnsupportedSchema(ValueError):
    """The schema uses a keyword this validator does not implement."""


def validate(instance: object, schema: Mapping[str, Any]) -> list[str]:
    """Every way ``instance`` (decoded JSON) fails ``schema``; empty when it is valid.

    ``$ref`` must be local (``#/...``) and resolves against ``schema``.
    Raises :class:`UnsupportedSchema` for a keyword outside the subset.
    """
    errors: list[str] = []
    _check(instance, schema, schema, "$", errors)
    return errors


def _check(
    value: object, schema: Mapping[str, Any], root: Mapping[str, Any], path: str, errors: list[str]
) -> None:
    unknown = set(schema) - _HANDLED - _ANNOTATIONS
    if unknown:
        raise UnsupportedSchema(f"unsupported keyword(s) {sorted(unknown)} at {path}")
    if "$ref" in schema:
        _check(value, _resolve(root, schema["$ref"]), root, path, errors)
    if "type" in schema:
        types = schema["type"]
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, name) for name in names):
            errors.append(f"{path}: expected {' or '.join(names)}, got {_json_type(value)}")
            return
    if "enum" in schema and not any(_same(value, x) for x in schema["enum"]):
        errors.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if "const" in schema and not _same(value, schema["const"]):
        errors.append(f"{path}: expected {schema['const']!r}, got {value!r}")
    _check_number(value, schema, path, errors)
    _check_sized(value, schema, path, errors)
    if isinstance(value, dict):
        _check_object(value, schema, root, path, errors)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], root, f"{path}[{i}]", errors)
    for sub in schema.get("allOf", ()):
        _check(value, sub, root, path, errors)
    for keyword in ("anyOf", "oneOf"):
        if keyword in schema:
            _check_alternatives(value, schema, keyword, root, path, errors)


def _check_object(
    value: dict[Any, Any],
    schema: Mapping[str, Any],
    root: Mapping[str, Any],
    path: str,
    errors: list[str],
) -> None:
    for name in schema.get("required", ()):
        if name not in value:
            errors.append(f"{path}: missing required field {name!r}")
    props: Mapping[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        where = f"{path}.{name}"
        if name in props:
            _check(item, props[name], root, where, errors)
        elif extra is False:
            errors.append(f"{path}: unexpected field {name!r}")
        elif isinstance(extra, Mapping):
            _check(item, extra, root, where, errors)


def _check_alternatives(
    value: object,
    schema: Mapping[str, Any],
    keyword: str,
    root: Mapping[str, Any],
    path: str,
    errors: list[str],
) -> None:
    options: Sequence[Mapping[str, Any]] = schema[keyword]
    disc = schema.get("discriminator")
    if disc is not None and isinstance(value, dict):
        tag_name = disc["propertyName"]
        tag = value.get(tag_name)
        mapping: Mapping[str, str] = disc.get("mapping", {})
        if not isinstance(tag, str) or tag not in mapping:
            errors.append(f"{path}.{tag_name}: {tag!r} is not one of {sorted(mapping)!r}")
            return
        _check(value, {"$ref": mapping[tag]}, root, path, errors)
        return
    results = []
    for option in options:
        sub: list[str] = []
        _check(value, option, root, path, sub)
        results.append(sub)
    passed = sum(1 for r in results if not r)
    if (keyword == "anyOf" and passed == 0) or (keyword == "oneOf" and passed != 1):
        if passed > 1:
            errors.append(f"{path}: matches {passed} alternatives of oneOf, not exactly one")
        else:
            best = min(results, key=len)
            errors.append(f"{path}: matches none of the alternatives ({'; '.join(best)})")


def _check_number(value: object, schema: Mapping[str, Any], path: str, errors: list[str]) -> None:
    if not _is_type(value, "number"):
        return
    assert isinstance(value, int | float)
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {value} is less than {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: {value} is more than {schema['maximum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(f"{path}: {value} is not more than {schema['exclusiveMinimum']}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        errors.append(f"{path}: {value} is not less than {schema['exclusiveMaximum']}")


def _check_sized(value: object, schema: Mapping[str, Any], path: str, errors: list[str]) -> None:
    if isinstance(value, str):
        low, high = schema.get("minLength"), schema.get("maxLength")
    elif isinstance(value, list):
        low, high = schema.get("minItems"), schema.get("maxItems")
    else:
        return
    if low is not None and len(value) < low:
        errors.append(f"{path}: shorter than {low}")
    if high is not None and len(value) > high:
        errors.append(f"{path}: longer than {high}")


def _resolve(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    if not ref.startswith("#"):
        raise UnsupportedSchema(f"only local $ref is supported, not {ref!r}")
    node: Any = root
    for part in ref[1:].split("/")[1:]:
        key = part.replace("~1", "/").replace("~0", "~")
        try:
            node = node[key]
        except (KeyError, TypeError):
            raise UnsupportedSchema(f"$ref {ref!r} points nowhere") from None
    if not isinstance(node, Mapping):
        raise UnsupportedSchema(f"$ref {ref!r} is not a schema")
    return node


def _is_type(value: object, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    raise UnsupportedSchema(f"unknown type {name!r}")


def _json_type(value: object) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(value, name):
            return name
    return type(value).__name__


def _same(a: object, b: object) -> bool:
    """JSON equality: ``True`` is not ``1``."""
    if _is_type(a, "number") and _is_type(b, "number"):
        return a == b
    return type(a) is type(b) and a == b


# ---------------------------------------------------------------------------
# ``trio-codex-shim schema``
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] = ()) -> int:
    """``trio-codex-shim schema [--commands | --events]``: print a schema; the exit code."""
    parser = argparse.ArgumentParser(
        prog="trio-codex-shim schema",
        description="Print the JSON Schema of the wire protocol (draft 2020-12).",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--commands", action="store_true", help="only orchestrator -> shim")
    which.add_argument("--events", action="store_true", help="only shim -> orchestrator")
    ns = parser.parse_args(list(argv))
    if ns.commands:
        doc = command_schema()
    elif ns.events:
        doc = event_schema()
    else:
        sys.stdout.write(schema_json())
        return 0
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(doc), indent=2).decode() + "\n")
    return 0
