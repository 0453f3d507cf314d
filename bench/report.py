#!/usr/bin/env python3
"""Turns bench/out/results.json into the Markdown report (tables, the targets, the set-up).

    python3 bench/report.py bench/out/results.json bench/out/RESULTS.md [--plot latency.png]

Standard library only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PCTS = ["p50", "p90", "p99", "p99.9"]
ORDER = ["direct", "nginx", "aibridge", "aibridge-rec", "litellm", "portkey"]
ENDPOINT_LABEL = {"anthropic": "Anthropic Messages", "openai": "OpenAI Chat Completions"}

# The targets (2-core machine, loopback).
T_ADDED_P99_MS = 1.0
T_THROUGHPUT_RATIO = 0.70
T_TTFB_P99_MS = 1.0
T_RSS_MB = 150
T_STREAMS = 1000


def ms(v, digits=2) -> str:
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v / 1000:.2f} s"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}f}"


def signed(v) -> str:
    if v is None:
        return "–"
    return ("+" if v >= 0 else "") + ms(v)


def mb(kb) -> str:
    return "–" if kb is None else f"{kb / 1024:.1f}"


def num(v, digits=0) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def pct(ratio: float) -> str:
    return f"{ratio:.1%}" if ratio < 0.1 else f"{ratio:.0%}"


def ordered(systems: dict) -> list[str]:
    names = [n for n in ORDER if n in systems]
    return names + sorted(n for n in systems if n not in names)


def failures(run: dict) -> str:
    if not run or "error" in run:
        return (run or {}).get("error", "no run")[:80]
    bad = {k: v for k, v in (run.get("statuses") or {}).items() if k != "200"}
    # oha cancels the requests still in flight when its -z time is up: not failures.
    errs = {k: v for k, v in (run.get("errors") or {}).items()
            if "aborted due to deadline" not in k}
    parts = [f"{v}×{k}" for k, v in sorted(bad.items())]
    parts += [f"{v}× {k[:40]}" for k, v in sorted(errs.items())]
    if run.get("rate") and run.get("seconds") and "statuses" in run and "unfinished" not in run:
        done = sum(run["statuses"].values())
        if done < 0.98 * run["rate"] * run["seconds"]:
            parts.append(f"overloaded: {done:,} of {run['rate'] * run['seconds']:,} scheduled "
                         "answered")
    if run.get("unfinished"):
        parts.append(f"{run['unfinished']} unfinished")
    return ", ".join(parts) if parts else "none"


def added(run: dict | None, base: dict | None, pct: str, key: str | None = None):
    def get(r):
        if not r or "error" in r:
            return None
        lat = r.get("latency_ms") or {}
        if key:
            lat = lat.get(key) or {}
        return lat.get(pct)
    a, b = get(run), get(base)
    return None if a is None or b is None else a - b


def lat(run: dict | None, pct: str, key: str | None = None):
    if not run or "error" in run:
        return None
    l = run.get("latency_ms") or {}
    if key:
        l = l.get(key) or {}
    return l.get(pct)


def nginx_sat(r: dict, ep: str) -> dict | None:
    """nginx's saturation run of this endpoint, when this run measured one that answered."""
    run = ((r["systems"].get("nginx") or {}).get("saturation") or {}).get(ep)
    return run if run and run.get("ok_rps") else None


def vs_nginx(run: dict | None, nginx: dict | None):
    """Saturation throughput as a multiple of nginx's (same endpoint, same run)."""
    if not run or not run.get("ok_rps") or not nginx:
        return None
    return run["ok_rps"] / nginx["ok_rps"]


def times(ratio) -> str:
    return "–" if ratio is None else f"{ratio:.2f}×"


def cpu_us_per_req(run: dict | None):
    """CPU µs of the system's process tree per successful request (gateway_cpu_s / ok)."""
    if not run or run.get("gateway_cpu_s") is None or not run.get("ok"):
        return None
    return run["gateway_cpu_s"] / run["ok"] * 1e6


