"""The dynamic batcher, in-process: exact splits, deadlines, bounds, priorities."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TabularModels
from servion.batching import BatchingConfig, DynamicBatcher, reported, request_scheduling
from servion.config import RuntimeSettings
from servion.errors import DeadlineExceeded, InvalidInput, ModelFailed, Overloaded
from servion.runtime import Runtime, make_runtime
from servion.types import Arrays


class Recorder:
    """A model that doubles its input and remembers every execution's rows."""

    def __init__(self, sleep_s: float = 0.0, fail_on: float | None = None) -> None:
        self.calls: list[list[float]] = []
        self.sleep_s = sleep_s
        self.fail_on = fail_on

    def __call__(self, arrays: Arrays, outputs: Sequence[str] | None) -> Arrays:
        x = arrays["x"]
        self.calls.append(x[:, 0].tolist())
        if self.fail_on is not None and (x == self.fail_on).any():
            raise ValueError("poisoned row")
        if self.sleep_s:
            time.sleep(self.sleep_s)  # holds the loop, as a slow model does
        return {"y": x * 2}


def rows(*values: float) -> Arrays:
    return {"x": np.array([[v] for v in values], dtype=np.float32)}


async def _concurrently(batcher: DynamicBatcher, requests: list[Arrays]) -> list[Arrays]:
    results = await asyncio.gather(*(batcher.submit(r, len(r["x"]), None) for r in requests))
    return [r[0] for r in results]


def _queued_mode(batcher: DynamicBatcher) -> None:
    batcher._inline = False  # as after a loop turn with several arrivals


def test_concurrent_requests_share_one_execution_and_get_their_own_rows() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, BatchingConfig(), "m:v1.0.0")
    _queued_mode(batcher)
    requests = [rows(1), rows(2, 3), rows(4), rows(5, 6, 7)]
    results = asyncio.run(_concurrently(batcher, requests))
    assert model.calls == [[1, 2, 3, 4, 5, 6, 7]]
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)


def test_low_load_runs_inline_and_rising_load_switches_to_batching() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, BatchingConfig(), "m:v1.0.0")

    async def scenario() -> None:
        for value in range(3):  # one at a time: each runs at once, never queued
            _, queue_ns, _ = await batcher.submit(rows(value), 1, None)
            assert queue_ns == 0
        await _concurrently(batcher, [rows(10), rows(11), rows(12)])  # three in one turn
        await asyncio.sleep(0)
        await _concurrently(batcher, [rows(20), rows(21), rows(22)])

    asyncio.run(scenario())
    assert model.calls[:3] == [[0], [1], [2]]
    assert [20, 21, 22] in model.calls  # by then the batcher noticed the load


def test_max_batch_size_and_preferred_sizes_cap_executions() -> None:
    model = Recorder()
    config = BatchingConfig(max_batch_size=4, preferred_batch_sizes=(2,))
    batcher = DynamicBatcher(model, config, "m:v1.0.0")
    _queued_mode(batcher)
    asyncio.run(_concurrently(batcher, [rows(v) for v in range(5)]))
    assert all(len(call) <= 4 for call in model.calls)
    assert model.calls[0] == [0, 1]
    assert sorted(v for call in model.calls for v in call) == [0, 1, 2, 3, 4]


def test_a_failing_request_fails_alone(caplog: pytest.LogCaptureFixture) -> None:
    model = Recorder(fail_on=13.0)
    batcher = DynamicBatcher(model, BatchingConfig(), "m:v1.0.0")
    _queued_mode(batcher)

    async def scenario() -> list[object]:
        calls = [batcher.submit(r, len(r["x"]), None) for r in (rows(1), rows(13), rows(2, 3))]
        return await asyncio.gather(*calls, return_exceptions=True)

    with caplog.at_level(logging.ERROR, logger="servion.batching"):
        ok1, bad, ok2 = asyncio.run(scenario())
        # The caller learns that the model failed and where to look, never the model's
        # words; they are logged once, under the request's id, when it is reported.
        assert isinstance(bad, ModelFailed) and "poisoned row" not in bad.message
        assert not caplog.records
        heard = reported(bad, "checkout-42")
        again = reported(bad, None)
    assert str(heard) == "model 'm:v1.0.0' failed (request id checkout-42)"
    assert re.fullmatch(r"model 'm:v1.0.0' failed \(request id \w{16}\)", str(again))
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == "checkout-42"]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "poisoned row" in str(logged[0].exc_info[1])
    assert isinstance(ok1, tuple) and isinstance(ok2, tuple)
    np.testing.assert_array_equal(ok2[0]["y"], rows(2, 3)["x"] * 2)


