"""``sidecar rules check`` and ``sidecar rules explain``."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.cli_rules import add_rules_parser, explain
from sidecar.rules.loader import parse_rules
from tests.conftest import free_port
from tests.ops.serve import clean_env
from tests.proxy.harness import make_user, sidecar_config

RULES = """
version: 1
rules:
  - {id: static, match: {paths: ["/assets/**"]}, require: public}
  - id: billing
    match: {methods: [GET, POST], paths: ["/billing/**"]}
    require: {level: authenticated, aal: aal2, roles: [finance]}
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    add_rules_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_check_valid_and_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(RULES)
    assert run(["rules", "check", str(good)], capsys) == (0, "2 rules in 1 files (first_match): valid\n", "")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - {id: x, match: {paths: [nope]}, require: public}\n")
    code, _, err = run(["rules", "check", str(good), str(bad)], capsys)
    assert code == 1 and f"{bad}:3: rule 'x' match.paths: 'nope'" in err


def test_explain_anonymous(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(RULES)
    code, out, _ = run(
        ["rules", "explain", "GET", "https://app.example.com/x/../billing/q?a=1", "--rules", str(f)], capsys
    )
    assert code == 1
    lines = out.splitlines()
    assert "path '/billing/q'" in lines[1]
    assert lines[2].split()[:2] == ["skip", "static"] and "not matched by ['/assets/**']" in lines[2]
    assert lines[3].split()[:2] == ["MATCH", "billing"]
    assert "requires: authenticated, aal2, one of roles ['finance']" in lines[4]
    assert "decision for anonymous: login required" in lines[5]


def test_explain_method_mismatch_and_no_match() -> None:
    out = io.StringIO()
    assert explain(parse_rules([("r.yaml", RULES)]), "DELETE", "http://h/billing/x", None, out) == 1
    text = out.getvalue()
    assert "method DELETE not in ['GET', 'HEAD', 'POST']" in text and "no rule matched: forbidden" in text


async def test_explain_as_identity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(RULES)
    config = sidecar_config(tmp_path, port=free_port())
    identity, _, _ = await make_user(config, metadata_public={"roles": ["finance"]})
    cfg = tmp_path / "sidecar.yml"
    cfg.write_text(f"dsn: {config.dsn}\nrules: [{f}]\nsecrets: {{cookie: [0123456789abcdef0123]}}\n")
    argv = ["rules", "explain", "GET", "http://h/billing/x", "-c", str(cfg), "--identity", str(identity.id)]
    import asyncio

    code, out, _ = await asyncio.to_thread(run, argv, capsys)
    assert code == 1 and "step-up required" in out
    code, out, _ = await asyncio.to_thread(run, [*argv, "--aal", "aal2"], capsys)
    assert code == 0 and f"decision for identity {identity.id} (aal2): allow" in out


def test_check_prints_warnings_and_strict_fails_on_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(
        "version: 1\nrules:\n"
        '  - {id: csv, match: {paths: ["/**/*.csv"]}, require: public}\n'
        '  - {id: admin, match: {paths: ["/admin/**"]}, require: authenticated}\n'
    )
    code, out, err = run(["rules", "check", str(f)], capsys)
    assert code == 0 and out == "2 rules in 1 files (first_match): valid, 1 warnings\n"
    assert f"warning: {f}:4: rule 'admin' match: overlaps 'csv' ({f}:3): e.g. GET /admin/a.csv" in err
    assert run(["rules", "check", "--strict", str(f)], capsys)[0] == 1
    code, out, _ = run(["rules", "check", "--order", "most_specific", str(f)], capsys)
    assert code == 0 and "(most_specific): valid\n" in out


def test_shipped_policy_tests_pass_through_the_cli() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar",
            "rules",
            "test",
            "rules/example.test.yaml",
            "sidecar/demo_rules.test.yaml",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("21 passed, 0 failed")


def test_a_failing_policy_test_shows_the_difference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "r.yaml").write_text(RULES)
    t = tmp_path / "r.test.yaml"
    t.write_text(
        "identities:\n"
        "  fin: {id: 6f1c2a6e-0000-4000-8000-000000000009, metadata_public: {roles: [finance]}, aal: aal2}\n"
        "tests:\n"
        "  - name: finance gets in\n"
        "    request: {url: /billing/x, identity: fin}\n"
        "    expect:\n"
        "      {decision: allow, rule: billing, headers: {X-User-ID: 6f1c2a6e-0000-4000-8000-000000000009}}\n"
        "  - name: wrong on purpose\n"
        "    request: {url: /billing/x, client: browser}\n"
        "    expect: {decision: 401, rule: static, headers: {X-User-AAL: aal2}}\n"
    )
    code, out, _ = run(["rules", "test", str(t)], capsys)
    assert code == 1
    assert out.splitlines() == [
        f"FAIL {t}:8 wrong on purpose",
        "  request: GET /billing/x anonymous (browser)",
        "  decision: expected 401, got redirect (no valid session)",
        "  rule: expected 'static', got 'billing'",
        "  header X-User-AAL: expected 'aal2', got not sent",
        "1 passed, 1 failed",
    ]
    bad = tmp_path / "bad.test.yaml"
    bad.write_text("tests:\n  - {request: {url: nope}, expect: {decision: maybe}}\n")
    code, out, err = run(["rules", "test", str(bad)], capsys)
    assert code == 1 and f"ERROR {bad}:2: request.url: a path (/x) or an absolute URL" in err


