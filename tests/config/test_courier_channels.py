"""``courier.channels`` (Kratos' HTTP/SMS courier, ``courier/http.go``) is refused by key and with
the reason until sidecar delivers through it (issue 16 §4); an empty list is what Kratos defaults to."""

from __future__ import annotations

import pytest

from sidecar.config.loader import ConfigError
from tests.conftest import make_config


def test_a_channel_is_refused_with_the_reason() -> None:
    channel = {
        "id": "sms",
        "type": "http",
        "request_config": {"url": "http://127.0.0.1:1/", "method": "POST"},
    }
    with pytest.raises(ConfigError) as refused:
        make_config(courier={"channels": [channel]})
    problems = dict(refused.value.problems)
    assert "no HTTP (SMS) courier channel" in problems["courier.channels"]


def test_no_channels_loads() -> None:
    assert make_config(courier={"channels": []}).courier.channels == []
