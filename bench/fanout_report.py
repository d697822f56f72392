"""The fan-out benchmark's report: the table, the ratios to the limit and to Nchan, the
goals, and the JSON line's figures."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

TRANSPORTS = ("ws", "sse")
GOALS = {"ws": 50_000, "sse": 25_000}  # frames/s, issue 6


@dataclass
class Measurement:
    system: str
    transports: dict[str, dict[str, Any]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    published: int = 0


def fmt(value: float, spec: str) -> str:
    return "-" if value != value else format(value, spec)  # NaN -> "-"


def best_round(rounds: list[Measurement]) -> Measurement:
    """The least disturbed round: the most frames delivered in all."""
    return max(rounds, key=lambda m: sum(t["frames_per_s"] for t in m.transports.values()))


def report(args: argparse.Namespace, runs: dict[str, list[Measurement]],
           skipped: dict[str, str]) -> dict[str, Any]:
    """Print the table, the ratios and the goals; return the JSON line's figures."""
    best = print_table(args, runs, skipped)
    figures = base_figures(args, best)
    if "chainwire" in best:
        for other in ("limit", "nchan"):
            if other in best:
                compare(best["chainwire"], other, best[other], figures)
        figures.update(check_goals(best["chainwire"], args.window_ms))
    for system, reason in skipped.items():
        figures[f"{system}_skipped"] = reason
    return figures


def print_table(args: argparse.Namespace, runs: dict[str, list[Measurement]],
                skipped: dict[str, str]) -> dict[str, Measurement]:
    """One row per system, round and transport; returns each system's best round."""
    print(f"\nfan-out: {args.clients} clients ({args.clients // 2} SSE + {args.clients // 2} "
          f"WS), {args.rate:g} batches/s of 10 events, {args.seconds:g} s measured after "
          f"{args.warmup:g} s warm-up, {args.procs} client processes, rounds: {args.rounds}")
    header = (f"{'system':<10}{'transport':<10}{'clients':>8}{'frames':>10}{'frames/s':>10}"
              f"{'offered/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'cut':>5}"
              f"{'srv CPU%':>9}{'cli CPU%':>9}{'machine%':>9}")
    print(header)
    print("-" * len(header))
    best: dict[str, Measurement] = {}
    for system, rounds in runs.items():
        best[system] = best_round(rounds)
        for i, m in enumerate(rounds):
            mark = "*" if len(rounds) > 1 and m is best[system] else ""
            for transport in TRANSPORTS:
                t = m.transports[transport]
                cpu = (f"{m.cpu['server']:>9.0f}{m.cpu['clients']:>9.0f}{m.cpu['machine']:>9.0f}"
                       if transport == "ws" else "")
                print(f"{(system + mark) if transport == 'ws' else '':<10}{transport:<10}"
                      f"{t['clients']:>8}{t['frames']:>10}{t['frames_per_s']:>10.0f}"
                      f"{t['offered_per_s']:>10.0f}{fmt(t['p50_ms'], '.1f'):>9}"
                      f"{fmt(t['p99_ms'], '.1f'):>9}{fmt(t['max_ms'], '.0f'):>9}"
                      f"{t['closed']:>5}{cpu}")
            if "publisher" in m.cpu and i == 0:
                print(f"{'':<10}(the {system} publisher process used {m.cpu['publisher']:.0f} % "
                      "CPU, not counted as server CPU)")
    for system, reason in skipped.items():
        print(f"{system:<10}skipped: {reason}")
    return best


def base_figures(args: argparse.Namespace, best: dict[str, Measurement]) -> dict[str, Any]:
    figures: dict[str, Any] = {"bench": "fanout", "clients": args.clients, "rate": args.rate,
                               "events_per_batch": 10, "seconds": args.seconds,
                               "rounds": args.rounds, "store": "postgresql" if args.pg
                               else "sqlite", "ws_deflate": args.ws_deflate}
    for system, m in best.items():
        for transport in TRANSPORTS:
            t = m.transports[transport]
            prefix = f"{system}_{transport}"
            figures[f"{prefix}_frames_per_s"] = round(t["frames_per_s"])
            figures[f"{prefix}_p50_ms"] = round(t["p50_ms"], 1)
            figures[f"{prefix}_p99_ms"] = round(t["p99_ms"], 1)
            figures[f"{prefix}_cut"] = t["closed"]
        figures[f"{system}_server_cpu_pct"] = round(m.cpu["server"])
        figures[f"{system}_client_cpu_pct"] = round(m.cpu["clients"])
        figures[f"{system}_machine_cpu_pct"] = round(m.cpu["machine"])
    return figures


def compare(cw: Measurement, other: str, peer: Measurement, figures: dict[str, Any]) -> None:
    """Chainwire over ``other``: frames/s per transport and frames per server CPU-second."""
    parts = []
    for transport in TRANSPORTS:
        a = cw.transports[transport]["frames_per_s"]
        b = peer.transports[transport]["frames_per_s"]
        ratio = a / b if b else float("nan")
        figures[f"chainwire_over_{other}_{transport}"] = round(ratio, 3)
        parts.append(f"{transport} {fmt(ratio, '.0%')}")
    # Frames per server CPU-second (both transports share the process): how much work a
    # delivery costs, whatever the neighbours left of the machine.
    cpu_a, cpu_b = cw.cpu["server"], peer.cpu["server"]
    total_a = sum(t["frames_per_s"] for t in cw.transports.values())
    total_b = sum(t["frames_per_s"] for t in peer.transports.values())
    eff_a = total_a / cpu_a * 100 if cpu_a else float("nan")
    eff_b = total_b / cpu_b * 100 if cpu_b else float("nan")
    figures["chainwire_frames_per_cpu_s"] = round(eff_a) if eff_a == eff_a else None
    figures[f"{other}_frames_per_cpu_s"] = round(eff_b) if eff_b == eff_b else None
    print(f"chainwire / {other}: frames/s {', '.join(parts)}; frames per server "
          f"CPU-second {fmt(eff_a, ',.0f')} vs {fmt(eff_b, ',.0f')} "
          f"({fmt(eff_a / eff_b, '.0%')})")


def check_goals(cw: Measurement, window_ms: float) -> dict[str, Any]:
    """The issue's goals for Chainwire, printed PASS/FAIL."""
    goals = {}
    for transport in TRANSPORTS:
        rate = cw.transports[transport]["frames_per_s"]
        goals[f"{transport}_frames_per_s"] = rate >= GOALS[transport]
        print(f"goal: chainwire {transport.upper()} at least {GOALS[transport]:,} frames/s: "
              f"{rate:,.0f} {'PASS' if goals[f'{transport}_frames_per_s'] else 'FAIL'}")
    p99 = max(cw.transports[t]["p99_ms"] for t in TRANSPORTS)
    goals["p99"] = p99 <= window_ms + 50
    print(f"goal: chainwire p99 at most the window + 50 ms = {window_ms + 50:.0f} ms: "
          f"{p99:,.1f} ms {'PASS' if goals['p99'] else 'FAIL'}")
    return {"goals": goals, "goal_met": all(goals.values())}
