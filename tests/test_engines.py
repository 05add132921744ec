"""Execution engines for batch jobs (retailgan.engines): the ``ray`` engine writes the same tables
as ``local`` (recommend --all, campaign build), resumes like it, and leaves no Ray process behind."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retailgan.batch import recommend_all
from retailgan.campaign.build import build_campaign
from retailgan.cli import app
from retailgan.engines import LocalEngine, make_engine
from retailgan.errors import ConfigError
from tests.conftest import shop_store_and_model

runner = CliRunner()
RAY_PROCESS_NAMES = ("raylet", "gcs_server", "ray::", "dashboard", "log_monitor", "runtime_env_agent",
                     "default_worker.py", "monitor.py")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A small store (45 customers) and an EASE model."""
    return shop_store_and_model(tmp_path_factory.mktemp("engines"), customers=45, products=14,
                                customer_id=lambda c: f"C{c:02d}")


def ray_processes() -> dict[int, str]:
    """This machine's Ray processes (pid -> command line), from /proc."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(pid) != os.getpid() and any(name in cmd for name in RAY_PROCESS_NAMES):
            found[int(pid)] = cmd
    return found


def assert_no_new_ray_processes(before: dict[int, str], wait_s: float = 20.0) -> None:
    deadline = time.monotonic() + wait_s
    while (left := set(ray_processes()) - set(before)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"Ray processes left behind: {[ray_processes().get(p) for p in left]}"


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance for the module; shut down after it, and no Ray process may remain."""
    ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed")
    if not sys.platform.startswith("linux"):
        pytest.skip("the process check reads /proc")
    before = ray_processes()
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # a new instance, whatever else runs here
    try:
        yield ray
    finally:
        ray.shutdown()
        assert_no_new_ray_processes(before)


def test_recommend_all_on_ray_writes_the_bytes_of_local(shop, ray_instance, tmp_path):
    store, model_dir = shop
    kwargs = dict(store=store, k=4, block_size=5, explain=True)
    recommend_all(model_dir, tmp_path / "local.parquet", **kwargs)
    summary = recommend_all(model_dir, tmp_path / "ray.parquet", engine="ray", workers=2, **kwargs)
    assert summary.customers == 45
    assert (tmp_path / "ray.parquet").read_bytes() == (tmp_path / "local.parquet").read_bytes()
    assert not list(tmp_path.glob(".*"))  # the work directory is gone after the commit


class Stop(Exception):
    pass


def test_a_stopped_ray_job_resumes_to_the_same_bytes(shop, ray_instance, tmp_path):
    store, model_dir = shop
    kwargs = dict(store=store, k=3, block_size=6)
    recommend_all(model_dir, tmp_path / "full.parquet", **kwargs)
    recorded: list[int] = []

    def stop_after_two(c: int) -> None:
        recorded.append(c)
        if len(recorded) == 2:
            raise Stop

    out = tmp_path / "resumed.parquet"
    with pytest.raises(Stop):
        recommend_all(model_dir, out, engine="ray", workers=2, after_block=stop_after_two, **kwargs)
    assert not out.exists()
    redone: list[int] = []
    recommend_all(model_dir, out, engine="ray", workers=2, after_block=redone.append, **kwargs)
    assert sorted(redone) == sorted(set(range(8)) - set(recorded))  # 45 customers, blocks of 6
    assert out.read_bytes() == (tmp_path / "full.parquet").read_bytes()


def test_a_job_stopped_on_local_resumes_on_ray(shop, ray_instance, tmp_path):
    store, model_dir = shop
    kwargs = dict(store=store, k=3, block_size=10)
    recommend_all(model_dir, tmp_path / "full.parquet", **kwargs)

    def stop(c: int) -> None:
        raise Stop

    out = tmp_path / "r.parquet"
    with pytest.raises(Stop):
        recommend_all(model_dir, out, after_block=stop, **kwargs)
    redone: list[int] = []
    recommend_all(model_dir, out, engine="ray", workers=2, after_block=redone.append, **kwargs)
    assert sorted(redone) == [1, 2, 3, 4]  # the engine is not part of the job's fingerprint
    assert out.read_bytes() == (tmp_path / "full.parquet").read_bytes()


