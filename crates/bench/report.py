#!/usr/bin/env python3
"""Turns a compare.sh results directory into docs/benchmarks.md, PNG charts and `ratio` lines.

    report.py RESULTS_DIR docs/benchmarks.md docs/bench "command that produced the results"

Figures are medians over repetitions (the machine is noisy); each table also shows min-max."""
import json, os, platform, re, statistics, subprocess, sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results, page, chart_dir, command = sys.argv[1:5]
os.makedirs(chart_dir, exist_ok=True)


def load(name):
    path = os.path.join(results, name)
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.startswith("{")]


def group(rows):
    """(config, conc) -> [rows], config = label without -repN."""
    g = defaultdict(list)
    for r in rows:
        g[(re.sub(r"-rep\d+$", "", r.get("label", "")), r["conc"])].append(r)
    return g


med = statistics.median


def num(v):
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def cell(rs, key):
    v = [r[key] for r in rs if r.get(key) is not None]
    if not v:
        return "-"
    return f"{num(med(v))} [{num(min(v))}-{num(max(v))}]"


def table(g):
    out = ["| config | clients | reps | ops/s median [min-max] | p50 ms | p99 ms | server CPU % (sum) | client CPU % | host CPU % of all cores |",
           "|---|---:|---:|---|---|---|---:|---:|---:|"]
    for (cfg, c), rs in sorted(g.items()):
        cpu = med([sum(r.get("server_cpu_pct") or [0]) for r in rs])
        own = [r["client_cpu_pct"] for r in rs if r.get("client_cpu_pct") is not None]
        client = f"{med(own):.0f}" if own else "-"
        host = med([r.get("host_cpu_pct_of_all_cores", 0) for r in rs])
        out.append(f"| {cfg} | {c} | {len(rs)} | {cell(rs, 'ops_per_s')} | {cell(rs, 'p50_ms')} | {cell(rs, 'p99_ms')} | {cpu:.0f} | {client} | {host:.0f} |")
    return "\n".join(out)


def medians(g, cfg, key):
    pts = sorted((c, med([r[key] for r in rs])) for (k, c), rs in g.items() if k == cfg)
    return [p[0] for p in pts], [p[1] for p in pts]


