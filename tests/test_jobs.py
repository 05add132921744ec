"""The shared chunk machinery: progress lines off a terminal, work directories and fingerprints."""

from __future__ import annotations

import io

from retailgan.jobs import Chunks, JobProgress, fingerprint, prepare_work


def test_progress_prints_a_line_every_few_chunks_with_an_estimate():
    stream = io.StringIO()  # not a terminal
    bar = JobProgress("recommend", "customers", total=400, done=0, n_chunks=40, stream=stream)
    for _ in range(40):
        bar.advance(10)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20  # every second chunk (about 20 lines a run)
    assert lines[0].startswith("recommend: 20/400 customers (5%); 0 s elapsed, ~")
    assert lines[-1].startswith("recommend: 400/400 customers (100%)") and "left" not in lines[-1]


def test_disabled_progress_prints_nothing():
    stream = io.StringIO()
    bar = JobProgress("x", "customers", total=10, done=0, n_chunks=1, enabled=False, stream=stream)
    bar.advance(10)
    assert stream.getvalue() == ""


def test_work_is_kept_only_for_the_same_fingerprint(tmp_path):
    work = tmp_path / ".out.work"
    chunks = Chunks([f"c{i}" for i in range(10)], 3)
    assert len(chunks) == 4 and chunks[3] == ["c9"]
    fp = fingerprint({"k": 1}, chunks.items)
    assert prepare_work(work, fp, len(chunks)) == set()
    (work / "progress.json").write_text(f'{{"fingerprint": "{fp}", "chunks": 4, "finished": [0, 2]}}')
    assert prepare_work(work, fp, len(chunks)) == {0, 2}
    other = fingerprint({"k": 2}, chunks.items)
    assert other != fp and fingerprint({"k": 1}, chunks.items[:-1]) != fp
    assert prepare_work(work, other, len(chunks)) == set()  # other arguments: started afresh
    (work / "progress.json").write_text("not json")
    assert prepare_work(work, other, len(chunks)) == set()
