"""The fuzzing gate: schemathesis against a running ``sidecar serve``, driven by Kratos' OpenAPI.

Every public operation of ``kratos-openapi.json`` is fuzzed against the public listener (base
``/.auth``) and every ``/admin/`` operation against the admin listener, with two checks: no 5xx
(``not_a_server_error``) and every response matches the document (``response_schema_conformance``).
The CI run (``tests/api/test_fuzz.py``) is bounded to about two minutes; the long run is

    .venv/bin/python -m tests.api.fuzz --seconds 1800 [--seed N]

(half the time on each listener; the seed is printed so a failure can be replayed).

The document is Kratos' own and Kratos does not always answer as it says. Where sidecar answers
as Kratos does and the document disagrees, the document is corrected here, one documented
change each (``corrected_spec``), instead of switching a check off for a whole operation.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.ops.serve import Proc, base_config, migrate, ports, running, serve_argv, write_config

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "reference" / "kratos-openapi.json"
CHECKS = "not_a_server_error,response_schema_conformance"
SUBMITS = ("login", "registration", "recovery", "verification", "settings")


def corrected_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """Kratos' document with the places where Kratos itself answers otherwise made to say so."""
    spec = copy.deepcopy(raw)
    schemas = spec["components"]["schemas"]
    # 1. ``genericError.details`` says ``additionalProperties: false``, yet Kratos fills it
    #    (``reject_reason`` on CSRF errors, ``docs`` links, field messages); the SDK types it as
    #    ``Dict[str, Any]``.
    schemas["genericError"]["properties"]["details"]["additionalProperties"] = True
    # 2. A submission whose request cannot be read (no or a malformed ``?flow=``, a body that is
    #    not a JSON object) has no flow to show: Kratos answers its error envelope with 400
    #    (``flow.GetFlowID`` / the body decoder), where the document lists only the flow.
    for name in SUBMITS:
        response = spec["paths"][f"/self-service/{name}"]["post"]["responses"]["400"]
        flow = response["content"]["application/json"]["schema"]
        response["content"]["application/json"]["schema"] = {
            "oneOf": [flow, {"$ref": "#/components/schemas/errorGeneric"}]
        }
    return spec


@dataclass
class FuzzRun:
    listener: str
    exit_code: int
    report: dict[str, Any]
    output: str
    seed: int

    @property
    def cases(self) -> int:
        return int(self.report.get("test_cases", {}).get("generated", 0))

    @property
    def problems(self) -> list[Any]:
        return [*self.report.get("failures", []), *self.report.get("errors", [])]


@dataclass
class FuzzResult:
    runs: list[FuzzRun] = field(default_factory=list)
    server_log: str = ""

    @property
    def ok(self) -> bool:
        return all(r.exit_code == 0 and not r.problems for r in self.runs) and not self.tracebacks

    @property
    def tracebacks(self) -> list[str]:
        return [line for line in self.server_log.splitlines() if "unhandled error" in line]

    def summary(self) -> str:
        lines = [
            f"{r.listener}: {r.cases} cases, exit {r.exit_code}, seed {r.seed}, "
            f"{len(r.problems)} problem(s) {json.dumps(r.problems)[:2000]}"
            for r in self.runs
        ]
        lines += [f"server: {t}" for t in self.tracebacks]
        return "\n".join(lines)


def fuzz_config(tmp: Path, public_port: int, admin_port: int) -> dict[str, Any]:
    """Most features on, so most operations have something behind them. The brute-force
    throttle runs (admission, counting) with thresholds fuzzing never reaches: 429 is not in
    Kratos' document, and the throttle's answers are tested on their own."""
    public = f"http://127.0.0.1:{public_port}"
    return base_config(
        tmp,
        public_port,
        admin_port,
        selfservice={
            "default_browser_return_url": f"{public}/",
            "allowed_return_urls": [f"{public}/"],
            "methods": {
                "totp": {"enabled": True},
                "lookup_secret": {"enabled": True},
                "code": {"passwordless_enabled": True},
                "webauthn": {"enabled": True, "config": {"passwordless": True}},
                "passkey": {"enabled": True},
            },
            "flows": {"recovery": {"enabled": True}, "verification": {"enabled": True}},
        },
        security={
            "rate_limit": {
                "free_failures": 1_000_000,
                "per_identifier": 1_000_000,
                "per_ip": 1_000_000,
                "send_per_address": 1_000_000,
                "send_per_ip": 1_000_000,
            }
        },
        courier={"smtp": {"connection_uri": "smtp://127.0.0.1:9/?disable_starttls=true"}},
    )


