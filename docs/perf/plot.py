#!/usr/bin/env python3
"""Plots docs/perf/results.jsonl (from docs/perf/sweep.sh) into
docs/perf/throughput.png (entries/s against clients, n=4 and n=1) and
docs/perf/latency.png (commit latency CDF at each offered load).

Needs matplotlib (pip install matplotlib)."""
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = pathlib.Path(__file__).resolve().parent
results = [json.loads(line) for line in (here / "results.jsonl").read_text().splitlines() if line]
if not results:
    sys.exit("no results: run docs/perf/sweep.sh first")

fig, ax = plt.subplots(figsize=(6, 4))
clients = sorted((r for r in results if r["series"] == "clients"), key=lambda r: r["clients"])
ax.plot([r["clients"] for r in clients], [r["entries_per_second"] for r in clients], "o-", label="n = 4 (BFT)")
for r in results:
    if r["series"] == "single":
        ax.plot([r["clients"]], [r["entries_per_second"]], "s", label="n = 1, 64 clients")
ax.set_xscale("log", base=2)
ax.set_xlabel("concurrent clients (256 entries of 256 B per append)")
ax.set_ylabel("committed entries/s (verified receipts)")
ax.set_ylim(bottom=0)
ax.grid(True, alpha=0.3)
ax.legend()
ax.set_title("bftlog bench: throughput, 2-core machine, durable")
fig.tight_layout()
fig.savefig(here / "throughput.png", dpi=110)

fig, ax = plt.subplots(figsize=(6, 4))
for r in sorted((r for r in results if r["series"] == "rate"), key=lambda r: r["offered_entries_per_second"]):
    cdf = r["latency_cdf_ms"]
    ax.plot(cdf, [p / 100 for p in range(len(cdf))], label=f'{r["offered_entries_per_second"]:.0f} entries/s offered')
ax.set_xscale("log")
ax.set_xlabel("commit latency, submit to verified receipt (ms)")
ax.set_ylabel("fraction of appends")
ax.grid(True, alpha=0.3, which="both")
ax.legend()
ax.set_title("bftlog bench: latency CDF, n = 4, open loop")
fig.tight_layout()
fig.savefig(here / "latency.png", dpi=110)
print("wrote", here / "throughput.png", "and", here / "latency.png")
