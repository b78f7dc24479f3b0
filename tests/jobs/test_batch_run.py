"""``servion batch run`` as a real process over real files: Parquet, CSV and JSON Lines
inputs predicted exactly as the model predicts them, in input order over several
workers and partitions, the id column carried, every format written, the manifest's
checksums true, and the job listed, shown and audited."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from batch_files import (
    csv_rows,
    expected,
    jobs,
    names,
    read_parts,
    run,
    summary_of,
    write_csv,
    write_jsonl,
    write_parquet,
)

from conftest import N_FEATURES, BatchHome, cli
from servion.audit import read_events
from servion.config import Settings
from servion.deploy import Deployments, parse_spec
from servion.registry import ModelRegistry, RegisterRequest


def test_three_formats_in_one_job_keep_order_across_workers(batch_home: BatchHome) -> None:
    x = batch_home.tabular.x
    inputs = batch_home.files / "mixed"
    inputs.mkdir()
    # Each file meets the model its own way: the input's own column names (X[j]),
    # or exactly 32 columns besides the id, whatever their names.
    write_parquet(inputs / "a.parquet", x[:300], names(), ids=range(300), row_group_size=64)
    header = ["id", *(f"f{j}" for j in range(N_FEATURES))]
    write_csv(inputs / "b.csv", csv_rows(x[300:450], range(300, 450)), header)
    rows = [{"id": i, **dict(zip(names(), map(float, x[i]), strict=True))} for i in range(450, 600)]
    write_jsonl(inputs / "c.jsonl", rows)
    (inputs / "_SUCCESS").write_text("")  # written by other tools; not an input
    out = batch_home.files / "mixed-out"

    done = run(
        batch_home, "tabular", "--input", str(inputs), "--output", str(out),
        "--workers", "2", "--partition-rows", "70", "--id-column", "id", "--json",
    )  # fmt: skip
    summary = summary_of(done)

    assert done.returncode == 0, done.stderr
    assert summary["state"] == "succeeded"
    assert (summary["rows_in"], summary["rows_out"], summary["failed_rows"]) == (600, 600, 0)
    # Parquet partitions follow row groups (here of 64 rows); none spans two files.
    assert summary["partitions_total"] == 5 + 3 + 3
    table = read_parts(out)
    assert table.column_names == ["id", "label", "probabilities[0]", "probabilities[1]"]
    # A CSV id keeps its text; the ids of the other files are numbers, cast to the first's.
    assert table.column("id").to_pylist() == list(range(600))
    label, probabilities = expected(batch_home, x)
    assert np.array_equal(table.column("label").to_numpy(), label)
    got = np.stack([table.column(f"probabilities[{j}]").to_numpy() for j in (0, 1)], axis=1)
    # CSV holds the float32 values as text of their float64 selves: parsed back exactly.
    np.testing.assert_array_equal(got, probabilities)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows_in"] == 600 and manifest["columns"] == table.column_names
    for part in manifest["partitions"]:
        assert hashlib.sha256((out / part["file"]).read_bytes()).hexdigest() == part["sha256"]
    sizes = [p["rows_in"] for p in manifest["partitions"]]
    assert sizes == [64, 64, 64, 64, 44, 70, 70, 10, 70, 70, 10]

    listed = json.loads(cli(batch_home.home, "batch", "list", "--json").stdout)
    assert summary["job"] in [j["id"] for j in listed]
    # A job is found by the start of its id too.
    status = json.loads(
        cli(batch_home.home, "batch", "status", summary["job"][:10], "--json").stdout
    )
    assert len(status["partitions"]) == 11
    assert {p["state"] for p in status["partitions"]} == {"succeeded"}

    audit = Settings.load(home=batch_home.home).audit_dir
    events = list(read_events(audit))
    finished = next(e for e in events if f"job:{summary['job']}" in e["resources_affected"])
    run_events = [e for e in events if e["operation_id"] == finished["operation_id"]]
    assert [(e["operation"], e["outcome"]) for e in run_events] == [
        ("batch_run", "started"),
        ("batch_run", "success"),
    ]
    assert finished["performance_metrics"]["rows_out"] == 600
    assert finished["duration_seconds"] > 0


def test_json_lines_output(batch_home: BatchHome) -> None:
    x = batch_home.tabular.x[:200]
    label, probabilities = expected(batch_home, x)
    source = write_parquet(batch_home.files / "plain.parquet", x, names())
    out = batch_home.files / "plain-jsonl"
    done = run(
        batch_home, "tabular:v1.0.0", "--input", str(source), "--output", str(out),
        "--format", "jsonl", "--partition-rows", "64", "--workers", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = read_parts(out, "jsonl")
    assert table.column_names == ["label", "probabilities[0]", "probabilities[1]"]
    assert np.array_equal(table.column("label").to_numpy(), label)
    # The shortest text of each float32 reads back as the same float32.
    got = table.column("probabilities[1]").to_numpy().astype(np.float32)
    np.testing.assert_array_equal(got, probabilities[:, 1])
    assert sorted(p.name for p in out.glob("part-*")) == [f"part-0000{i}.jsonl" for i in range(4)]


def test_an_endpoint_runs_the_one_version_it_answers_with(batch_home: BatchHome) -> None:
    registry = ModelRegistry(Settings.load(home=batch_home.home))
    try:
        registry.register(RegisterRequest("tabular-b", batch_home.tabular.onnx, "v1.0.0"))
        deployments = Deployments(registry)
        one = {"endpoint": "batch-one", "models": [{"model": "tabular", "version": "v1.0.0"}]}
        deployments.deploy(parse_spec(json.dumps(one)), "test")
        split = {
            "endpoint": "batch-split",
            "models": [
                {"model": "tabular", "version": "v1.0.0", "weight": 90},
                {"model": "tabular-b", "version": "v1.0.0", "weight": 10},
            ],
        }
        deployments.deploy(parse_spec(json.dumps(split)), "test")
    finally:
        registry.close()
    x = batch_home.tabular.x[:50]
    source = write_parquet(batch_home.files / "endpoint.parquet", x, names())
    before = len(jobs(batch_home.home))

    done = run(batch_home, "batch-one", "--input", str(source), "--output",
               str(batch_home.files / "endpoint-out"), "--json")  # fmt: skip
    refused = run(batch_home, "batch-split", "--input", str(source), "--output",
                  str(batch_home.files / "split-out"))  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "endpoint batch-one answers with tabular:v1.0.0: running it" in done.stderr
    summary = summary_of(done)
    assert (summary["model"], summary["rows_out"]) == ("tabular:v1.0.0", 50)
    label, _ = expected(batch_home, x)
    table = read_parts(batch_home.files / "endpoint-out")
    assert np.array_equal(table.column("label").to_numpy(), label)
    assert refused.returncode == 2
    assert (
        "endpoint 'batch-split' splits its traffic between tabular:v1.0.0 (90 %),"
        " tabular-b:v1.0.0 (10 %): a batch job runs one model version: name it"
    ) in refused.stderr
    assert not (batch_home.files / "split-out").exists()
    assert len(jobs(batch_home.home)) == before + 1
