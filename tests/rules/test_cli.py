"""``sidecar rules check`` and ``sidecar rules explain``."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from sidecar.cli_rules import add_rules_parser, explain
from sidecar.rules.loader import parse_rules
from tests.conftest import free_port
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
    assert run(["rules", "check", str(good)], capsys) == (0, "2 rules in 1 files: valid\n", "")
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