def test_explain_a_request_id_from_the_access_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(RULES)
    log = tmp_path / "access.log"
    log.write_text(
        '{"level":"info","logger":"sidecar","msg":"listening"}\n'
        '{"logger":"sidecar.access","request_id":"aaa111","method":"GET","path":"/billing/q",'
        '"status":401,"rule":"billing","decision":"login","identity_id":null}\n'
        "POST /assets/x 200 1.0ms 3B rid=bbb222 rule=static decision=allow\n"
    )
    cfg = tmp_path / "sidecar.yml"
    cfg.write_text(f"rules: [{f}]\nsecrets: {{cookie: [0123456789abcdef0123]}}\n")
    code, out, _ = run(
        ["rules", "explain", "--request-id", "aaa111", "--log", str(log), "-c", str(cfg)], capsys
    )
    assert code == 1
    assert "request aaa111: logged rule 'billing', decision 'login', identity None" in out
    assert "MATCH billing" in out and "decision for anonymous: login required" in out
    code, out, _ = run(
        ["rules", "explain", "--request-id", "bbb222", "--log", str(log), "-c", str(cfg)], capsys
    )
    assert code == 0 and "POST http://127.0.0.1:4433/assets/x" in out and "MATCH static" in out
    code, _, err = run(
        ["rules", "explain", "--request-id", "nope", "--log", str(log), "-c", str(cfg)], capsys
    )
    assert code == 2 and "request id nope not found" in err


# --- as printed in the README, in a fresh shell: no secrets, no config, clear words -----------------


def _sidecar(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rules_commands_need_no_secrets(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "app.yaml").write_text(RULES)
    (tmp_path / "sidecar.yml").write_text("rules: [rules/*.yaml]\n")  # no secrets.cookie
    check = _sidecar(["rules", "check", "-c", "sidecar.yml"], tmp_path)
    assert (check.returncode, check.stdout, check.stderr) == (
        0,
        "2 rules in 1 files (first_match): valid\n",
        "",
    )
    explain = _sidecar(
        [
            "rules",
            "explain",
            "GET",
            "https://app.example.com/assets/a.css",
            "--anonymous",
            "-c",
            "sidecar.yml",
        ],
        tmp_path,
    )
    assert explain.returncode == 0, explain.stderr
    assert "decision for anonymous: allow" in explain.stdout


def test_explain_says_when_no_rules_are_loaded(tmp_path: Path) -> None:
    out = _sidecar(["rules", "explain", "GET", "https://app.example.com/billing", "--anonymous"], tmp_path)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr == (
        "no rules are loaded (from the config key `rules` (-c FILE)): "
        "every request is denied (403, default deny)\n"
    )
    check = _sidecar(["rules", "check"], tmp_path)
    assert check.returncode == 1
    assert check.stderr == "no rule files found (config key `rules` matches no file, or none is set)\n"


def test_regex_errors_without_library_noise(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - {id: r, match: {paths: ['regex:^/a(b$']}, require: public}\n")
    out = _sidecar(["rules", "check", str(bad)], tmp_path)
    assert out.returncode == 1
    assert out.stderr == f"{bad}:3: rule 'r' match.paths: invalid pattern: missing ): (?:^/a(b$)\n"
