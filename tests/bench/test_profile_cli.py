"""``servion profile`` as a real process on real models, and the recommendation rule."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from conftest import TabularModels, cli, register
from servion.bench import BatchPoint, batch_sizes, recommend
from servion.config import Settings
from servion.registry import ModelRegistry


def test_profile_prints_a_table_and_the_command(
    registry: ModelRegistry, settings: Settings, tabular: TabularModels
) -> None:
    register(registry, "tabular", tabular.onnx)
    done = cli(settings.home, "profile", "tabular", "--duration", "0.05", "--max-batch-size", "8")
    assert done.returncode == 0, done.stderr
    assert "ROWS/S" in done.stdout and "recommended: max_batch_size" in done.stdout
    assert "apply: servion models batching tabular --max-batch-size " in done.stdout
    args = ("profile", "tabular:v1.0.0", "--duration", "0.05", "--max-batch-size", "12")
    as_json = cli(settings.home, *args, "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["model"] == "tabular" and report["version"] == "v1.0.0"
    assert [p["batch_size"] for p in report["points"]] == [1, 2, 4, 8, 12]
    assert all(p["runs"] >= 10 and p["rows_per_s"] > 0 for p in report["points"])
    rec = report["recommendation"]
    assert rec["within_budget"] is True and rec["max_batch_size"] in (1, 2, 4, 8, 12)
    assert 0 <= rec["max_queue_delay_us"] <= 10_000
    assert report["apply"].endswith(f"--max-queue-delay-us {rec['max_queue_delay_us']}")


def test_unbatched_models_profile_one_row(
    registry: ModelRegistry, settings: Settings, tmp_path: Path
) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "fixed.onnx")
    register(registry, "fixed", tmp_path / "fixed.onnx")
    done = cli(settings.home, "profile", "fixed", "--duration", "0.05", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["batched"] is False and [p["batch_size"] for p in report["points"]] == [1]
    assert report["recommendation"]["max_batch_size"] == 1


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("profile", "nope"), "unknown model 'nope'"),
        (("profile", "x"), "invalid model name"),
        (("profile", "tabular", "--max-batch-size", "0"), "--max-batch-size"),
    ],
)
def test_refusals_exit_2(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    done = cli(tmp_path / "home", *args)
    assert done.returncode == 2 and words in done.stderr
    assert "Traceback" not in done.stderr


def test_batch_sizes() -> None:
    assert batch_sizes(1) == [1]
    assert batch_sizes(128) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert batch_sizes(48) == [1, 2, 4, 8, 16, 32, 48]


def point(size: int, p99_ms: float, rows_per_s: float) -> BatchPoint:
    return BatchPoint(size, 100, p99_ms / 2, p99_ms, rows_per_s)


def test_recommendation_rule() -> None:
    sweep = [
        point(1, 0.5, 2000),  # one row every 500 us
        point(8, 2.0, 10_000),
        point(16, 4.0, 10_300),  # within 5% of the best: the smaller size wins
        point(32, 12.0, 20_000),  # over the 10 ms budget
    ]
    rec = recommend(sweep, budget_ms=10)
    assert rec.within_budget and rec.max_batch_size == 8
    # Gathering 7 more rows at 2000 rows/s takes 3.5 ms and the budget leaves 8 ms, but
    # one execution of batch 8 takes 1 ms (p50): waiting longer than that only adds latency.
    assert rec.max_queue_delay_us == 1000
    # A tighter budget caps the wait: 2.5 ms - 2 ms of execution leaves 0.5 ms.
    assert recommend(sweep, budget_ms=2.5).max_queue_delay_us == 500
    # A 10 us model is not told to wait milliseconds: at most one 40 us execution of its batch.
    fast = [point(1, 0.02, 100_000), point(64, 0.08, 1_000_000)]
    quick = recommend(fast, budget_ms=10)
    assert quick.max_batch_size == 64 and quick.max_queue_delay_us == 40
    # Without the cap, gathering 63 rows would have said 630 us.
    assert "630 us" in quick.reason
    none_fit = recommend(sweep, budget_ms=0.1)
    assert (none_fit.within_budget, none_fit.max_batch_size, none_fit.max_queue_delay_us) == (
        False,
        1,
        0,
    )
