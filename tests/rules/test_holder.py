"""Hot reload: a good edit is picked up, a bad edit is logged and the previous rules stay."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from sidecar.rules.holder import RulesHolder
from sidecar.rules.loader import RulesError
from tests.proxy.harness import get, sidecar_server, upstream_server

V1 = "version: 1\nrules:\n  - {id: one, match: {paths: ['/a']}, require: public}\n"
V2 = "version: 1\nrules:\n  - {id: two, match: {paths: ['/b']}, require: public}\n"
BAD = "version: 1\nrules:\n  - {id: two, match: {paths: ['b']}, require: sometimes}\n"


def touch(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # coarse mtime clocks


def test_reload_good_then_bad(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(V1)
    holder = RulesHolder([str(tmp_path / "*.yaml")])
    holder.load()
    assert [r.id for r in holder.current.rules] == ["one"]
    assert holder.reload_if_changed() is False
    touch(f, V2)
    assert holder.reload_if_changed() is True
    assert [r.id for r in holder.current.rules] == ["two"]
    generation = holder.current.generation
    touch(f, BAD)
    with caplog.at_level(logging.ERROR, "sidecar.rules"):
        assert holder.reload_if_changed() is False
    assert [r.id for r in holder.current.rules] == ["two"] and holder.current.generation == generation
    assert f"{f}:3: rule 'two' require: unknown level" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR, "sidecar.rules"):
        assert holder.reload_if_changed() is False  # the same bad file is logged once
    assert caplog.text == ""


def test_an_empty_file_is_not_reloaded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file truncated by an in-place write would otherwise swap in zero rules (deny everything)."""
    f = tmp_path / "r.yaml"
    f.write_text(V1)
    holder = RulesHolder([str(f)], settle=0)
    holder.load()
    touch(f, "")
    with caplog.at_level(logging.ERROR, "sidecar.rules"):
        assert holder.reload_if_changed() is False
    assert [r.id for r in holder.current.rules] == ["one"]
    assert f"{f}: the file is empty (to remove every rule, write 'rules: []')" in caplog.text
    touch(f, "version: 1\nrules: []\n")
    assert holder.reload_if_changed() is True
    assert holder.current.rules == ()


def test_a_file_still_being_written_is_read_on_a_later_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The half-written state an in-place write shows (here: a valid prefix, no rules yet) is
    never installed: the file changed during the settle wait, so this poll loads nothing."""
    f = tmp_path / "r.yaml"
    f.write_text(V1)
    holder = RulesHolder([str(f)], settle=0.01)
    holder.load()
    touch(f, "version: 1\nrules:\n")
    real_sleep = time.sleep

    def the_writer_finishes_meanwhile(seconds: float) -> None:
        f.write_text(V2)
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", the_writer_finishes_meanwhile)
    assert holder.reload_if_changed() is False
    assert [r.id for r in holder.current.rules] == ["one"]
    monkeypatch.setattr(time, "sleep", real_sleep)
    assert holder.reload_if_changed() is True
    assert [r.id for r in holder.current.rules] == ["two"]


def test_a_new_file_matching_the_glob_is_loaded(tmp_path: Path) -> None:
    (tmp_path / "10.yaml").write_text(V1)
    holder = RulesHolder([str(tmp_path / "*.yaml")])
    holder.load()
    (tmp_path / "20.yaml").write_text(V2)
    assert holder.reload_if_changed() is True
    assert [r.id for r in holder.current.rules] == ["one", "two"]


def test_bad_rules_fail_the_first_load(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(BAD)
    with pytest.raises(RulesError):
        RulesHolder([str(tmp_path / "r.yaml")]).load()


async def test_running_sidecar_reloads_without_restart(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(V1)
    with (
        upstream_server() as upstream,
        sidecar_server(tmp_path, proxy={"upstream": upstream.url}, rules=[str(f)]) as sidecar,
    ):
        port = sidecar.proc.port
        assert get(port, "/a")[0] == 200 and get(port, "/b")[0] == 403
        touch(f, V2)
        for _ in range(60):
            if get(port, "/b")[0] == 200:
                break
            await asyncio.sleep(0.1)
        assert get(port, "/b")[0] == 200 and get(port, "/a")[0] == 403
        touch(f, BAD)
        await asyncio.sleep(2.5)
        assert get(port, "/b")[0] == 200  # the old rules stay
        assert "access rules not reloaded" in sidecar.proc.output()


def test_coverage_counts_survive_a_reload(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(V1)
    holder = RulesHolder([str(f)])
    holder.load()
    holder.current.hits[0] += 3
    touch(f, V1.replace("'/a'", "'/a', '/c'") + "  - {id: two, match: {paths: ['/b']}, require: public}\n")
    assert holder.reload_if_changed() is True
    holder.current.hits[1] += 2
    holder.current.hits[0] += 1
    assert holder.matches_since_start() == {"one": 4, "two": 2}
