"""``require: {organization: ...}``: by id or slug, through the loader, the judgement and the
identity headers (a policy table run by ``sidecar rules test``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.rules.loader import RulesError, parse_rules
from tests.rules.test_cli import run

ACME = "6f1c2a6e-0000-4000-8000-0000000000a1"
RULES = f"""
version: 1
rules:
  - id: acme-admin
    match: {{paths: ["/acme/admin/**"]}}
    require: {{level: authenticated, organization: acme, roles: [admin]}}
  - id: acme
    match: {{paths: ["/acme/**"]}}
    require: {{organization: [{ACME}]}}
  - id: app
    match: {{paths: ["/**"]}}
    require: authenticated
"""

TABLE = f"""
identities:
  member: {{id: 6f1c2a6e-0000-4000-8000-000000000001, organization_id: {ACME}, organization: acme}}
  admin:
    id: 6f1c2a6e-0000-4000-8000-000000000002
    organization_id: {ACME}
    organization: acme
    metadata_public: {{roles: [admin]}}
  other: {{id: 6f1c2a6e-0000-4000-8000-000000000003, organization_id: 6f1c2a6e-0000-4000-8000-0000000000b2,
          organization: acme-copy}}
  loner: {{id: 6f1c2a6e-0000-4000-8000-000000000004, metadata_public: {{roles: [admin]}}}}
tests:
  - request: {{url: /acme/x, identity: member}}
    expect: {{decision: allow, rule: acme, headers: {{X-User-Organization: {ACME}}}}}
  - request: {{url: /acme/x, identity: other}}
    expect: {{decision: 403, rule: acme}}
  - request: {{url: /acme/x, identity: loner}}
    expect: {{decision: 403, rule: acme}}
  - request: {{url: /acme/admin/x, identity: member}}
    expect: {{decision: 403, rule: acme-admin}}
  - request: {{url: /acme/admin/x, identity: admin}}
    expect: {{decision: allow, rule: acme-admin}}
  - request: {{url: /acme/admin/x, identity: loner}}
    expect: {{decision: 403, rule: acme-admin}}
  - request: {{url: /elsewhere, identity: loner}}
    expect: {{decision: allow, rule: app}}
"""


def test_organization_requirement_by_id_and_slug(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r.yaml").write_text(RULES)
    (tmp_path / "r.test.yaml").write_text(TABLE)
    code, out, err = run(["rules", "test", str(tmp_path / "r.test.yaml")], capsys)
    assert code == 0, out + err
    assert out.strip().endswith("7 passed, 0 failed")


@pytest.mark.parametrize(
    ("require", "problem"),
    [
        ("{level: public, organization: acme}", "conditions need"),
        ("{organization: []}", "require.organization"),
        ("{organization: {id: 1}}", "require.organization"),
    ],
)
def test_bad_organization_requirements_are_refused(require: str, problem: str) -> None:
    text = f"rules:\n  - {{id: a, match: {{paths: [/x]}}, require: {require}}}\n"
    with pytest.raises(RulesError, match=problem):
        parse_rules([("r.yaml", text)])