def nginx_source(r: dict) -> str:
    """Which run the nginx baseline is from (always the run of this report)."""
    return (f"nginx measured in this same run (`{r.get('command') or 'bench/run.sh'}`, "
            f"{r['date']}; `systems.nginx` in results.json)")


def blocking_tables(r: dict) -> list[str]:
    S = r["systems"]
    out = []
    direct = S.get("direct", {})
    for ep in r["profile_settings"]["blocking_endpoints"]:
        out.append(f"### Blocking {ENDPOINT_LABEL[ep]}: latency at fixed rates (ms)\n")
        out.append("Open loop (oha `-q RATE --latency-correction`, 50 connections): latency counts "
                   "from each request's scheduled send time. *Added* = the system's percentile "
                   "minus the direct path's at the same rate.\n")
        out.append("| rate | system | p50 | p90 | p99 | p99.9 | added p50 | added p90 | added p99 "
                   "| added p99.9 | ok / scheduled | failures | gateway CPU s / 1k req |")
        out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
        for rate in r["profile_settings"]["rates"]:
            base = direct.get("blocking", {}).get(ep, {}).get(str(rate))
            for name in ordered(S):
                run = S[name].get("blocking", {}).get(ep, {}).get(str(rate))
                if run is None:
                    continue
                sent = rate * run.get("seconds", 0)
                cells = [str(rate), name] + [ms(lat(run, p)) for p in PCTS]
                if name == "direct":
                    cells += ["", "", "", ""]
                else:
                    cells += [signed(added(run, base, p)) for p in PCTS]
                cpu = run.get("gateway_cpu_s_per_1k")
                cells += [f"{run.get('ok', 0):,} / {sent:,}", failures(run),
                          "–" if cpu is None else f"{cpu:.3f}"]
                out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return out


def saturation_table(r: dict) -> list[str]:
    S = r["systems"]
    p = r["profile_settings"]
    with_nginx = any(nginx_sat(r, ep) for ep in p["blocking_endpoints"])
    out = [f"### Maximum throughput (closed loop, {p['saturation_conns']} connections, "
           f"{p['saturation_seconds']} s)\n",
           "*CPU µs / req* = CPU time of the system's process tree (utime+stime from /proc, "
           "children included) during the closed-loop run, divided by the requests answered 200 "
           "(the same measure as *CPU s / 1k req*, in µs)."
           + (" *vs nginx* = the system's ok req/s divided by nginx's on the same endpoint: "
              "nginx relays the same requests with the pool key put on and nothing else, so it "
              "is about the most one core can pass through here (1.00× = as fast as a plain "
              "reverse proxy); " + nginx_source(r) + "." if with_nginx else "") + "\n",
           "| endpoint | system | ok req/s | ratio to direct"
           + (" | vs nginx" if with_nginx else "")
           + " | p50 ms | p99 ms | failures | gateway CPU s / 1k req | gateway CPU µs / req "
           "| fake upstream CPU s / 1k req |",
           "|---|---|---:|---:|" + ("---:|" if with_nginx else "")
           + "---:|---:|---|---:|---:|---:|"]
    for ep in p["blocking_endpoints"]:
        base = S.get("direct", {}).get("saturation", {}).get(ep) or {}
        nginx = nginx_sat(r, ep)
        for name in ordered(S):
            run = S[name].get("saturation", {}).get(ep)
            if run is None:
                continue
            ratio = (run.get("ok_rps") / base["ok_rps"]
                     if run.get("ok_rps") and base.get("ok_rps") else None)
            g, m = run.get("gateway_cpu_s_per_1k"), run.get("mock_cpu_s_per_1k")
            us = cpu_us_per_req(run)
            us_cell = num(us, 1 if (us or 0) < 100 else 0)
            out.append(f"| {ep} | {name} | {num(run.get('ok_rps'))} | "
                       f"{'–' if ratio is None else pct(ratio)} | "
                       + (f"{times(vs_nginx(run, nginx))} | " if with_nginx else "")
                       + f"{ms(lat(run, 'p50'))} | "
                       f"{ms(lat(run, 'p99'))} | {failures(run)} | "
                       f"{'–' if g is None else f'{g:.3f}'} | {us_cell} | "
                       f"{'–' if m is None else f'{m:.3f}'} |")
    out.append("")
    return out


