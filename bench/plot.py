#!/usr/bin/env python3
"""Latency against rate for each system, from bench/out/results.json (needs matplotlib: run.sh
uses the bench venv).

    bench/.tools/venv/bin/python bench/plot.py bench/out/results.json bench/out/latency.png
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"direct": "#555555", "nginx": "#7048e8", "aibridge": "#d9480f",
          "aibridge-rec": "#f59f00", "litellm": "#1c7ed6", "portkey": "#2b8a3e"}
ORDER = ["direct", "nginx", "aibridge", "aibridge-rec", "litellm", "portkey"]
TITLES = {"anthropic": "Anthropic Messages (blocking)", "openai": "OpenAI Chat (blocking)"}


def main() -> None:
    results = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    prof = results["profile_settings"]
    endpoints = prof["blocking_endpoints"]
    systems = results["systems"]
    names = [n for n in ORDER if n in systems] + sorted(n for n in systems if n not in ORDER)
    fig, axes = plt.subplots(1, len(endpoints), figsize=(6.2 * len(endpoints), 4.6), squeeze=False)
    for ax, ep in zip(axes[0], endpoints):
        for name in names:
            runs = (systems[name].get("blocking") or {}).get(ep) or {}
            rates = sorted(int(r) for r in runs)
            for pct, style in (("p50", "-"), ("p99", "--")):
                xs, ys, over = [], [], []
                for rate in rates:
                    run = runs[str(rate)]
                    v = (run.get("latency_ms") or {}).get(pct)
                    if v is not None:
                        xs.append(rate)
                        ys.append(v)
                        done = sum((run.get("statuses") or {}).values())
                        over.append(done < 0.98 * rate * run.get("seconds", 0))
                if xs:
                    color = COLORS.get(name, None)
                    ax.plot(xs, ys, style, color=color, label=f"{name} {pct}")
                    ax.scatter([x for x, o in zip(xs, over) if not o],
                               [y for y, o in zip(ys, over) if not o], s=16, color=color)
                    ax.scatter([x for x, o in zip(xs, over) if o],
                               [y for y, o in zip(ys, over) if o], s=22, facecolors="white",
                               edgecolors=color)
        ax.set_xscale("log")
        ax.set_yscale("log")
        rates = prof["rates"]
        ax.set_xticks(rates)
        ax.set_xticklabels([str(r) for r in rates])
        ax.minorticks_off()
        ax.set_xlabel("offered rate (requests/s, open loop)")
        ax.set_ylabel("latency (ms, from scheduled start)")
        ax.set_title(TITLES.get(ep, ep))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"aibridge benchmark ({results['profile']}, {results['date']}, "
                 f"{results['machine']['nproc']} cores); hollow marker = overloaded (under 98% "
                 "of the offered requests answered in time)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
