"""TOTP checking against Debian's ``oathtool`` (RFC 6238), independent of any flow."""

from __future__ import annotations

import base64

import pyotp
import pytest

from sidecar.strategies.totp import matching_step, qr_data_uri, secret_of
from tests.api.public.mfa import oathtool

NOW = 1_700_000_015.0  # 15 s into a step: no boundary near
SECRET = pyotp.random_base32()


@pytest.mark.parametrize(
    ("offset", "skew", "accepted"),
    [
        pytest.param(0, 1, True, id="now"),
        pytest.param(-30, 1, True, id="one-step-back"),
        pytest.param(30, 1, True, id="one-step-ahead"),
        pytest.param(-60, 1, False, id="two-steps-back"),
        pytest.param(-90, 1, False, id="three-steps-back"),
        pytest.param(90, 1, False, id="three-steps-ahead"),
        pytest.param(-30, 0, False, id="no-skew-back"),
        pytest.param(60, 2, True, id="skew-two"),
    ],
)
def test_matching_step_follows_oathtool(offset: int, skew: int, accepted: bool) -> None:
    code = oathtool(SECRET, NOW + offset)
    step = matching_step(SECRET, code, NOW, skew)
    if accepted:
        assert step == int((NOW + offset) // 30)
    else:
        assert step is None


def test_wrong_code_never_matches() -> None:
    good = oathtool(SECRET, NOW)
    bad = f"{(int(good) + 1) % 1_000_000:06d}"
    assert matching_step(SECRET, bad, NOW, 1) in (None, int(NOW // 30) - 1, int(NOW // 30) + 1)


def test_qr_is_a_png_data_uri() -> None:
    url = pyotp.TOTP(SECRET).provisioning_uri(name="ada@example.test", issuer_name="Sidecar")
    uri = qr_data_uri(url)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert secret_of(url) == SECRET