def test_request_past_its_deadline_is_answered_504_and_never_run() -> None:
    model = Recorder(sleep_s=0.05)
    # two-row requests and two-row batches: one request per execution
    batcher = DynamicBatcher(model, BatchingConfig(max_batch_size=2), "m:v1.0.0")
    _queued_mode(batcher)

    async def scenario() -> list[object]:
        calls = [
            batcher.submit(rows(1, 1), 2, None),
            batcher.submit(rows(2, 2), 2, None, timeout_us=10_000),  # 10 ms; 50 ms ahead of it
            batcher.submit(rows(3, 3), 2, None, timeout_us=5_000_000),
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    first, late, patient = asyncio.run(scenario())
    assert isinstance(late, DeadlineExceeded) and "it was not run" in late.message
    assert isinstance(first, tuple) and isinstance(patient, tuple)
    assert model.calls == [[1, 1], [3, 3]]


def test_full_queue_refuses_with_a_computed_retry_after() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, BatchingConfig(max_queue_size=2), "m:v1.0.0")
    _queued_mode(batcher)

    async def scenario() -> list[object]:
        calls = [batcher.submit(rows(v), 1, None) for v in range(4)]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    refused = [o for o in outcomes if isinstance(o, Overloaded)]
    assert len(refused) == 2 and all(o.retry_after > 0 for o in refused)
    assert sum(isinstance(o, tuple) for o in outcomes) == 2


def test_higher_priority_runs_first() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, BatchingConfig(max_batch_size=2), "m:v1.0.0")
    _queued_mode(batcher)

    async def scenario() -> None:
        await asyncio.gather(
            batcher.submit(rows(3, 3), 2, None, priority=3),
            batcher.submit(rows(0, 0), 2, None),  # default priority 2
            batcher.submit(rows(1, 1), 2, None, priority=1),
        )

    asyncio.run(scenario())
    assert model.calls == [[1, 1], [0, 0], [3, 3]]


def test_outputs_without_a_batch_dimension_stop_batching() -> None:
    def summary(arrays: Arrays, outputs: Sequence[str] | None) -> Arrays:
        return {"total": np.asarray(arrays["x"].sum())}

    batcher = DynamicBatcher(summary, BatchingConfig(), "m:v1.0.0")
    _queued_mode(batcher)
    results = asyncio.run(_concurrently(batcher, [rows(1, 2), rows(10)]))
    assert [float(r["total"]) for r in results] == [3.0, 10.0]


def test_drain_runs_what_is_queued_then_refuses() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, BatchingConfig(), "m:v1.0.0")
    _queued_mode(batcher)

    async def scenario() -> tuple[object, ...]:
        first = asyncio.ensure_future(batcher.submit(rows(1), 1, None))
        await asyncio.sleep(0)  # queued, flush not yet run
        batcher.drain()
        done = await first
        with pytest.raises(Exception, match="unloading"):
            await batcher.submit(rows(2), 1, None)
        return done

    done = asyncio.run(scenario())
    assert model.calls == [[1.0]]
    assert isinstance(done, tuple)


def test_scheduling_parameters_are_checked() -> None:
    assert request_scheduling({"priority": 1, "timeout": 5000}) == (1, 5000)
    for bad in ({"priority": -1}, {"timeout": "soon"}, {"priority": True}, {"timeout": 1.5}):
        with pytest.raises(InvalidInput):
            request_scheduling(bad)


