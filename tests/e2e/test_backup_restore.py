"""Backup while a server answers requests; restore into a fresh home that then serves
the same answers with verified checksums."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx

from conftest import TabularModels, cli, start_server

ROW = [0.25] * 32
BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 32], "data": ROW}]}


def test_backup_under_load_and_restore(tmp_path: Path, tabular: TabularModels) -> None:
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    assert (
        cli(home, "register", "tabsk", str(tabular.joblib), "--version", "v1.0.0").returncode == 0
    )
    server = start_server(home, tmp_path, "--workers", "1")
    failures: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url) as client:
            while not stop.is_set():
                status = client.post("/v2/models/tabular/infer", json=BODY).status_code
                if status != 200:
                    failures.append(status)

    driver = threading.Thread(target=load)
    driver.start()
    try:
        before = httpx.post(f"{server.url}/v2/models/tabular/infer", json=BODY).json()
        archive = tmp_path / "backups" / "registry.tar.gz"
        done = cli(home, "registry", "backup", str(archive), "--json")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert sorted(summary["versions"]) == ["tabsk:v1.0.0", "tabular:v1.0.0"]
    finally:
        stop.set()
        driver.join(30)
        server.stop()
    assert not failures

    fresh = tmp_path / "fresh"
    restored = cli(fresh, "registry", "restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    assert "restored 2 model versions" in restored.stdout and "checksum verified" in restored.stdout
    again = start_server(fresh, tmp_path, "--workers", "1")
    try:
        after = httpx.post(f"{again.url}/v2/models/tabular/infer", json=BODY).json()
        assert after["outputs"] == before["outputs"]
        assert httpx.get(f"{again.url}/v2/models/tabsk").status_code == 200
    finally:
        again.stop()

    into_used = cli(fresh, "registry", "restore", str(archive))
    assert into_used.returncode == 2 and "already holds a registry" in into_used.stderr
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive")
    refused = cli(tmp_path / "other", "registry", "restore", str(junk))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    missing = cli(tmp_path / "nothing", "registry", "backup", str(tmp_path / "b.tar.gz"))
    assert missing.returncode == 2 and "there is no registry" in missing.stderr
    events = [
        json.loads(line)
        for line in cli(home, "audit", "--operation", "backup", "--json").stdout.splitlines()
    ]
    assert [e["outcome"] for e in events] == ["started", "success"]
    # The audit trail travelled with the backup: the fresh home knows both registrations.
    registered = [
        json.loads(line)
        for line in cli(fresh, "audit", "--operation", "register", "--json").stdout.splitlines()
    ]
    assert {(e["model_name"], e["outcome"]) for e in registered} >= {
        ("tabular", "success"),
        ("tabsk", "success"),
    }
    assert summary["audit"] and all(n.startswith("audit-") for n in summary["audit"])


def test_backup_never_overwrites_silently_and_names_its_format(
    tmp_path: Path, tabular: TabularModels
) -> None:
    home = tmp_path / "home"
    assert (
        cli(home, "register", "tabular", str(tabular.onnx), "--version", "v1.0.0").returncode == 0
    )
    archive = tmp_path / "keep.tar.gz"
    archive.write_bytes(b"precious")
    again = cli(home, "registry", "backup", str(archive))
    assert again.returncode == 2 and "exists: pass --force" in again.stderr
    assert archive.read_bytes() == b"precious"
    forced = cli(home, "registry", "backup", str(archive), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "audit files" in forced.stdout
    assert archive.read_bytes()[:2] == b"\x1f\x8b"  # gzip
    for wrong in ("backup.zip", "backup.tar", "backup"):
        refused = cli(home, "registry", "backup", str(tmp_path / wrong))
        assert refused.returncode == 2 and "name it *.tar.gz or *.tgz" in refused.stderr, wrong
        assert not (tmp_path / wrong).exists()
    assert cli(home, "registry", "backup", str(tmp_path / "b.tgz")).returncode == 0
