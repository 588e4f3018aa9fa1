"""One real 2-process torch.distributed (gloo) run: ranks read disjoint, equal batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from loader_helpers import write_rows

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from datafuel.loaders import Loader

    shards, out = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo", init_method="env://")
    loader = Loader(shards, 6, seed=11)  # rank and world size come from torch.distributed
    model = torch.nn.Linear(3, 1)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    seen = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:  # equal batch counts: the all-reduce below never hangs
            loss = ddp(batch["x"]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen.append([epoch, batch["idx"].tolist()])
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, {"rank": loader.rank, "world": loader.world_size,
                                      "len": len(loader), "seen": seen})
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(gathered, f)
    dist.barrier()  # neither rank tears gloo down while the other still talks to it
    dist.destroy_process_group()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_ranks(
    script: Path, shards: Path, out: Path, extra_env: dict[str, str] | None = None
) -> list[subprocess.Popen[str]]:
    """Start the 2 gloo ranks of ``script`` (stderr piped), on a free port of 127.0.0.1."""
    port = free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "OMP_NUM_THREADS": "1",
            **(extra_env or {}),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(shards), str(out)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def test_two_process_gloo_ranks_are_disjoint(tmp_path: Path) -> None:
    assert torch.distributed.is_available()
    shards = write_rows(tmp_path / "rows", n=101)
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "seen.json"
    procs = launch_ranks(script, shards, out)
    results = []
    for p in procs:
        try:
            _stdout, stderr = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        results.append((p.returncode, stderr))
    assert all(rc == 0 for rc, _ in results), results
    gathered = json.loads(out.read_text())
    assert [g["rank"] for g in gathered] == [0, 1]
    assert all(g["world"] == 2 for g in gathered)
    assert gathered[0]["len"] == gathered[1]["len"] == 9  # 50 samples per rank in batches of 6
    assert len(gathered[0]["seen"]) == len(gathered[1]["seen"]) == 18
    for epoch in (0, 1):
        per_rank = [[i for e, b in g["seen"] if e == epoch for i in b] for g in gathered]
        assert len(per_rank[0]) == len(per_rank[1]) == 50
        assert not set(per_rank[0]) & set(per_rank[1])