@pytest.fixture(scope="module")
def onnx_runtime(tabular: TabularModels) -> Runtime:
    runtime = make_runtime("onnx", tabular.onnx, RuntimeSettings(), {})
    runtime.load()
    return runtime


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=24),
    priorities=st.lists(st.integers(0, 3), min_size=24, max_size=24),
    max_batch=st.integers(1, 40),
    outputs=st.sampled_from([None, ["label"], ["probabilities"]]),
)
def test_batched_results_equal_unbatched_inference(
    onnx_runtime: Runtime,
    tabular: TabularModels,
    sizes: list[int],
    priorities: list[int],
    max_batch: int,
    outputs: list[str] | None,
) -> None:
    batcher = DynamicBatcher(
        onnx_runtime.predict, BatchingConfig(max_batch_size=max_batch), "tabular"
    )
    _queued_mode(batcher)
    starts = np.cumsum([0, *sizes])
    requests = [{"X": tabular.x[a:b]} for a, b in itertools.pairwise(starts)]

    async def scenario() -> list[tuple[Arrays, int, int]]:
        calls = [
            batcher.submit(r, len(r["X"]), outputs, priority=p)
            for r, p in zip(requests, priorities, strict=False)
        ]
        return await asyncio.gather(*calls)

    results = asyncio.run(scenario())
    for request, (got, _, _) in zip(requests, results, strict=True):
        alone = onnx_runtime.predict(request, outputs)
        for name in outputs or ["label", "probabilities"]:
            assert got[name].shape == alone[name].shape
            np.testing.assert_allclose(got[name], alone[name], rtol=1e-6, atol=1e-7)


def test_slow_models_run_in_a_thread_and_the_loop_stays_responsive() -> None:
    model = Recorder(sleep_s=0.2)
    batcher = DynamicBatcher(model, BatchingConfig(execution="thread"), "m:v1.0.0")

    async def scenario() -> tuple[float, list[object]]:
        first = asyncio.ensure_future(batcher.submit(rows(1), 1, None))
        await asyncio.sleep(0.01)  # the model is now busy in its thread
        t0 = time.perf_counter()
        await asyncio.sleep(0.01)
        responsive = time.perf_counter() - t0
        later = [batcher.submit(rows(v), 1, None) for v in (2, 3, 4)]
        return responsive, await asyncio.gather(first, *later)

    responsive, outcomes = asyncio.run(scenario())
    assert responsive < 0.1  # the loop was not held by the 200 ms execution
    assert model.calls == [[1], [2, 3, 4]]  # what queued while busy ran as one batch
    assert all(isinstance(o, tuple) for o in outcomes)


def test_auto_execution_moves_slow_models_off_the_loop() -> None:
    batcher = DynamicBatcher(Recorder(sleep_s=0.003), BatchingConfig(), "m:v1.0.0")
    assert not batcher.threaded

    async def scenario() -> None:
        for value in range(8):
            await batcher.submit(rows(value), 1, None)

    asyncio.run(scenario())
    assert batcher.threaded  # 3 ms executions average above the 1 ms threshold


def test_a_deadline_fires_while_an_execution_runs() -> None:
    """A queued request hears of its deadline when it passes, not when the model is free."""
    model = Recorder(sleep_s=0.6)
    config = BatchingConfig(execution="thread", dynamic=False)
    batcher = DynamicBatcher(model, config, "m:v1.0.0")
    _queued_mode(batcher)

    async def scenario() -> tuple[object, float]:
        running = asyncio.ensure_future(batcher.submit(rows(1), 1, None))
        await asyncio.sleep(0.05)  # the first execution is under way in the model's thread
        started = time.perf_counter()
        try:
            await batcher.submit(rows(2), 1, None, timeout_us=100_000)
        except DeadlineExceeded as exc:
            waited = time.perf_counter() - started
            await running
            return exc, waited
        raise AssertionError("the queued request ran")

    error, waited = asyncio.run(scenario())
    assert isinstance(error, DeadlineExceeded) and "it was not run" in error.message
    assert waited < 0.4  # not the 0.55 s left of the running execution
    assert model.calls == [[1.0]]


def test_a_model_measured_slow_at_warm_up_never_runs_on_the_loop() -> None:
    fast = DynamicBatcher(Recorder(), BatchingConfig(), "m:v1.0.0", expected_ns=20_000)
    slow = DynamicBatcher(Recorder(), BatchingConfig(), "m:v1.0.0", expected_ns=5_000_000)
    assert not fast.threaded and slow.threaded
