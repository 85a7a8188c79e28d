"""The configuration, described by itself: the JSON Schema of ``Config`` and the Markdown reference
in docs/CONFIG.md, both drawn from the models and their field docstrings, so neither can drift.

``sidecar config schema`` prints the JSON Schema; ``sidecar config docs`` prints the Markdown
(``--check FILE`` fails when FILE differs, which CI runs against docs/CONFIG.md).
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
import types
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticUndefined

from sidecar.config.model import Config

# --- descriptions ---------------------------------------------------------------------------------
#
# A field's description is the docstring under it. Pydantic's ``use_attribute_docstrings`` would read
# them while each model class is created, at every import of the configuration (a ``getsource`` and an
# AST parse per class: about a third of importing sidecar.config.model, paid by every start, worker
# and CLI run). Only this module needs them, so they are attached here, the way pydantic does it:
# the string literal right after an annotated attribute (``inspect.cleandoc``), unless the field
# already has a description; a field a class inherits keeps its parent's.


class _AttributeDocstrings(ast.NodeVisitor):
    """Pydantic's ``DocstringVisitor`` (pydantic/_internal/_docs_extraction.py): ``name: T`` then a
    string is that field's docstring; nested classes and functions are not looked into."""

    def __init__(self) -> None:
        self.target: str | None = None
        self.attrs: dict[str, str] = {}
        self.previous: type[ast.AST] | None = None

    def visit(self, node: ast.AST) -> Any:
        result = super().visit(node)
        self.previous = type(node)
        return result

    def visit_AnnAssign(self, node: ast.AnnAssign) -> Any:
        if isinstance(node.target, ast.Name):
            self.target = node.target.id

    def visit_Expr(self, node: ast.Expr) -> Any:
        if (
            isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and self.previous is ast.AnnAssign
        ):
            if self.target:
                self.attrs[self.target] = inspect.cleandoc(node.value.value)
            self.target = None

    def visit_ClassDef(self, node: ast.ClassDef) -> Any:
        pass

    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:
        pass

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> Any:
        pass


def _class_nodes(module: str) -> dict[str, ast.ClassDef]:
    """Every class statement of a module (also classes in classes) by qualified name."""
    found: dict[str, ast.ClassDef] = {}

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                found[prefix + node.name] = node
                walk(node.body, prefix + node.name + ".")

    walk(ast.parse(inspect.getsource(sys.modules[module])).body, "")
    return found