PASSWORD = "a-long-fuzzing-passphrase"


def session_token(proc: Proc) -> str:
    """An identity with a password, signed in: its token lets the fuzzer past 401 on whoami,
    sessions and settings (the anonymous pass covers the rest)."""
    body = {
        "schema_id": "default",
        "traits": {"email": "fuzz@example.test"},
        "credentials": {"password": {"config": {"password": PASSWORD}}},
    }
    httpx.post(f"{proc.admin_url}/admin/identities", json=body, timeout=10).raise_for_status()
    with httpx.Client(base_url=f"{proc.public_url}/.auth", timeout=10) as c:
        flow = c.get("/self-service/login/api").json()
        done = c.post(
            f"/self-service/login?flow={flow['id']}",
            json={"method": "password", "identifier": "fuzz@example.test", "password": PASSWORD},
        )
        done.raise_for_status()
        return str(done.json()["session_token"])


def schemathesis(
    spec: Path, url: str, listener: str, seconds: int, seed: int, tmp: Path, *, token: str | None = None
) -> FuzzRun:
    report = tmp / f"schemathesis-{listener}.json"
    argv = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        str(spec),
        "--url",
        url,
        "--checks",
        CHECKS,
        "--max-time",
        str(seconds),
        "--seed",
        str(seed),
        # One worker: schemathesis' example generation in threads trips a CPython 3.11 ast bug.
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    argv += (
        ["--include-path-regex", "^/admin/"] if listener == "admin" else ["--exclude-path-regex", "^/admin/"]
    )
    if token is not None:
        argv += ["--header", f"X-Session-Token: {token}"]
    done = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=seconds + 300, check=False)
    data = json.loads(report.read_text()) if report.exists() else {}
    return FuzzRun(listener, done.returncode, data, done.stdout + done.stderr, seed)


def run_fuzz(tmp: Path, *, public_seconds: int, admin_seconds: int, seed: int | None = None) -> FuzzResult:
    if not SPEC.exists():
        raise FileNotFoundError(f"the Kratos OpenAPI document is missing: {SPEC}")
    seed = random.randrange(1, 2**31) if seed is None else seed
    spec = tmp / "kratos-openapi.corrected.json"
    spec.write_text(json.dumps(corrected_spec(json.loads(SPEC.read_text()))))
    public_port, admin_port = ports()
    config = write_config(tmp / "fuzz.yaml", fuzz_config(tmp, public_port, admin_port))
    migrate(config, tmp)
    result = FuzzResult()
    with running(serve_argv(config), cwd=tmp, public_port=public_port, admin_port=admin_port) as proc:
        token = session_token(proc)
        public = f"{proc.public_url}/.auth"
        anonymous = max(1, public_seconds * 3 // 5)
        result.runs.append(schemathesis(spec, public, "public", anonymous, seed, tmp))
        result.runs.append(
            schemathesis(
                spec, public, "public-signed-in", max(1, public_seconds - anonymous), seed, tmp, token=token
            )
        )
        result.runs.append(schemathesis(spec, proc.admin_url, "admin", admin_seconds, seed, tmp))
        result.server_log = proc.log()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=int, default=1800, help="total budget, split between listeners")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="directory for the reports (default: temp)")
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sidecar-fuzz-") as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        half = max(1, args.seconds // 2)
        result = run_fuzz(tmp, public_seconds=half, admin_seconds=half, seed=args.seed)
        for run in result.runs:
            print(run.output)
        print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
