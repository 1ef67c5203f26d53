"""The callback journal file: entries survive, in order, whatever happens to the file; it
stays open between appends, yet follows its path when the file is rotated or deleted, starts
afresh after a failed write, and does not let a torn last line swallow the next entry."""

from __future__ import annotations

import os

import pytest

from mpesa_service.journal import Journal


def kinds(path) -> list[str]:
    return [entry["kind"] for entry in Journal(path).entries()]


def test_entries_are_read_back_in_order_with_their_bodies(tmp_path):
    journal = Journal(tmp_path / "b2c_callbacks.log")
    ids = journal.append_many(
        [("b2c_result", b'{"a": 1}', "10.0.0.1", ""), ("stk", b"\xff", "10.0.0.2", "p1")]
    )
    journal.append_refused("b2c_timeout", b"{}", 2, "10.0.0.3", "wrong callback token")
    entries = list(journal.entries())
    assert [entry["id"] for entry in entries[:2]] == ids
    assert [entry["kind"] for entry in entries] == ["b2c_result", "stk", "b2c_timeout"]
    assert entries[0]["body"] == '{"a": 1}'
    assert "body_base64" in entries[1] and entries[1]["payment_id"] == "p1"
    assert (entries[2]["state"], entries[2]["reason"]) == ("rejected", "wrong callback token")
    assert (entries[2]["body_head"], entries[2]["size"]) == ("{}", 2)


def test_a_sender_over_its_quota_of_refusals_is_counted_not_journaled(tmp_path):
    journal = Journal(tmp_path / "b2c_callbacks.log", refused_per_minute=2)
    written = [journal.append_refused("stk", b"x", 1, "10.0.0.9", "wrong token") for _ in range(5)]
    assert [bool(entry_id) for entry_id in written] == [True, True, False, False, False]
    assert journal.append_refused("stk", b"x", 1, "10.0.0.8", "wrong token")  # another sender
    journal.refusals.WINDOW_SECONDS = 0  # the minute is over
    journal.append_refused("stk", b"x", 1, "10.0.0.9", "wrong token")
    last = list(journal.entries())[-1]
    assert (last["remote_addr"], last["not_journaled_before"]) == ("10.0.0.9", 3)


@pytest.mark.parametrize("gone", ["rotated", "deleted"])
def test_a_journal_rotated_or_deleted_is_followed_to_the_new_file(tmp_path, gone):
    path, rotated = tmp_path / "b2c_callbacks.log", tmp_path / "b2c_callbacks.log.1"
    journal = Journal(path)
    journal.RECHECK_SECONDS = 0  # check the path at every append
    journal.append("first", b"{}", "")
    if gone == "rotated":
        path.rename(rotated)  # as logrotate does
    else:
        path.unlink()
    journal.append("second", b"{}", "")
    assert kinds(path) == ["second"]
    assert kinds(rotated) == (["first"] if gone == "rotated" else [])


def test_between_checks_appends_go_to_the_file_already_open(tmp_path):
    path = tmp_path / "b2c_callbacks.log"
    journal = Journal(path)
    journal.RECHECK_SECONDS = 3600
    journal.append("first", b"{}", "")
    path.rename(tmp_path / "moved.log")
    journal.append("second", b"{}", "")
    assert kinds(tmp_path / "moved.log") == ["first", "second"]
    assert not path.exists()


@pytest.mark.parametrize("recheck_seconds", [3600, 0])  # failing in write, or in the check
def test_after_a_failed_write_the_next_append_opens_the_file_again(tmp_path, recheck_seconds):
    path = tmp_path / "b2c_callbacks.log"
    journal = Journal(path)
    journal.RECHECK_SECONDS = recheck_seconds
    journal.append("first", b"{}", "")
    os.close(journal._descriptor)  # the descriptor goes bad under the journal's feet
    with pytest.raises(OSError):
        journal.append("lost", b"{}", "")
    journal.append("second", b"{}", "")
    assert kinds(path) == ["first", "second"]


def test_an_entry_after_a_torn_line_is_kept_and_the_torn_line_reported(tmp_path, caplog):
    path = tmp_path / "b2c_callbacks.log"
    Journal(path).append("before", b"{}", "")
    with path.open("ab") as journal:
        journal.write(b'{"id": "x", "kind": "b2c_res')  # a write cut short
    Journal(path).append("after", b"{}", "")  # as a service started again would
    with caplog.at_level("ERROR"):
        assert kinds(path) == ["before", "after"]
    assert "unreadable journal line skipped" in caplog.text
