"""The fuzzing gate in CI: about 70 seconds of schemathesis against ``sidecar serve`` (tests/api/fuzz.py).

The long run is ``.venv/bin/python -m tests.api.fuzz --seconds 1800``. ``SIDECAR_FUZZ_SECONDS``
changes this run's budget (``SIDECAR_FUZZ_SEED`` its seed) without touching the code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.api.fuzz import corrected_spec, run_fuzz

BUDGET = int(os.environ.get("SIDECAR_FUZZ_SECONDS", "70"))


def test_no_5xx_and_every_response_matches_kratos_openapi(tmp_path: Path) -> None:
    seed = os.environ.get("SIDECAR_FUZZ_SEED")
    result = run_fuzz(
        tmp_path,
        public_seconds=BUDGET * 2 // 3,
        admin_seconds=BUDGET - BUDGET * 2 // 3,
        seed=int(seed) if seed else None,
    )
    assert result.ok, result.summary() + "\n" + "\n".join(r.output[-6000:] for r in result.runs)
    # Not a gate that passes by running nothing (a loaded machine runs fewer cases in the budget).
    assert all(r.cases > 50 for r in result.runs), result.summary()
    assert {r.listener for r in result.runs} == {"public", "public-signed-in", "admin"}


def test_corrections_are_narrow() -> None:
    """Each correction widens one thing; the rest of the document is Kratos' own."""
    raw: dict[str, Any] = {
        "paths": {
            f"/self-service/{name}": {
                "post": {
                    "responses": {
                        "400": {"content": {"application/json": {"schema": {"$ref": f"#/f/{name}"}}}},
                        "200": {"content": {"application/json": {"schema": {"$ref": "#/ok"}}}},
                    }
                }
            }
            for name in ("login", "registration", "recovery", "verification", "settings")
        },
        "components": {
            "schemas": {"genericError": {"properties": {"details": {"additionalProperties": False}}}}
        },
    }
    fixed = corrected_spec(raw)
    assert fixed["components"]["schemas"]["genericError"]["properties"]["details"]["additionalProperties"]
    login = fixed["paths"]["/self-service/login"]["post"]["responses"]
    assert login["400"]["content"]["application/json"]["schema"] == {
        "oneOf": [{"$ref": "#/f/login"}, {"$ref": "#/components/schemas/errorGeneric"}]
    }
    assert login["200"] == raw["paths"]["/self-service/login"]["post"]["responses"]["200"]
    assert (
        raw["components"]["schemas"]["genericError"]["properties"]["details"]["additionalProperties"] is False
    )
