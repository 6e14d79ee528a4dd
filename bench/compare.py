"""Before/after: in-process handling time of the same bodies for a git revision and for this tree, in one run.

Each tree is timed in its own subprocess (`python -m bench.inprocess`, with that tree's `cds` first on the
path), alternating, several rounds; the best median of each is compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench.servers import ROOT


def compare(revision: str, rounds: int = 3, budget: float = 0.5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cds-bench-compare-") as tmp:
        before = Path(tmp) / "before"
        before.mkdir()
        archive = subprocess.run(["git", "archive", revision, "cds", "hooks"], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        samples: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        for _ in range(rounds):
            for label, tree in (("before", before), ("after", ROOT)):
                samples[label].append(_time_tree(tree, Path(tmp), budget))
    result: dict[str, Any] = {"revision": revision, "rounds": rounds}
    for figure in ("median_ms", "p99_ms"):
        best = {label: {name: round(min(run[figure][name] for run in runs), 3) for name in runs[0][figure]}
                for label, runs in samples.items()}
        result[figure] = best
        result[f"{figure.removesuffix('_ms')}_speed_up"] = {
            name: round(best["before"][name] / best["after"][name], 2) for name in best["after"]}
    return result


def _time_tree(tree: Path, workdir: Path, budget: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(tree), str(ROOT)))}
    env = {k: v for k, v in env.items() if not k.startswith("CDS_")}
    result = subprocess.run([sys.executable, "-m", "bench.inprocess", str(budget)], cwd=workdir, env=env,
                            capture_output=True, text=True, check=True, timeout=300)
    timed = orjson.loads(result.stdout)
    if not Path(timed["cds"]).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"timed {timed['cds']}, not the tree {tree}")
    return timed


def table(result: dict[str, Any]) -> str:
    lines = [f"In-process handling time (ms), {result['revision']} (before) against this tree (after), "
             f"best of {result['rounds']} rounds:",
             f"{'body':<18}{'median before':>14}{'after':>8}{'speed-up':>10}{'p99 before':>12}{'after':>8}"
             f"{'speed-up':>10}"]
    for name in result["median_ms"]["after"]:
        median, p99 = result["median_ms"], result["p99_ms"]
        lines.append(f"{name:<18}{median['before'][name]:>14.3f}{median['after'][name]:>8.3f}"
                     f"{result['median_speed_up'][name]:>9.2f}x{p99['before'][name]:>12.3f}{p99['after'][name]:>8.3f}"
                     f"{result['p99_speed_up'][name]:>9.2f}x")
    return "\n".join(lines)
