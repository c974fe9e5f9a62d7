"""Shared fixtures: a small synthetic dataset, the real MovieLens folder when present, settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusionrec.config import Settings
from fusionrec.data.synth import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
MOVIELENS = (REPO / ".." / "shared" / "data" / "movielens-100k-mm").resolve()
MOVIELENS_CONTRACT = REPO / "configs" / "datasets" / "movielens-100k-mm.yaml"


@pytest.fixture(scope="session")
def free_port():
    """A function returning a free loopback TCP port."""
    import socket

    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return pick


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory, free_port):
    """A real redis-server on a free loopback port, for the session (CI installs the Debian package)."""
    server = RedisProcess(tmp_path_factory.mktemp("redis"), free_port())
    server.start()
    yield server.address
    server.stop()


class RedisProcess:
    """A real redis-server that a test can stop and start again on the same port (in memory only)."""

    def __init__(self, folder: Path, port: int) -> None:
        import shutil

        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does this)")
        self.folder, self.port, self.proc = folder, port, None
        self.address = f"127.0.0.1:{port}"

    def start(self) -> None:
        import socket
        import subprocess
        import time

        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not listen on {self.address}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def synth_clean(tmp_path_factory) -> Path:
    """A small synthetic dataset without defects; returns its folder (contract: dataset.yaml)."""
    out = tmp_path_factory.mktemp("synth") / "clean"
    generate(SynthConfig(users=120, items=80, seed=11, workers=1), out, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_defects(tmp_path_factory) -> Path:
    """A small synthetic dataset with planted defects (see truth/truth.json)."""
    out = tmp_path_factory.mktemp("synth") / "defects"
    generate(SynthConfig(users=150, items=100, seed=5, defects=0.05, workers=1), out, progress=False)
    return out


@pytest.fixture(scope="session")
def movielens() -> Path:
    if not (MOVIELENS / "ratings.csv").exists():
        pytest.skip(f"real data absent: {MOVIELENS} (the shared movielens-100k-mm folder) is not on this machine")
    return MOVIELENS


@pytest.fixture(scope="session")
def text_encoder():
    from fusionrec.encoders.text import TextEncoder
    from fusionrec.privacy import PiiFilter

    return TextEncoder(pii=PiiFilter(), device="cpu")


@pytest.fixture(scope="session")
def image_encoder():
    from fusionrec.encoders.image import ImageEncoder

    return ImageEncoder(device="cpu", batch_size=16)


@pytest.fixture(scope="session")
def synth_validated_dir(synth_clean, tmp_path_factory, settings) -> Path:
    """The clean synthetic dataset, validated: its folder."""
    from fusionrec.validation import validate_dataset

    out = tmp_path_factory.mktemp("validated") / "synth"
    validate_dataset(synth_clean / "dataset.yaml", out, settings.validation, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_validated(synth_validated_dir):
    """The clean synthetic dataset, validated and loaded."""
    from fusionrec.data.dataset import Dataset

    return Dataset.load(synth_validated_dir)


@pytest.fixture(scope="session")
def synth_embeddings(synth_validated, text_encoder, image_encoder, tmp_path_factory):
    """Real embeddings of the synthetic dataset (text, image, audio), cached in a temporary folder."""
    from fusionrec.config import PathsSettings, Settings
    from fusionrec.encoders.pipeline import encode_dataset

    cache = tmp_path_factory.mktemp("cache")
    settings = Settings(paths=PathsSettings(artifacts=str(cache), cache=str(cache)))
    return encode_dataset(
        synth_validated, settings, encoders={"text": text_encoder, "image": image_encoder}, progress=False
    )


@pytest.fixture(scope="session")
def synth_embeddings_dir(synth_validated, synth_embeddings, tmp_path_factory) -> Path:
    """The synthetic dataset's embeddings, written as 'fusionrec embed' writes them."""
    from fusionrec.encoders.pipeline import save_embeddings

    out = tmp_path_factory.mktemp("embeddings")
    save_embeddings(synth_embeddings, synth_validated.items["item_id"].to_numpy(), out)
    return out