def chart(g, configs, title, fname, ylabel="operations/s"):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for cfg in configs:
        xs, ys = medians(g, cfg, "ops_per_s")
        if xs:
            axes[0].plot(xs, ys, marker="o", label=cfg)
        xs, p50 = medians(g, cfg, "p50_ms")
        _, p99 = medians(g, cfg, "p99_ms")
        if xs:
            axes[1].plot(xs, p50, marker="o", label=f"{cfg} p50")
            axes[1].plot(xs, p99, marker="x", linestyle="--", label=f"{cfg} p99")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(ylabel)
    axes[0].set_title(f"{title}: throughput (median)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("latency, ms")
    axes[1].set_title(f"{title}: latency percentiles (median)")
    fig.tight_layout()
    fig.savefig(os.path.join(chart_dir, fname), dpi=90)
    plt.close(fig)


ratios = []


def ratio(workload, g, ours, peer, peer_name, key="ops_per_s", invert=False):
    for (cfg, c), rs in sorted(g.items()):
        if cfg != ours:
            continue
        prs = g.get((peer, c))
        if not prs:
            continue
        a, b = med([r[key] for r in rs]), med([r[key] for r in prs])
        if b:
            ratios.append((workload, c, peer_name, key, a / b if not invert else b / a, a, b))


w1 = group(load("w1.jsonl"))
w2 = group(load("w2.jsonl") + load("restate-w2.jsonl"))
# Restate's labels are restate-cluster-seq-repN, N the Halter repetition they follow.
ratio("w1", w1, "halter-3n", "etcd-3m", "etcd")
ratio("w1", w1, "halter-1n", "etcd-1m", "etcd-1m")
ratio("w2", w2, "halter-3n", "restate-cluster-seq", "restate")
p50_ratios = []
for (cfg, c), rs in sorted(w1.items()):
    for ours, peer in (("halter-3n", "etcd-3m"), ("halter-1n", "etcd-1m")):
        if cfg == ours and (peer, c) in w1:
            for k in ("p50_ms", "p99_ms"):
                a, b = med([r[k] for r in rs]), med([r[k] for r in w1[(peer, c)]])
                p50_ratios.append((c, ours, peer, k, a, b))

chart(w1, ["halter-3n", "etcd-3m", "halter-1n", "etcd-1m"], "W1 durable writes", "w1.png")
chart(w2, ["halter-3n", "restate-cluster-seq"], "W2 deliver-to-resume", "w2.png", "workflows/s")

w3 = load("w3.jsonl")
w4 = load("w4.jsonl")
w5 = load("w5.jsonl")

if w3:
    r = next((x for x in w3 if x.get("workload") == "w3"), None)
    if r:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        qs = ["late_p50_ms", "late_p90_ms", "late_p99_ms", "late_max_ms"]
        ax.bar([q.split("_")[1] for q in qs], [r[q] for q in qs])
        ax.axhline(50, color="red", linestyle="--", label="target p99 50 ms")
        ax.set_ylabel("ms late")
        ax.set_title(f"W3 timeout lateness ({r['pending']} pending, W1 load)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(chart_dir, "w3.png"), dpi=90)
        plt.close(fig)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
mem = sh("free -g | awk '/Mem:/{print $2}'")
ncpu = os.cpu_count()
date = sh("date -u +%Y-%m-%d")
etcd_v = sh("etcd --version 2>/dev/null | head -1")

L = []
L.append("# Benchmarks\n")
L.append(f"Machine: {ncpu} vCPU ({cpu}), {mem} GiB, {platform.system()} {platform.release()}; "
         f"measured {date}. Everything runs on this one machine over loopback: servers, peers and "
         "the load generator share the two cores, so these are figures for a small box, not "
         "for a deployment. The machine is shared and noisy (the same point moves by 20-40 % "
         "between fresh clusters): every point is a median over repetitions, each on a fresh "
         "cluster, with min-max beside it.\n")
L.append("Reproduce (installs what it needs: Debian's protobuf-compiler for etcd-client, "
         "matplotlib in the test venv, Restate and Node via the peer scripts):\n")
L.append(f"```sh\n{command}\n```\n")
L.append("Load generator: `halter-bench` (crates/bench), closed loop, 1 s warm-up, a count and a "
         "time bound per point, hdrhistogram latencies. Halter's clients spread over all three "
         "nodes (followers forward writes to the leader); etcd's clients talk to its leader "
         "(its best case). Durability is the default on both sides: an acknowledged Halter write "
         "is fsynced in the Raft log of a quorum; etcd fdatasyncs its WAL per batch. "
         f"etcd: {etcd_v or 'Debian package'}; Restate: 1.7.12 through `../shared/bench/peers`.\n")

L.append("Where the time goes, what was changed for it, and why a target the table below "
         "marks as not met is out of reach on this machine: [bench/analysis.md](bench/analysis.md).\n")
L.append("## Ratios\n")
L.append("```")
for (wl, c, peer, key, v, a, b) in ratios:
    L.append(f"ratio {wl} c={c} halter/{peer} = {v:.2f}   ({a:.0f} vs {b:.0f} {'ops/s' if wl == 'w1' else 'workflows/s'})")
L.append("```\n")
L.append("Latency at the same points (Halter ms vs peer ms, medians):\n")
L.append("| clients | halter | peer | percentile | halter ms | peer ms |")
L.append("|---:|---|---|---|---:|---:|")
for (c, ours, peer, k, a, b) in p50_ratios:
    L.append(f"| {c} | {ours} | {peer} | {k[:3]} | {a:.2f} | {b:.2f} |")
L.append("")

# Targets of the benchmarks issue, each with its measured figure.
T = []


def get_ratio(wl, c, peer):
    return next((r for r in ratios if r[0] == wl and r[1] == c and r[2] == peer), None)


def lat(cfg, c, k, g=w1):
    rs = g.get((cfg, c))
    return med([r[k] for r in rs]) if rs else None


r = get_ratio("w1", 256, "etcd")
if r:
    a, b = lat("halter-3n", 256, "p99_ms"), lat("etcd-3m", 256, "p99_ms")
    T.append(("W1 at 256 clients: >= 3x etcd's throughput, p99 <= etcd's",
              r[4] >= 3 and a <= b, f"{r[4]:.2f}x ({r[5]:.0f} vs {r[6]:.0f} ops/s); p99 {a:.1f} vs {b:.1f} ms"))
a, b = lat("halter-3n", 1, "p50_ms"), lat("etcd-3m", 1, "p50_ms")
if a is not None and b is not None:
    T.append(("W1 at 1 client: p50 <= etcd's", a <= b, f"{a:.2f} vs {b:.2f} ms"))
r = get_ratio("w2", 64, "restate")
if r:
    T.append(("W2 at 64 clients: >= 10x Restate's workflows/s", r[4] >= 10,
              f"{r[4]:.2f}x ({r[5]:.0f} vs {r[6]:.0f} workflows/s)"))
w3r = next((x for x in w3 if x.get("workload") == "w3"), None)
if w3r:
    T.append(("W3: TIMEOUTs at most 50 ms late at p99 under W1 load", w3r["late_p99_ms"] <= 50,
              f"p99 {w3r['late_p99_ms']} ms (p50 {w3r['late_p50_ms']} ms)"))
    worst = max(w3r["rss_mib_under_load"] + w3r["rss_mib_parked"])
    T.append((f"W3: 1,000,000 pending timers in <= 512 MiB RSS per node",
              w3r["pending"] >= 1_000_000 and worst <= 512,
              f"{w3r['pending']:,} pending measured; worst RSS {worst:.0f} MiB"
              + ("" if w3r["pending"] >= 1_000_000 else " (fewer than the target count: not shown)")))
w4s = next((x for x in w4 if x.get("summary")), None)
if w4s and w4s.get("recovery_ms_median") is not None:
    T.append(("W4: writes succeed again within 2 s of the leader's death (median)",
              w4s["recovery_ms_median"] <= 2000, f"{w4s['recovery_ms_median']} ms median"))
def w5_label(x):
    return x.get("label") or "halter-3n"


if w5:
    # Per configuration (3 nodes; 1 node, which goes further on the same disk): the spread of
    # p50 over the steps at each concurrency. The target holds when a configuration measured to
    # 10 M stored events stays within 2x.
    bylabel = defaultdict(list)
    for x in w5:
        bylabel[w5_label(x)].append(x)
    parts, met = [], False
    for label, rows in sorted(bylabel.items()):
        byc = defaultdict(list)
        for x in rows:
            byc[x["conc"]].append(x)
        ok, sub = True, []
        for c, xs in sorted(byc.items()):
            p50s = [x["p50_ms"] for x in xs]
            f = max(p50s) / max(min(p50s), 1e-9)
            ok &= f <= 2
            sub.append(f"c={c}: p50 {min(p50s):.2f}-{max(p50s):.2f} ms ({f:.2f}x)")
        top = max(x["stored_events"] for x in rows)
        rss = [max(x["server_rss_mib"]) for x in rows]
        met |= ok and top >= 10_000_000
        parts.append(f"{label}: " + ", ".join(sub) + f", up to {top:,} events, RSS {min(rss):.0f}-{max(rss):.0f} MiB")
    T.append(("W5: per-operation latency within 2x from 10k to 10M stored events; RSS bounded", met,
              "; ".join(parts) + ("" if any(max(x["stored_events"] for x in r) >= 10_000_000
                                          for r in bylabel.values()) else " (not run to 10M: not shown)")))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in sorted(bylabel.items()):
        for c in sorted({x["conc"] for x in rows}):
            xs = sorted((x for x in rows if x["conc"] == c), key=lambda x: x["stored_events"])
            axes[0].plot([x["stored_events"] for x in xs], [x["p50_ms"] for x in xs], marker="o",
                         label=f"{label} c={c}")
            axes[1].plot([x["stored_events"] for x in xs], [max(x["server_rss_mib"]) for x in xs],
                         marker="o", label=f"{label} c={c}")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("stored events")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("p50 latency, ms")
    axes[0].set_title("W5: W1 latency as stored events grow")
    axes[1].set_ylabel("largest node RSS, MiB")
    axes[1].set_ylim(bottom=0)
    axes[1].set_title("W5: memory as stored events grow")
    fig.tight_layout()
    fig.savefig(os.path.join(chart_dir, "w5.png"), dpi=90)
    plt.close(fig)

L.append("## Targets\n")
L.append("| target | met | measured |")
L.append("|---|---|---|")
for name, ok, fig in T:
    L.append(f"| {name} | {'yes' if ok else '**no**'} | {fig} |")
L.append("")

L.append("## W1: durable replicated writes\n")
L.append("PutExternalEvent with a ~200-byte JSON payload, unique WfRun ids (events kept for a "
         "WfRun that does not exist yet), against etcd `Put` of a unique key with a 200-byte "
         "value.\n")
L.append(table(w1) + "\n")
L.append("![W1](bench/w1.png)\n")

L.append("## W2: deliver-to-resume\n")
L.append("Halter: RunWf of `entrypoint → wait for event → exit`, PutExternalEvent, GetWfRun "
         "checked COMPLETED (three requests, like Restate's `seq` mode: send, deliver, attach), "
         "from a single-threaded client with one HTTP/2 connection per node (`--threads 1 "
         "--conns 1`), as Restate's client is one node.js event loop. "
         "Restate: `../shared/bench/peers/restate/run_restate_w2.sh cluster` (3 nodes, "
         "replication 2), one repetition right after each of Halter's, on a fresh cluster each "
         "time, so that the machine's drift falls on both alike.\n")
L.append(table(w2) + "\n")
L.append("![W2](bench/w2.png)\n")

L.append("## W3: timers\n")
if w3:
    for r in w3:
        if r.get("workload") == "w3":
            L.append(f"- {r['pending']} WfRuns parked on a 1-day timeout, created at "
                     f"{r['fill_wf_per_s']:.0f} WfRuns/s; RSS per node after parking: "
                     f"{', '.join(f'{x:.0f}' for x in r['rss_mib_parked'])} MiB; under load: "
                     f"{', '.join(f'{x:.0f}' for x in r['rss_mib_under_load'])} MiB.")
            L.append(f"- {r['probes']} WfRuns with a {r['probe_timeout_s']} s timeout started "
                     f"while W1 ran at {r['load_ops_per_s']:.0f} writes/s ({r['load_conc']} clients): "
                     f"lateness (NodeRun end minus arrival plus timeout) p50 {r['late_p50_ms']} ms, "
                     f"p90 {r['late_p90_ms']} ms, p99 {r['late_p99_ms']} ms, max {r['late_max_ms']} ms; "
                     f"not fired {r['not_fired']}, early {r['early']}.")
        elif r.get("workload") == "w3-disk":
            L.append(f"- Data directory of one node afterwards: {r['node1_mib']} MiB.")
    L.append("\n![W3](bench/w3.png)\n")
else:
    L.append("Not run.\n")

L.append("## W4: failover\n")
if w4:
    L.append("kill -9 of the leader while 16 clients write; recovery = from the kill until the "
             "first write that started after it succeeds.\n")
    L.append("| trial | killed node | recovery ms | longest gap between completed writes ms |")
    L.append("|---:|---:|---:|---:|")
    for r in w4:
        if not r.get("summary"):
            L.append(f"| {r['trial']} | {r['killed_node']} | {r['recovery_ms']} | {r['longest_gap_ms']} |")
    s = next((r for r in w4 if r.get("summary")), None)
    if s:
        L.append(f"\nMedian recovery: **{s['recovery_ms_median']} ms** over {s['recovered']} of {s['trials']} trials.\n")
else:
    L.append("Not run.\n")

L.append("## W5: scale\n")
if w5:
    L.append("W1 latency and RSS as stored events grow: 3 nodes, and one node, which goes to 10 M on "
             "the same disk (each node stores every event: 3 nodes need three times the space).\n")
    L.append("![W5](bench/w5.png)\n")
    L.append("| configuration | stored events | clients | ops/s | p50 ms | p99 ms | RSS per node MiB |")
    L.append("|---|---:|---:|---:|---:|---:|---|")
    for r in w5:
        L.append(f"| {w5_label(r)} | {r['stored_events']:,} | {r['conc']} | {r['ops_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
                 f"{', '.join(f'{x:.0f}' for x in r['server_rss_mib'])} |")
    L.append("")
else:
    L.append("Not run.\n")

L.append("Raw JSON lines of this run: `" + results + "` (not committed).\n")
open(page, "w").write("\n".join(L) + "\n")
for (wl, c, peer, key, v, a, b) in ratios:
    print(f"ratio {wl} c={c} halter/{peer} = {v:.2f}")