def threads_table(r: dict) -> list[str]:
    """The saturation runs' gateway CPU by thread name, per request answered."""
    S = r["systems"]
    rows = []
    for ep in r["profile_settings"]["blocking_endpoints"]:
        for name in ordered(S):
            run = S[name].get("saturation", {}).get(ep) or {}
            threads, ok = run.get("gateway_threads_cpu_s"), run.get("ok")
            if not threads or not ok:
                continue
            per_req = sorted(((cpu / ok * 1e6, thread) for thread, cpu in threads.items()),
                             reverse=True)
            shown = [f"{thread} {us:.1f}" for us, thread in per_req[:3] if us >= 0.05]
            rest = sum(us for us, _ in per_req[3:])
            if rest >= 0.05:
                shown.append(f"other {rest:.1f}")
            rows.append(f"| {ep} | {name} | {' · '.join(shown) or '–'} |")
    if not rows:
        return []
    return ["### Where the gateway's CPU went at saturation (µs per request, by thread)\n",
            "The same closed-loop runs, their CPU split by thread name (utime+stime of each "
            "thread from /proc/PID/task): aibridge serves requests on `tokio-rt-worker` and "
            "records them on `sqlite-writer` (the SQLite commits) and `sqlite-ckpt` (WAL "
            "checkpoints).\n",
            "| endpoint | system | CPU µs per request, by thread |", "|---|---|---|",
            *rows, ""]