def test_campaign_on_ray_builds_the_campaign_of_local(shop, ray_instance, tmp_path):
    store, model_dir = shop
    kwargs = dict(k=3, recent_days=0, chunk_size=7)
    build_campaign(store, model_dir, tmp_path / "local", **kwargs)
    res = runner.invoke(app, ["campaign", "build", "--store", str(store), "--model-dir", str(model_dir),
                              "--out", str(tmp_path / "ray"), "--k", "3", "--recent-days", "0", "--chunk-size", "7",
                              "--engine", "ray", "--workers", "2"])
    assert res.exit_code == 0, res.output
    local_files = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*") if p.is_file())
    ray_files = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*") if p.is_file())
    assert ray_files == local_files and len(local_files) > 45  # e-mails, banners, table, summary, report
    for rel in local_files:
        assert (tmp_path / "ray" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes(), rel


def test_cli_recommend_all_on_ray(shop, ray_instance, tmp_path):
    store, model_dir = shop
    out = tmp_path / "r.parquet"
    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--all", "--store", str(store),
                              "--k", "2", "--out", str(out), "--engine", "ray", "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert "recommend: 45/45 customers (100%)" in res.stderr
    recommend_all(model_dir, tmp_path / "l.parquet", store=store, k=2)
    assert out.read_bytes() == (tmp_path / "l.parquet").read_bytes()


def test_a_worker_error_reaches_the_job_as_itself(shop, ray_instance, tmp_path):
    from retailgan.errors import ModelFileError

    store, model_dir = shop
    engine = make_engine("ray", 2)
    with pytest.raises(ModelFileError, match="no such model directory"):
        from retailgan.batch import BatchOptions, _Workers
        from retailgan.jobs import Chunks

        work = tmp_path / "work"
        work.mkdir()
        engine.run([0, 1], Chunks(["a", "b", "c"], 2), _Workers(BatchOptions(str(tmp_path / "gone")), str(work)),
                   lambda c: None, work=work)


@pytest.mark.slow
def test_cli_starts_and_stops_its_own_ray_instance(shop, tmp_path):
    """Without a running instance, ``--engine ray`` starts a local one and shuts it down."""
    pytest.importorskip("ray", reason="the 'ray' extra is not installed")
    store, model_dir = shop
    before = ray_processes()
    out = tmp_path / "r.parquet"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    res = subprocess.run([sys.executable, "-m", "retailgan.cli", "recommend", "--model-dir", str(model_dir), "--all",
                          "--store", str(store), "--k", "2", "--out", str(out), "--engine", "ray", "--workers", "2"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    recommend_all(model_dir, tmp_path / "l.parquet", store=store, k=2)
    assert out.read_bytes() == (tmp_path / "l.parquet").read_bytes()
    assert_no_new_ray_processes(before)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cli_on_a_cluster_started_with_ray_start(shop, tmp_path):
    """A cluster as docs/scaling.md starts one (``ray start --head``), reached with ``--address``."""
    pytest.importorskip("ray", reason="the 'ray' extra is not installed")
    import socket

    store, model_dir = shop
    before = ray_processes()
    port = _free_port()
    # Token authentication off: the head and this client do not share a token here.
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "disabled"}
    # Its own temporary folder (short: Ray's socket paths must fit), so that the address file
    # `ray start` leaves behind does not send later `ray.init()` calls to a cluster that is gone.
    temp = tempfile.mkdtemp(prefix="rg-ray-", dir="/tmp")
    head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={temp}", "--block"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
                time.sleep(0.5)
        out = tmp_path / "r.parquet"
        res = subprocess.run([sys.executable, "-m", "retailgan.cli", "recommend", "--model-dir", str(model_dir),
                              "--all", "--store", str(store), "--k", "2", "--out", str(out), "--engine", "ray",
                              "--address", f"127.0.0.1:{port}", "--workers", "2"],
                             capture_output=True, text=True, timeout=300, env=env)
        assert res.returncode == 0, res.stderr
    finally:
        head.terminate()  # ray start --block stops the processes it started
        head.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)
    recommend_all(model_dir, tmp_path / "l.parquet", store=store, k=2)
    assert out.read_bytes() == (tmp_path / "l.parquet").read_bytes()
    assert_no_new_ray_processes(before)


# -- without Ray ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ThreadReport:
    """A worker factory (picklable) whose worker writes its process's BLAS / OpenMP thread counts."""

    work: str

    def __call__(self):
        def run(c: int, items: list[str]) -> None:
            from threadpoolctl import threadpool_info

            counts = [lib["num_threads"] for lib in threadpool_info()]
            (Path(self.work) / f"{c}.json").write_text(json.dumps({"pid": os.getpid(), "threads": counts}))

        return run


def test_local_pool_workers_get_their_share_of_the_threads(tmp_path):
    done: list[int] = []
    LocalEngine(2).run([0, 1, 2, 3], [["a"]] * 4, ThreadReport(str(tmp_path)), done.append, work=tmp_path)
    assert sorted(done) == [0, 1, 2, 3]
    share = max(1, (os.cpu_count() or 1) // 2)
    reports = [json.loads((tmp_path / f"{c}.json").read_text()) for c in range(4)]
    assert {r["pid"] for r in reports}.isdisjoint({os.getpid()})  # ran in the pool
    assert all(r["threads"] and max(r["threads"]) <= share for r in reports), reports


def test_engine_names_and_addresses_are_checked(shop, tmp_path):
    store, model_dir = shop
    assert isinstance(make_engine(), LocalEngine)
    with pytest.raises(ConfigError, match="--engine must be one of local, ray"):
        make_engine("spark")
    with pytest.raises(ConfigError, match="--address goes with --engine ray"):
        make_engine("local", 2, "auto")
    for args, message in ((["--engine", "spark"], "--engine must be one of"),
                          (["--address", "auto"], "--address goes with --engine ray")):
        res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--all", "--out",
                                  str(tmp_path / "x.parquet"), *args])
        assert res.exit_code == 2 and message in res.stderr, res.output
        assert len(res.stderr.strip().splitlines()) == 1
        res = runner.invoke(app, ["campaign", "build", "--store", str(store), "--model-dir", str(model_dir),
                                  "--out", str(tmp_path / "c"), *args])
        assert res.exit_code == 2 and message in res.stderr, res.output
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "c").exists()


