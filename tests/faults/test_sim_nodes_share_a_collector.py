"""Several simulated nodes share one collector: `flopwatch agent --backend sim:N` names its GPUs
after the node id, so two agents on two nodes never claim the same GPU-seconds (before, both
said GPU-sim-0-i and the second node's records were all refused as overlap)."""

from __future__ import annotations

import re
from pathlib import Path

from flopwatch.collector.store.sqlite.store import SQLiteStore
from tests.faults.processes import CliAgent, CollectorProcess
from tests.faults.waits import wait_until


def test_two_simulated_nodes_are_both_counted(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path / "c.db", tmp_path / "collector.log", ())
    agents = {n: CliAgent(tmp_path / f"{n}.log") for n in ("sim-a", "sim-b")}
    try:
        collector.start()
        for node_id, agent in agents.items():
            agent.start(collector.address, tmp_path / node_id, node_id, gpus=2)

        def both_accepted() -> bool:
            for node_id, agent in agents.items():
                if not agent.running:
                    raise AssertionError(f"agent {node_id} exited:\n{agent.tail()}")
            log = collector.text()
            return all(re.search(rf"enrolled key \w+ for node {n}\b", log) for n in agents)

        wait_until(both_accepted, "a record of each node to be accepted", 60)
    finally:
        for agent in agents.values():
            agent.stop()
        collector.stop()
    store = SQLiteStore(tmp_path / "c.db")
    try:
        totals = store.gpu_totals()
    finally:
        store.close()
    by_node: dict[str, set[str]] = {}
    for t in totals:
        assert t.gpu_intervals > 0
        by_node.setdefault(t.node_id, set()).add(t.gpu)
    assert sorted(by_node) == ["sim-a", "sim-b"]
    assert all(len(gpus) == 2 for gpus in by_node.values())
    assert not by_node["sim-a"] & by_node["sim-b"]
    assert "overlap" not in "".join(a.text() for a in agents.values())