def stream_table(r: dict) -> list[str]:
    S = r["systems"]
    p = r["profile_settings"]
    out = [f"### Streaming: time to first event and to last byte (ms)\n",
           f"{p['stream_rate']} streams/s open loop for {p['stream_seconds']} s "
           f"(`aibridge-sse-bench`); each stream has {p['stream_events']} text deltas "
           f"{p['stream_event_delay_ms']} ms apart (~{p['stream_events'] + 6} events). "
           "*First event* = first body byte (the first SSE event; aibridge holds the response "
           "head back until then, so it is the honest TTFB), measured from the moment the "
           "request is written (results.json also has them from the scheduled start, which adds "
           "the client's own timer lateness of up to a millisecond).\n",
           "| endpoint | system | first event p50 | p90 | p99 | p99.9 | added p50 | added p99 "
           "| added p99.9 | last byte p50 | last byte p99 | ok | failures |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for ep in p["stream_endpoints"]:
        base = S.get("direct", {}).get("streams", {}).get(ep)
        for name in ordered(S):
            run = S[name].get("streams", {}).get(ep)
            if run is None:
                continue
            fe = [ms(lat(run, q, "first_event")) for q in PCTS]
            ad = ["", "", ""] if name == "direct" else [
                signed(added(run, base, q, "first_event")) for q in ("p50", "p99", "p99.9")]
            out.append(f"| {ep} | {name} | " + " | ".join(fe + ad) +
                       f" | {ms(lat(run, 'p50', 'last_byte'))} | "
                       f"{ms(lat(run, 'p99', 'last_byte'))} | {run.get('ok', 0):,} | "
                       f"{failures(run)} |")
    out.append("")
    return out


def long_table(r: dict) -> list[str]:
    S = r["systems"]
    p = r["profile_settings"]
    secs = p["long_events"] * p["long_event_delay_ms"] / 1000
    out = [f"### {p['long_streams']:,} concurrent long streams: memory\n",
           f"{p['long_streams']:,} Anthropic streams opened at {p['long_ramp_rate']}/s, each "
           f"{p['long_events']} deltas {p['long_event_delay_ms']} ms apart (~{secs:.0f} s), so "
           "all are open at once; run first on a fresh process, so its VmHWM is this "
           "scenario's peak. RSS from /proc/PID/status (the process and its children).\n",
           "| system | ok | peak open at once | RSS idle MB | RSS peak (sampled) MB | VmHWM MB "
           "| first event p99 ms | last byte p50 ms | last byte p99 ms | failures "
           "| gateway CPU s / 1k streams |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for name in ordered(S):
        run = S[name].get("long_streams")
        if run is None:
            continue
        g = run.get("gateway_cpu_s_per_1k")
        out.append(f"| {name} | {run.get('ok', 0):,} | {num(run.get('peak_open'))} | "
                   f"{mb(S[name].get('rss_idle_kb'))} | {mb(run.get('rss_peak_sampled_kb'))} | "
                   f"{mb(run.get('hwm_kb'))} | {ms(lat(run, 'p99', 'first_event'))} | "
                   f"{ms(lat(run, 'p50', 'last_byte'))} | {ms(lat(run, 'p99', 'last_byte'))} | "
                   f"{failures(run)} | {'–' if g is None else f'{g:.3f}'} |")
    out.append("")
    return out


def failover_table(r: dict) -> list[str]:
    S = r["systems"]
    p = r["profile_settings"]
    out = [f"### Failover: first key always 429 (Retry-After: 60), {p['failover_rate']} rps "
           f"for {p['failover_seconds']} s\n",
           "Pool [limited key, healthy key] in that order (LiteLLM: two deployments with "
           "`order: 1/2`, `num_retries: 2`; Portkey: a `fallback` config on 429). *Added* is over "
           "the direct path at the same rate with the healthy key. *Upstream calls* counts what "
           "the fake upstream saw per key during the run.\n",
           "| system | p50 ms | p99 ms | p99.9 ms | added p50 | added p99 | ok | failures "
           "| upstream calls: limited key | healthy key |",
           "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    base = S.get("direct", {}).get("failover")
    for name in ordered(S):
        run = S[name].get("failover")
        if run is None:
            continue
        hits = run.get("upstream_hits") or {}
        lim = sum(v for k, v in hits.items() if "limited" in k)
        okh = sum(v for k, v in hits.items() if "limited" not in k)
        ad = ["", ""] if name == "direct" else [signed(added(run, base, q)) for q in ("p50", "p99")]
        out.append(f"| {name} | {ms(lat(run, 'p50'))} | {ms(lat(run, 'p99'))} | "
                   f"{ms(lat(run, 'p99.9'))} | " + " | ".join(ad) +
                   f" | {run.get('ok', 0):,} | {failures(run)} | {lim:,} | {okh:,} |")
    out.append("")
    return out


def resources_table(r: dict) -> list[str]:
    S = r["systems"]
    out = ["### Gateway processes over the whole run\n",
           "| system | version | start to ready s | RSS idle MB | peak RSS (VmHWM) MB "
           "| CPU s in all |",
           "|---|---|---:|---:|---:|---:|"]
    for name in ordered(S):
        s = S[name]
        if name == "direct":
            continue
        if "failed" in s:
            out.append(f"| {name} | failed: {s['failed'][:100]} | | | | |")
            continue
        out.append(f"| {name} | {s.get('version', '')} | {ms(s.get('ready_s'), 1)} | "
                   f"{mb(s.get('rss_idle_kb'))} | {mb((s.get('memory_end') or {}).get('hwm_kb'))} | "
                   f"{ms(s.get('cpu_total_s'), 1)} |")
    out.append("")
    return out


def noise(r: dict) -> list[str]:
    worst = []
    for name, s in r["systems"].items():
        runs = []
        for ep in (s.get("blocking") or {}).values():
            runs += list(ep.values())
        runs += list((s.get("saturation") or {}).values()) + list((s.get("streams") or {}).values())
        runs += [x for x in (s.get("failover"), s.get("long_streams")) if x]
        for run in runs:
            if run and run.get("foreign_cores") is not None:
                worst.append((run["foreign_cores"], name))
    if not worst:
        return []
    worst.sort(reverse=True)
    mean = sum(w for w, _ in worst) / len(worst)
    return [f"Other load on the machine during the runs (CPU used by processes outside the "
            f"benchmark, in cores): mean {mean:.2f}, worst {worst[0][0]:.2f} "
            f"(during a {worst[0][1]} run)."
            + (" **Above 0.2 cores: treat close comparisons as noisy.**" if worst[0][0] > 0.2
               else "")]


def ab_added_p99(r: dict, ep: str) -> list[float]:
    rows = ((r.get("ab") or {}).get("pairs") or {}).get(ep) or []
    out = []
    for row in rows:
        v = added(row["aibridge"], row["direct"], "p99")
        if v is not None:
            out.append(v)
    return out


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def ab_table(r: dict) -> list[str]:
    ab = r.get("ab")
    if not ab or not ab.get("pairs"):
        return []
    out = [f"### Direct and aibridge alternately at {ab['rate']} rps ({ab['seconds']} s runs)\n",
           "The p99 of a few thousand requests moves by a millisecond from run to run on this "
           "shared 2-core VM, so the target rate is also measured in alternating pairs on a "
           "fresh aibridge process; the target verdict uses the median pair.\n",
           "| endpoint | pair | direct p50 | direct p99 | direct p99.9 | aibridge p50 | aibridge p99 "
           "| aibridge p99.9 | added p50 | added p99 | added p99.9 | other load (cores) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for ep, rows in ab["pairs"].items():
        for i, row in enumerate(rows, 1):
            d, a = row["direct"], row["aibridge"]
            fl = max(d.get("foreign_cores", 0), a.get("foreign_cores", 0))
            out.append(f"| {ep} | {i} | {ms(lat(d, 'p50'))} | {ms(lat(d, 'p99'))} | "
                       f"{ms(lat(d, 'p99.9'))} | {ms(lat(a, 'p50'))} | {ms(lat(a, 'p99'))} | "
                       f"{ms(lat(a, 'p99.9'))} | {signed(added(a, d, 'p50'))} | "
                       f"{signed(added(a, d, 'p99'))} | {signed(added(a, d, 'p99.9'))} | "
                       f"{fl:.2f} |")
    out.append("")
    return out


def targets(r: dict) -> list[str]:
    out = ["| target | system | measured | verdict |", "|---|---|---|---|"]
    names = [n for n in ordered(r["systems"]) if n.startswith("aibridge")]
    for name in names:
        out += targets_for(r, name)
    return out + [""]


def targets_for(r: dict, who: str) -> list[str]:
    S = r["systems"]
    p = r["profile_settings"]
    a = S.get(who) or {}
    rows = []

    def row(name, measured, ok):
        verdict = "n/a" if ok is None else ("**met**" if ok else "**MISSED**")
        rows.append(f"| {name} | {who} | {measured} | {verdict} |")

    # 1. p99 added latency < 1 ms at 1,000 rps blocking
    for ep in p["blocking_endpoints"]:
        run = (a.get("blocking") or {}).get(ep, {}).get("1000")
        base = (S.get("direct", {}).get("blocking") or {}).get(ep, {}).get("1000")
        v = added(run, base, "p99")
        pairs = ab_added_p99(r, ep) if who == "aibridge" else []
        if pairs:
            med = median(pairs)
            row(f"p99 added latency < {T_ADDED_P99_MS:g} ms at 1,000 rps, blocking {ep}",
                f"{signed(med)} ms (median of {len(pairs)} alternating pairs: "
                + ", ".join(signed(x) for x in pairs)
                + f"; in the rate sweep {signed(v)} ms)",
                med < T_ADDED_P99_MS)
            continue
        row(f"p99 added latency < {T_ADDED_P99_MS:g} ms at 1,000 rps, blocking {ep}",
            f"{signed(v)} ms" if v is not None else "not measured",
            None if v is None else v < T_ADDED_P99_MS)
    # 2. throughput >= 70% of direct
    for ep in p["blocking_endpoints"]:
        run = (a.get("saturation") or {}).get(ep) or {}
        base = (S.get("direct", {}).get("saturation") or {}).get(ep) or {}
        ratio = (run["ok_rps"] / base["ok_rps"]) if run.get("ok_rps") and base.get("ok_rps") else None
        row(f"throughput ≥ {T_THROUGHPUT_RATIO:.0%} of direct at saturation, {ep}",
            f"{ratio:.0%} ({num(run.get('ok_rps'))} vs {num(base.get('ok_rps'))} req/s)"
            if ratio is not None else "not measured",
            None if ratio is None else ratio >= T_THROUGHPUT_RATIO)
    # 3. streaming added TTFB < 1 ms p99
    for ep in p["stream_endpoints"]:
        if ep not in (a.get("streams") or {}):
            continue
        run = (a.get("streams") or {}).get(ep)
        base = (S.get("direct", {}).get("streams") or {}).get(ep)
        v = added(run, base, "p99", "first_event")
        row(f"streaming added TTFB (first event) p99 < {T_TTFB_P99_MS:g} ms, {ep}",
            f"{signed(v)} ms" if v is not None else "not measured",
            None if v is None else v < T_TTFB_P99_MS)
    # 4. 1,000 concurrent streams < 150 MB RSS
    run = a.get("long_streams") or {}
    hwm = run.get("hwm_kb")
    full = p["long_streams"] >= T_STREAMS and (run.get("peak_open") or 0) >= T_STREAMS
    row(f"{T_STREAMS:,} concurrent streams < {T_RSS_MB} MB RSS",
        (f"VmHWM {mb(hwm)} MB with {num(run.get('peak_open'))} open at once"
         if hwm else "not measured"),
        None if not hwm or not full else hwm / 1024 < T_RSS_MB)
    # 5. lower added latency than LiteLLM and Portkey at every rate
    for other in ("litellm", "portkey"):
        o = S.get(other) or {}
        if not o.get("blocking"):
            row(f"lower added latency than {other} at every rate", "not measured", None)
            continue
        losses, compared = [], 0
        for ep in p["blocking_endpoints"]:
            for rate in p["rates"]:
                ar = (a.get("blocking") or {}).get(ep, {}).get(str(rate))
                orun = (o.get("blocking") or {}).get(ep, {}).get(str(rate))
                if not ar or not orun:
                    continue
                for q in ("p50", "p99"):
                    x, y = lat(ar, q), lat(orun, q)
                    if x is None or y is None:
                        continue
                    compared += 1
                    if x >= y:
                        losses.append(f"{ep} {rate} rps {q}: {ms(x)} vs {ms(y)} ms")
        row(f"lower added latency than {other} at every rate (p50 and p99)",
            f"{compared - len(losses)}/{compared} comparisons lower"
            + (f"; not at {'; '.join(losses)}" if losses else ""),
            None if not compared else not losses)
    return rows


def headline(r: dict) -> list[str]:
    S = r["systems"]
    p = r["profile_settings"]
    rate = "1000" if 1000 in p["rates"] else str(p["rates"][-1])
    nginx = nginx_sat(r, "anthropic")
    out = [f"| system | added p50 / p99 at {rate} rps, Anthropic blocking (ms) "
           "| max throughput, Anthropic (req/s, % of direct"
           + (", × nginx" if nginx else "") + ") "
           "| added TTFB p99, Anthropic stream (ms) | peak RSS, long streams (MB) "
           "| CPU s / 1k req at saturation |",
           "|---|---:|---:|---:|---:|---:|"]
    ep = "anthropic"
    d = S.get("direct", {})
    dsat = (d.get("saturation") or {}).get(ep) or {}
    for name in ordered(S):
        s = S[name]
        if "failed" in s:
            out.append(f"| {name} | failed | | | | |")
            continue
        run = (s.get("blocking") or {}).get(ep, {}).get(rate)
        base = (d.get("blocking") or {}).get(ep, {}).get(rate)
        sat = (s.get("saturation") or {}).get(ep) or {}
        ratio = (sat["ok_rps"] / dsat["ok_rps"]) if sat.get("ok_rps") and dsat.get("ok_rps") else None
        st = (s.get("streams") or {}).get(ep)
        dst = (d.get("streams") or {}).get(ep)
        ls = s.get("long_streams") or {}
        cpu = sat.get("gateway_cpu_s_per_1k") if name != "direct" else sat.get("mock_cpu_s_per_1k")
        if name == "direct":
            lat_cell = f"{ms(lat(run, 'p50'))} / {ms(lat(run, 'p99'))} (absolute)"
            ttfb = f"{ms(lat(st, 'p99', 'first_event'))} (absolute)"
            rss = "–"
            cpu_cell = f"{cpu:.3f} (fake upstream)" if cpu is not None else "–"
        else:
            lat_cell = f"{signed(added(run, base, 'p50'))} / {signed(added(run, base, 'p99'))}"
            ttfb = signed(added(st, dst, "p99", "first_event"))
            rss = mb(ls.get("hwm_kb"))
            cpu_cell = "–" if cpu is None else f"{cpu:.3f}"
        rel = [pct(ratio)] if ratio is not None else []
        if vs_nginx(sat, nginx) is not None:
            rel.append(times(vs_nginx(sat, nginx)) + " nginx")
        rel_cell = f" ({', '.join(rel)})" if rel else ""
        out.append(f"| {name} | {lat_cell} | {num(sat.get('ok_rps'))}{rel_cell} | {ttfb} | "
                   f"{rss} | {cpu_cell} |")
    out.append("")
    return out


FINDINGS_START = "<!-- findings: written by hand, kept when the report is regenerated -->"
FINDINGS_END = "<!-- end of findings -->"


def kept_findings(path: Path) -> str:
    """The hand-written findings of an existing report, if any."""
    if not path.exists():
        return ""
    text = path.read_text()
    if FINDINGS_START not in text or FINDINGS_END not in text:
        return ""
    return text.split(FINDINGS_START, 1)[1].split(FINDINGS_END, 1)[0]


def render(r: dict, plot: str | None, findings: str = "") -> str:
    m, t, g = r["machine"], r["tools"], r["git"]
    S = r["systems"]
    lines = [
        "# aibridge benchmark results",
        "",
        f"Generated by `{r['command'] or 'bench/run.sh'}` ({r['profile']} profile) on "
        f"{r['date']}, in {r['elapsed_s'] / 60:.1f} min of measurement.",
        "",
        f"- **Machine**: {m['nproc']} × {m['model']}, {m['mem_gib']} GiB; Linux {t['kernel']}.",
        "- **Gateway measured**: aibridge "
        + (r.get("aibridge_source") or (f"built from the working tree at `{g['commit']}`"
           + (" (with uncommitted changes)" if g.get("dirty") else ""))) + ".",
        "- **Versions**: " + "; ".join(dict.fromkeys(
            S[n]["version"] for n in ordered(S) if S[n].get("version"))) +
        f"; load generator {t['oha']} and `aibridge-sse-bench` (crates/aibridge-mock); "
        f"{t['rustc']}; Python {t['python']}; Node {t['node']}.",
        f"- **Pinning**: every gateway on CPU {r['pinning']['gateway']} (one core: aibridge's "
        "runtime and the others' event loops get one core each); the load generator and the fake "
        f"upstream share CPU {r['pinning']['load_and_mock']} (`taskset`). The direct path is "
        "the load generator and the fake upstream alone.",
        "- **Fake upstream**: `aibridge-mock --no-record` (load mode), answering at once (no "
        "added latency), so every millisecond measured is the path's own.",
    ]
    lines += ["- " + n for n in noise(r)]
    for name, why in (r.get("skipped") or {}).items():
        lines.append(f"- **{name} not measured**: {why}")
    for name, s in S.items():
        if "failed" in s:
            lines.append(f"- **{name} failed**: {s['failed']}")
        if s.get("aborted"):
            lines.append(f"- **{name} cut short**: {s['aborted']}")
    if "aibridge-rec" in S:
        lines += ["- **Recording on/off**: `aibridge` runs with `AIBRIDGE_RECORDING=off` (the "
                  "gateway's own cost; LiteLLM and Portkey record nothing here either), "
                  "`aibridge-rec` with `AIBRIDGE_RECORDING=on` (SQLite in bench/out/), on a "
                  "reduced scenario set (rates "
                  + ", ".join(str(x) for x in r["profile_settings"].get("reduced_rates", []))
                  + " rps, one stream endpoint, no failover run)."]
    else:
        lines += ["- **Recording on/off**: not measured (this aibridge binary has no "
                  "`AIBRIDGE_RECORDING`). `bench/run.sh --aibridge-variant NAME:ENV=VALUE` adds "
                  "another aibridge configuration to the same run (TODO(recording) in "
                  "bench/bench.py)."]
    if nginx_sat(r, "anthropic") or nginx_sat(r, "openai"):
        lines += ["- **nginx, the anchor**: " + nginx_source(r) + "; pinned like the gateways. "
                  "A plain reverse proxy (one worker, upstream keepalive, the pool key put on, "
                  "no buffering either way): *vs nginx* in the throughput tables is each "
                  "system's saturation throughput divided by nginx's."]
    lines += ["- **Systems**: " + "; ".join(f"`{n}` = {S[n].get('label', n)}" for n in ordered(S)),
              ""]
    if findings:
        lines += [FINDINGS_START, findings.strip("\n"), FINDINGS_END, ""]
    lines += ["## Headline", ""] + headline(r)
    lines += ["## Targets", "", "Targets of issue #6 (2-core machine, loopback), checked on "
              "aibridge's numbers from this run (for each aibridge configuration measured).",
              ""] + targets(r)
    if plot:
        lines += ["## Latency against rate", "", f"![latency against rate]({plot})", ""]
    lines += ["## Details", ""]
    lines += (blocking_tables(r) + ab_table(r) + saturation_table(r) + threads_table(r)
              + stream_table(r))
    lines += long_table(r)
    lines += failover_table(r) + resources_table(r)
    lines += [
        "## Method",
        "",
        "- One run starts two fake upstreams (`aibridge-mock --no-record`: one for blocking and "
        "short streams, one for long slow streams), then for each system in turn: start it, run "
        "the long-streams scenario on the fresh process, warm up, the blocking fixed rates and "
        "saturation per endpoint, the short streams, the failover run, and stop it.",
        "- Blocking load: oha, open loop at fixed rates with `--latency-correction` (no "
        "coordinated omission), then closed loop for the maximum throughput. Streams: "
        "`aibridge-sse-bench`, open loop (each stream on its own connection, sent on schedule "
        "whatever the earlier ones do), latency from the moment each request is written.",
        "- CPU: utime+stime from /proc/PID/stat of the gateway process and its children before "
        "and after each run, divided by the successful requests. Memory: VmRSS/VmHWM from "
        "/proc/PID/status.",
        "- nginx (`nginx`, Debian's nginx-light): generated `bench/out/nginx/nginx.conf`, "
        "`daemon off`, master + `worker_processes 1` (both pinned; CPU and memory are the "
        "master's process tree), `access_log off`, an `upstream` block per fake upstream with "
        "`keepalive 64`, `proxy_http_version 1.1`, `Connection \"\"`, `proxy_buffering off` and "
        "`proxy_request_buffering off`, `keepalive_requests` raised on both sides; routes "
        "`/anthropic/`, `/openai/`, `/anthropic-long/` like aibridge's, each putting the pool key "
        "on (`x-api-key` / `Authorization: Bearer`); `/anthropic-fo/` sends with the 429 key, "
        "catches the 429 (`proxy_intercept_errors`, `error_page 429 = @next`) and sends again "
        "with the healthy key, on every request.",
        "- Every request goes to 127.0.0.1. LiteLLM runs with `LITELLM_LOCAL_MODEL_COST_MAP=True` "
        "(no cost-map download) and no master key (like `AIBRIDGE_AUTH=none`); Portkey with "
        "`@hono/node-server` 1.13.8 (later versions break its streaming on Node: "
        "Portkey-AI/gateway#1389).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--plot", default=None, help="image path to link, relative to the report")
    args = ap.parse_args()
    r = json.loads(args.results.read_text())
    args.output.write_text(render(r, args.plot, kept_findings(args.output)))


if __name__ == "__main__":
    main()