def test_an_address_nothing_listens_on_is_refused_at_once(shop, tmp_path):
    pytest.importorskip("ray", reason="the 'ray' extra is not installed")

    port = _free_port()  # free a moment ago: nothing listens there
    store, model_dir = shop
    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--all", "--out",
                              str(tmp_path / "x.parquet"), "--engine", "ray", "--address", f"127.0.0.1:{port}"])
    assert res.exit_code == 2 and f"--address 127.0.0.1:{port}: no Ray cluster answers there" in res.stderr, res.output
    assert not (tmp_path / "x.parquet").exists()


def test_without_the_extra_the_error_names_it(shop, tmp_path, monkeypatch):
    store, model_dir = shop
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'retailgan\[ray\]'"):
        make_engine("ray", 2)
    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--all", "--out",
                              str(tmp_path / "x.parquet"), "--engine", "ray"])
    assert res.exit_code == 2 and "needs the 'ray' extra" in res.stderr, res.output


def test_chunks_run_on_one_torch_thread_and_the_caller_keeps_its_own():
    import torch

    from retailgan.engines import LocalEngine

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: list[int] = []
        LocalEngine(1).run([0, 1], [["a"], ["b"]], lambda: (lambda c, items: seen.append(torch.get_num_threads())),
                           lambda c: None, work=Path("."))
        assert seen == [1, 1]  # whatever the worker count, so outputs do not depend on it
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
