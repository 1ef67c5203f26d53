"""ids.new_id: random version 4 UUIDs as text, from os.urandom bytes each thread fetches
in bulk; no two threads, and no forked child and its parent, ever make the same id."""

from __future__ import annotations

import os
import threading
import uuid

from mpesa_service.ids import new_id


def test_ids_are_version_4_uuids_in_their_usual_text_form():
    for text in [new_id() for _ in range(600)]:  # past one fetch of bytes (256 ids)
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == text


def test_threads_making_ids_at_once_never_repeat_one():
    made: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(len(made))

    def make(into: list[str]) -> None:
        start.wait()
        into.extend(new_id() for _ in range(2000))

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every_id = [text for into in made for text in into]
    assert len(every_id) == 16000
    assert len(set(every_id)) == len(every_id)


def test_a_forked_child_does_not_repeat_its_parents_ids():
    new_id()  # the parent now holds unused bytes, which the child inherits
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only reports its ids and leaves
        os.close(reading)
        os.write(writing, " ".join(new_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(writing)
    with os.fdopen(reading) as pipe:
        childs = set(pipe.read().split())
    os.waitpid(child, 0)
    parents = {new_id() for _ in range(10)}
    assert len(childs) == 10
    assert not childs & parents
