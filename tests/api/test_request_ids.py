"""Made request ids: the documented form, never repeated in a process or across a fork."""

import os
import re

from service.logs import new_request_id, sane_request_id

ID_FORM = re.compile(r"[0-9a-f]{32}")


def test_made_ids_have_the_documented_form_and_never_repeat():
    made = [new_request_id() for _ in range(10_000)]
    assert all(ID_FORM.fullmatch(rid) for rid in made)
    assert len(set(made)) == len(made)


def test_a_sane_id_is_kept_and_another_replaced():
    assert sane_request_id("trace-1:a.b_c") == "trace-1:a.b_c"
    for sent in (None, "", "has space", "a" * 129):
        assert ID_FORM.fullmatch(sane_request_id(sent))


def test_a_forked_child_makes_ids_its_parent_never_makes():
    before = new_request_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report two ids and leave without running the parent's cleanup
        try:
            os.write(write_end, f"{new_request_id()} {new_request_id()}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode().split()
    os.waitpid(pid, 0)
    parent = [new_request_id() for _ in range(2)]
    assert len(child) == 2 and all(ID_FORM.fullmatch(rid) for rid in child)
    assert {rid[:16] for rid in child} != {before[:16]}  # a prefix of its own, drawn after the fork
    assert not set(child) & {before, *parent}
