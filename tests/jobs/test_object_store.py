"""The lake and the input media on an S3-compatible store (moto's server on 127.0.0.1, started by the test): ingest
reads s3:// media, and the curate job (classical and model stages), the caption job and the sample job run with
the lake there, configured from the standard AWS_* environment only."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curation.lake import Lake
from curation.lake.tables import LakeAccessError
from curation.media.probe import MEDIA_EXTENSIONS
from curation.media.remote import list_files, local_copy
from tests.conftest import REPO
from tests.jobs.s3_server import free_port, moto_s3, s3_environment

# Three videos (3, 2 and 1 shots) and two images of the generated corpus: 8 clips by the generator's labels.
SUBSET = ("v0002.mp4", "v0011.mp4", "v0000.mp4", "i0000.png", "i0001.jpg")


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """The local S3 server's environment, with buckets ``media`` and ``lake``."""
    with moto_s3(("media", "lake")) as endpoint:
        yield s3_environment(endpoint)


@pytest.fixture
def s3_env(s3: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in s3.items():
        monkeypatch.setenv(k, v)
    return s3


def _client(env: dict[str, str]):
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def test_local_copy_and_listing_round_trip(s3_env: dict[str, str]):
    client = _client(s3_env)
    payload = os.urandom(3 << 20)
    client.put_object(Bucket="media", Key="unit/a b/clip.mp4", Body=payload)
    client.put_object(Bucket="media", Key="unit/notes.txt", Body=b"x")
    assert list_files("s3://media/unit", MEDIA_EXTENSIONS) == ["s3://media/unit/a b/clip.mp4"]
    assert list_files("s3://media/unit", MEDIA_EXTENSIONS, recursive=False) == []
    with local_copy("s3://media/unit/a b/clip.mp4") as path:
        assert path.endswith(".mp4") and Path(path).read_bytes() == payload
    assert not Path(path).exists()
    with pytest.raises(FileNotFoundError):
        list_files("s3://media/nothing-here", MEDIA_EXTENSIONS)
    with pytest.raises(FileNotFoundError), local_copy("s3://media/unit/missing.mp4"):
        pass


def test_lake_tables_on_s3_and_missing_versus_unreachable(s3_env: dict[str, str], monkeypatch):
    from curation.lake.tables import KeyedWriter

    lake = Lake("s3://lake/unit")
    assert lake.tables() == [] and lake.count("videos") == 0 and not lake.exists("videos")
    KeyedWriter(lake, "stages/blur").append(pa.table({"clip_id": ["a", "b"], "status": ["ok", "ok"]}))
    KeyedWriter(lake, "runs").append([{"run_id": "r", "stage": "blur"}])
    assert lake.tables() == ["runs", "stages/blur"] and lake.count("stages/blur") == 2
    assert not Path("s3:").exists()  # nothing local was created for the remote root
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # the store is down
    t0 = time.monotonic()
    with pytest.raises(LakeAccessError, match="s3://lake/unit"):
        Lake("s3://lake/unit").count("stages/blur")
    assert time.monotonic() - t0 < 60


def _job(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, **env,
            "RAY_TMPDIR": tempfile.mkdtemp(prefix="rs", dir="/tmp"), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", *args], env=full, cwd=cwd, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return r


def _count(env: dict[str, str], table: str) -> int:
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        return Lake("s3://lake/demo").count(table)


def _upload_subset(media: Path, env: dict[str, str]) -> None:
    client = _client(env)
    for name in SUBSET:
        client.upload_file(str(media / name), "media", f"corpus/{name}")


@pytest.mark.slow
def test_every_job_runs_with_lake_and_media_on_s3(corpus, s3: dict[str, str], tmp_path: Path):
    from captioner.tiny import save_tiny_captioner
    from curation.models.aesthetic import save_random_aesthetic_head
    from curation.config import ClipModelConfig, EmbedConfig
    from curation.models.clip import save_tiny_clip
    from curation.stages.model_stages import embedding_dim

    media, labels = corpus
    _upload_subset(media, s3)
    listing = tmp_path / "uris.txt"
    listing.write_text("s3://media/corpus/gone.mp4\n")  # listed but not in the store: an error row
    clip = save_tiny_clip(tmp_path / "clip")
    head = save_random_aesthetic_head(tmp_path / "aesthetic.safetensors",
                                      embedding_dim(EmbedConfig(clip=ClipModelConfig(path=str(clip)))))
    stages = "ingest,shots,borders,blur,exposure,phash,dedup,embed,aesthetic,select"
    curate = ["jobs.curate", "--config", str(REPO / "jobs/configs/demo.yaml"), "--lake", "s3://lake/demo",
              "--stages", stages, "--set", "input.paths=[s3://media/corpus]", "--set",
              f"input.uri_lists=[{listing}]", "--set", f"embed.clip.path={clip}", "--set",
              f"aesthetic.weights={head}", "--set", "ray.num_cpus=2", "--set", "report.html=false"]
    _job(curate, s3, tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3.items():
            mp.setenv(k, v)
        lake = Lake("s3://lake/demo")
        videos = lake.read("videos", columns=["uri", "status", "error"])
        ok_clips = lake.read("clips", columns=["clip_id"], filter="status = 'ok'").column("clip_id").to_pylist()
        tables = lake.tables()
        embedded = lake.count("stages/embed", "status = 'ok'")
        scored = lake.read("stages/aesthetic", columns=["clip_id", "status"])
        curated = lake.read("curated", columns=["clip_id", "keep"])
    by_uri = dict(zip(videos.column("uri").to_pylist(), videos.column("status").to_pylist()))
    assert by_uri == {**{f"s3://media/corpus/{n}": "ok" for n in SUBSET}, "s3://media/corpus/gone.mp4": "error"}
    expected = labels.filter(pc.is_in(labels.column("file"), value_set=pa.array(SUBSET)))
    assert len(ok_clips) == expected.num_rows == 8
    assert {"videos", "clips", "stages/blur", "stages/embed", "stages/aesthetic", "curated", "runs"} <= set(tables)
    assert embedded == len(ok_clips) and sorted(scored.column("clip_id").to_pylist()) == sorted(ok_clips)
    assert curated.num_rows >= len(ok_clips) and any(curated.column("keep").to_pylist())
    assert not (tmp_path / "s3:").exists()
    counts = {t: _count(s3, t) for t in tables if t not in ("runs", "curated")}
    _job(curate, s3, tmp_path)  # a re-run finds every key done on the store and adds nothing
    assert {t: _count(s3, t) for t in counts} == counts

    captioner = save_tiny_captioner(tmp_path / "tiny_captioner", seed=0)
    _job(["jobs.caption", "--config", str(REPO / "jobs/configs/caption_tiny.yaml"), "--lake", "s3://lake/demo",
          "--model", str(captioner), "--set", "backend=hf", "--set", "max_new_tokens=6", "--set", "use_ocr=false"],
         s3, tmp_path)
    _job(["jobs.sample", "--config", str(REPO / "jobs/configs/sample_tiny.yaml"), "--lake", "s3://lake/samples",
          "--set", f"models.tiny_dir={tmp_path / 'tiny'}", "--set", "sampling.num_steps=1",
          "--set", "sampling.height=32", "--set", "sampling.width=32", "--set", "sampling.num_frames=5",
          "--set", "limit=2"], s3, tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3.items():
            mp.setenv(k, v)
        captions = Lake("s3://lake/demo").read("captions", columns=["clip_id", "status"])
        kept = {c for c, k in zip(curated.column("clip_id").to_pylist(), curated.column("keep").to_pylist()) if k}
        samples = Lake("s3://lake/samples").read("samples", columns=["sample_id", "status"])
    assert set(captions.column("clip_id").to_pylist()) == kept
    assert samples.num_rows == 2 and set(samples.column("status").to_pylist()) == {"ok"}
