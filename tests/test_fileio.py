"""Output files and folders get the modes of a plain write (0666 / 0777 less the umask), not tempfile's 0600 / 0700."""

from __future__ import annotations

import os
import stat

import pytest

from retailgan.data.dataset import InteractionDataset
from retailgan.evaluation.report import plot_results
from retailgan.fileio import atomic_write, make_temp_dir, write_text_atomic
from retailgan.models.baselines import EASE


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_folders_get_the_umask_modes(tmp_path, umask):
    assert mode(write_text_atomic(tmp_path / "a.json", "{}")) == 0o666 & ~umask
    assert mode(atomic_write(tmp_path / "b.bin", lambda p: open(p, "wb").close())) == 0o666 & ~umask
    assert mode(make_temp_dir(tmp_path, ".x.")) == 0o777 & ~umask
    result = [{"model": "m", "metrics": {"ndcg@10": 0.1}, "ci": {}}]
    assert mode(plot_results(result, ["ndcg@10"], tmp_path / "p.png")) == 0o666 & ~umask


def test_a_saved_model_folder_reads_like_any_other_output(tmp_path, umask):
    ds = InteractionDataset.from_arrays(["u1", "u1", "u2", "u3"], ["a", "b", "b", "c"])
    path = EASE(l2=1.0).fit(ds).save(tmp_path / "ease")
    assert mode(path) == 0o777 & ~umask
    assert {f.name: mode(f) for f in path.iterdir()} == {
        "model.json": 0o666 & ~umask, "arrays.safetensors": 0o666 & ~umask,
    }
