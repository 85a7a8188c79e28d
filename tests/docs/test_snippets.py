"""Every config snippet in README.md and docs/ is a file that a test runs against the real thing.

A fenced block in a config language must follow a ``<!-- snippet: PATH -->`` line, and its text
must be a run of whole lines of PATH (a common indentation may be removed). PATH must be one of
the files below, each run by the named test: so what a reader copies is what was tested.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIG_LANGUAGES = {"yaml", "yml", "json", "jsonnet", "nginx", "caddyfile", "caddy", "python", "toml", "ini"}
MARKER = re.compile(r"<!-- snippet: (\S+) -->")

# Each snippet source, and the test that runs that very file.
TESTED_BY = {
    "examples/nginx/sidecar.conf": "tests/e2e/test_nginx.py",  # real nginx
    "examples/caddy/Caddyfile": "tests/e2e/test_caddy.py",  # real Caddy
    "examples/oidc/sidecar.yaml": "tests/e2e/test_oidc_example.py",  # real OIDC provider
    "examples/oidc/oidc.corp.jsonnet": "tests/e2e/test_oidc_example.py",
    "examples/kratos_sdk.py": "tests/docs/test_readme.py",  # the official SDK, a live sidecar
    "k8s/ingress-nginx/ingress.yaml": "tests/ops/test_k8s.py",  # schema-validated manifests
    "examples/rules/format.yaml": "tests/docs/test_rules_examples.py",  # the real proxy
    "examples/rules/format.test.yaml": "tests/docs/test_rules_examples.py",  # sidecar rules test
    "examples/operations/observability.yaml": "tests/ops/test_tracing.py",  # sidecar serve, OTLP
    "examples/webhook_receiver.py": "tests/webhooks/test_outbox.py",  # signed outbox deliveries
    "examples/operations/audit-webhook.yaml": "tests/webhooks/test_audit_webhook.py",  # sidecar serve, a SIEM
    "examples/sso/rules.yaml": "tests/e2e/test_organization_sso.py",  # sidecar serve, a real OIDC provider
    "examples/sso/scim-attributes.yaml": "tests/api/scim/test_scim_attributes.py",  # a live sidecar, SCIM
    "examples/sso/saml.yaml": "tests/strategies/saml/test_saml_serve.py",  # sidecar serve, a real SAML IdP
    "examples/sso/saml.jsonnet": "tests/strategies/saml/test_saml_serve.py",
}


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    language: str
    text: str
    source: str | None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    found: list[Block] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            language = lines[i][3:].strip()
            start = i
            i += 1
            body: list[str] = []
            while lines[i] != "```":
                body.append(lines[i])
                i += 1
            before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            marker = MARKER.fullmatch(before.strip())
            text = "\n".join(body) + "\n"
            found.append(Block(doc, start + 1, language, text, marker.group(1) if marker else None))
        i += 1
    return found


ALL = [b for doc in DOCS for b in blocks(doc)]
CONFIG = [b for b in ALL if b.language.lower() in CONFIG_LANGUAGES or b.source]


def is_excerpt(snippet: str, source: str) -> bool:
    """``snippet`` equals a run of whole lines of ``source``, up to a common indentation."""
    want = snippet.splitlines()
    have = source.splitlines()
    for start in range(len(have) - len(want) + 1):
        run = "\n".join(have[start : start + len(want)]) + "\n"
        if run == snippet or textwrap.dedent(run) == snippet:
            return True
    return False


def test_the_docs_have_config_snippets_at_all() -> None:
    assert len(CONFIG) >= 8, [b.where for b in CONFIG]


@pytest.mark.parametrize("block", CONFIG, ids=[b.where for b in CONFIG])
def test_snippet_comes_from_a_tested_file(block: Block) -> None:
    assert block.source, f"{block.where}: a {block.language} block needs a <!-- snippet: FILE --> line"
    assert block.source in TESTED_BY, f"{block.where}: {block.source} is not a file a test runs"
    source = (ROOT / block.source).read_text(encoding="utf-8")
    assert is_excerpt(block.text, source), f"{block.where} differs from {block.source}"


@pytest.mark.parametrize(("source", "test"), sorted(TESTED_BY.items()))
def test_each_source_is_read_by_its_test(source: str, test: str) -> None:
    parts = Path(source).parts
    text = (ROOT / test).read_text(encoding="utf-8")
    assert all(f'"{part}"' in text or part in text for part in parts[-2:]), (source, test)
    assert (ROOT / source).is_file()


def test_excerpt_matching_is_strict() -> None:
    source = "a:\n  b: 1\n  c: 2\nd: 3\n"
    assert is_excerpt("  b: 1\n  c: 2\n", source)
    assert is_excerpt("b: 1\nc: 2\n", source)
    assert not is_excerpt("b: 1\nc: 3\n", source)
    assert not is_excerpt("  b: 1\n  d: 3\n", source)
