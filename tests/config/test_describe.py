"""sidecar/config/describe.py: the configuration describes itself, and docs/CONFIG.md is current."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args, get_origin

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from sidecar.config.describe import json_schema, markdown
from sidecar.config.model import Config

ROOT = Path(__file__).resolve().parents[2]


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """Every key path in the tree (a list of sections as ``key[].child``), with its field."""
    out: list[tuple[str, Any]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{field.alias or name}" if prefix else field.alias or name
        out.append((key, field))
        in_list = get_origin(field.annotation) is list
        for t in (field.annotation, *get_args(field.annotation)):
            if isinstance(t, type) and issubclass(t, BaseModel):
                out += _fields(t, key + "[]" if in_list else key)
    return out


def test_every_key_has_a_description() -> None:
    fields = _fields(Config)
    assert len(fields) > 200  # the whole tree, not one level
    assert [key for key, field in fields if not (field.description or "").strip()] == []


def test_every_key_is_in_the_reference() -> None:
    text = markdown()
    listed = [key for key, _ in _fields(Config) if f"| `{key}` |" in text or f"## `{key}`" in text]
    assert listed == [key for key, _ in _fields(Config)]


def test_docs_config_md_is_current() -> None:
    """docs/CONFIG.md is generated; regenerate it with ``sidecar config docs > docs/CONFIG.md``."""
    assert (ROOT / "docs" / "CONFIG.md").read_text(encoding="utf-8") == markdown()


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_example_config_is_valid_by_the_schema(validator: jsonschema.Draft202012Validator) -> None:
    example = yaml.safe_load((ROOT / "examples" / "sidecar.yaml").read_text(encoding="utf-8"))
    assert list(validator.iter_errors(example)) == []


@pytest.mark.parametrize(
    ("config", "path"),
    [
        pytest.param({"sesion": {}}, [], id="unknown-top-level-key"),
        pytest.param({"serve": {"public": {"port": "many"}}}, ["serve", "public", "port"], id="wrong-type"),
        pytest.param({"session": {"lifespan": "a day"}}, ["session", "lifespan"], id="bad-duration"),
        pytest.param(
            {"serve": {"public": {"max_body_size": "1 lot"}}},
            ["serve", "public", "max_body_size"],
            id="bad-size",
        ),
        pytest.param(
            {"selfservice": {"flows": {"recovery": {"use": "pigeon"}}}},
            ["selfservice", "flows", "recovery", "use"],
            id="not-an-option",
        ),
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(
    validator: jsonschema.Draft202012Validator, config: dict[str, Any], path: list[str]
) -> None:
    errors = list(validator.iter_errors(config))
    assert errors and any(list(e.absolute_path)[: len(path)] == path for e in errors)


def test_cli_prints_the_schema_and_checks_the_docs(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "sidecar", "config"]
    out = subprocess.run([*run, "schema"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert json.loads(out.stdout)["properties"]["dsn"]["description"].startswith("The SQL database")
    stale = tmp_path / "CONFIG.md"
    stale.write_text("# old\n")
    out = subprocess.run([*run, "docs", "--check", str(stale)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "out of date" in out.stderr
    current = subprocess.run([*run, "docs"], capture_output=True, text=True, timeout=60).stdout
    stale.write_text(current)
    assert subprocess.run([*run, "docs", "--check", str(stale)], timeout=60).returncode == 0


def test_importing_the_configuration_leaves_the_docstrings_unread() -> None:
    """Reading every field's docstring (pydantic's ``use_attribute_docstrings``: the source and an AST
    parse per model class) cost about a third of importing the configuration at every start, worker
    and CLI run; only sidecar.config.describe needs them, and attaches them itself."""
    code = (
        "import json, sys\n"
        "from sidecar.config.loader import load_config\n"
        "from sidecar.config.model import Config\n"
        "load_config(dev=True, overrides={'dsn': 'sqlite:///:memory:'})\n"
        "described = Config.model_fields['dsn'].description\n"
        "print(json.dumps([described, 'sidecar.config.describe' in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == [None, False]
    assert Config.model_fields["dsn"].description  # attached here: this module imported describe