def _config_models() -> list[type[BaseModel]]:
    """The models of the configuration tree, each after the models its fields hold (post-order)."""
    order: list[type[BaseModel]] = []
    seen: set[type[BaseModel]] = set()

    def types_in(annotation: Any) -> Iterator[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield annotation
        for arg in get_args(annotation):
            yield from types_in(arg)

    def visit(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for field in model.model_fields.values():
            for nested in types_in(field.annotation):
                visit(nested)
        order.append(model)

    visit(Config)
    return order


def _attach_descriptions() -> None:
    models = _config_models()
    classes = {c for m in models for c in m.__mro__ if issubclass(c, BaseModel) and c is not BaseModel}
    nodes: dict[str, dict[str, ast.ClassDef]] = {}
    # Parents first: a field a class inherits copies the parent's description.
    for cls in sorted(classes, key=lambda c: len(c.__mro__)):
        if cls.__module__ not in nodes:
            nodes[cls.__module__] = _class_nodes(cls.__module__)
        visitor = _AttributeDocstrings()
        visitor.generic_visit(nodes[cls.__module__][cls.__qualname__])
        own = inspect.get_annotations(cls)
        for name, field in cls.model_fields.items():
            if field.description is not None:
                continue
            if name in visitor.attrs:
                field.description = visitor.attrs[name]
            elif name not in own:
                inherited = (getattr(b, "model_fields", {}).get(name) for b in cls.__mro__[1:])
                field.description = next(f for f in inherited if f is not None).description
    # The JSON Schema is drawn from each model's core schema, built with the descriptions it had
    # then: rebuild every model, the models a field holds before the model holding it.
    for model in models:
        model.model_rebuild(force=True)


_attach_descriptions()


def _one_line(node: Any) -> Any:
    """Descriptions come from docstrings wrapped at 110 columns: one line each in the schema."""
    if isinstance(node, dict):
        return {
            k: " ".join(v.split()) if k == "description" and isinstance(v, str) else _one_line(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_one_line(v) for v in node]
    return node


class _Schema(GenerateJsonSchema):
    def encode_default(self, dft: Any) -> Any:
        # A duration default in the form the key takes (``1h``), not ISO 8601 (``PT1H``).
        if isinstance(dft, timedelta):
            return _go_duration(dft)
        return super().encode_default(dft)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of the whole configuration, every key with its description."""
    schema = _one_line(Config.model_json_schema(mode="validation", schema_generator=_Schema))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


# --- Markdown -------------------------------------------------------------------------------------


def _go_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    out, rest = "", int(seconds)
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out or "0s"


def _text(description: str | None) -> str:
    """A docstring as one Markdown table cell: one line, ``code`` as `code`, pipes escaped."""
    return " ".join((description or "").split()).replace("``", "`").replace("|", "\\|")


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [
        t for t in (annotation, *get_args(annotation)) if isinstance(t, type) and issubclass(t, BaseModel)
    ]


def _type_name(annotation: Any, field: FieldInfo) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        names = [_type_name(a, field) for a in get_args(annotation) if a is not type(None)]
        return " \\| ".join(names) + (" \\| null" if type(None) in get_args(annotation) else "")
    if origin is list:
        args = get_args(annotation)
        return f"list of {_type_name(args[0], field)}" if args and args[0] is not Any else "list"
    if origin is dict:
        return "mapping"
    if annotation is timedelta:
        return "duration"
    if annotation is int and any(type(m).__name__ == "BeforeValidator" for m in field.metadata):
        return "size"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]  # our factories take no data
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, timedelta):
        return f"`{_go_duration(value)}`"
    if value is None:
        return ""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`" if value else ""
    return f"`{value}`"


def _rows(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str, str]]:
    for name, field in model.model_fields.items():
        key = f"{prefix}.{field.alias or name}" if prefix else field.alias or name
        nested = _models(field.annotation)
        description = _text(field.description)
        if nested and get_origin(field.annotation) is not list:
            extra = " (extra keys allowed)" if nested[0].model_config.get("extra") == "allow" else ""
            yield key, "section", "", description + extra
            yield from _rows(nested[0], key)
        elif nested:
            yield key, "list of sections", _default(field), description
            yield from _rows(nested[0], key + "[]")
        else:
            yield key, _type_name(field.annotation, field), _default(field), description


def markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `sidecar/config/model.py` by `sidecar config docs`; do not edit by hand",
        "(CI fails when this file differs from what the code generates). `sidecar config schema`",
        "prints the same as JSON Schema. Durations are Go-style (`1h30m`, `500ms`), sizes take",
        "`KB`/`MB`/`GB` (or `KiB`/`MiB`/`GiB`). Any key can be set from the environment:",
        "`SIDECAR_` + the key path in upper case with `__` between levels (README, Configuration).",
        "",
    ]
    scalars = [(n, f) for n, f in Config.model_fields.items() if not _models(f.annotation)]
    lines += ["## Top-level keys", "", "| key | type | default | description |", "|---|---|---|---|"]
    for name, field in scalars:
        description = _text(field.description)
        lines.append(
            f"| `{name}` | {_type_name(field.annotation, field)} | {_default(field)} | {description} |"
        )
    lines.append("")
    for name, field in Config.model_fields.items():
        nested = _models(field.annotation)
        if not nested:
            continue
        lines += [f"## `{name}`", "", _text(field.description), ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        lines += [f"| `{k}` | {t} | {d} | {desc} |" for k, t, d, desc in _rows(nested[0], name)]
        lines.append("")
    return "\n".join(lines)
