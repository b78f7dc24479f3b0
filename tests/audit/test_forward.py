"""The forwarder against a real local HTTP collector that goes away mid-stream:
every event arrives, in order, none twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from conftest import Collector
from servion.audit import Auditor, read_events
from servion.audit.forward import Forwarder
from servion.config import AuditSettings, Settings


def wait_until(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_no_event_is_lost_or_duplicated_across_a_collector_outage(tmp_path: Path) -> None:
    collector = Collector(fail_next=1)
    url = f"http://127.0.0.1:{collector.port}/_bulk"
    base = Settings.load(home=tmp_path / "home")
    settings = base.model_copy(update={"audit": AuditSettings(forward_url=url, forward_batch=7)})
    audit = Auditor(settings, command="test")
    forwarder = Forwarder(settings)
    stop = threading.Event()
    runner = threading.Thread(target=forwarder.run, args=(stop, 0.05))
    runner.start()
    try:
        for i in range(10):
            with audit.operation("register", model_name=f"m{i:02d}"):
                pass
        wait_until(lambda: len(collector.docs) == 20)
        collector.stop()  # the collector goes down mid-stream
        for i in range(10, 25):
            with audit.operation("register", model_name=f"m{i:02d}"):
                pass
        time.sleep(1.0)  # the forwarder fails and backs off meanwhile
        assert forwarder.failures > 0
        revived = Collector(port=collector.port)
        wait_until(lambda: len(revived.docs) == 30, timeout=60)
    finally:
        stop.set()
        runner.join(30)
        audit.close()
    written = list(read_events(settings.audit_dir))
    assert len(written) == 50
    everything = {**collector.docs, **revived.docs}
    assert len(everything) == 50  # every event, each once (a resend overwrites its _id)
    for event in written:
        assert everything[f"{event['operation_id']}:{event['outcome']}"] == event
    # In order: what the revived collector got continues where the first one stopped.
    order = [f"{e['operation_id']}:{e['outcome']}" for e in written]
    assert revived.arrivals == order[20:]
    firsts = [x for i, x in enumerate(collector.arrivals) if x not in collector.arrivals[:i]]
    assert firsts == order[:20]
    assert len(collector.arrivals) > 20  # the batch whose acknowledgement was lost, again
    revived.stop()


def test_a_restarted_forwarder_resumes_from_its_cursor(tmp_path: Path) -> None:
    collector = Collector()
    url = f"http://127.0.0.1:{collector.port}/_bulk"
    settings = Settings.load(home=tmp_path / "home").model_copy(
        update={"audit": AuditSettings(forward_url=url)}
    )
    audit = Auditor(settings, command="test")
    with audit.operation("register"):
        pass
    audit.close()
    first = Forwarder(settings)
    assert first.acquire() and first.pump() == 2 and first.pump() == 0
    assert not Forwarder(settings).acquire()  # one forwarder at a time
    first.release()
    audit = Auditor(settings, command="test")
    with audit.operation("delete"):
        pass
    audit.close()
    second = Forwarder(settings)
    assert second.acquire() and second.pump() == 2
    second.release()
    assert len(collector.arrivals) == 4 and len(collector.docs) == 4
    collector.stop()
