"""Run every benchmark and gather one report: bench/report.md + bench/report.json.

Each ``bench_*.py`` writes ``bench/out/<name>.json``; this script runs them in
turn (one broker per script, torn down after), then writes the machine's
description and every figure with the baseline it is measured against.

    uv run python bench/run_all.py [--only kafka_baseline,features]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

# name -> script; order matters: the baselines first.
BENCHES = {
    "kafka_baseline": "bench_kafka_baseline.py",
    "infra": "bench_infra.py",
    "features": "bench_features.py",
    "training": "bench_training.py",
    "registry": "bench_registry.py",
    "serving": "bench_serving.py",
    "byom": "bench_byom.py",
    "security": "bench_security.py",
    "cluster": "bench_cluster.py",
    "failover": "bench_failover.py",
    "drift": "bench_drift.py",
    "loop": "bench_loop.py",
    "poison": "bench_poison.py",
    "ops": "bench_ops.py",
    "memory": "bench_memory.py",
}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _get(report: dict[str, Any], bench: str, *path: str) -> Any:
    entry = report["benches"].get(bench, {})
    value: Any = entry.get("result") if entry.get("status") == "ok" else None
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "not measured"
    if isinstance(value, float):
        text = f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".strip()


def _verdict(value: Any, ok: bool | None) -> str:
    if value is None or ok is None:
        return "—"
    return "met" if ok else "**not met**"


def headline(report: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(issue, figure, measured, target, baseline of the same run, verdict) rows."""
    rows: list[tuple[str, str, str, str, str, str]] = []

    def add(
        issue: str,
        figure: str,
        value: Any,
        unit: str,
        target: str,
        baseline: str,
        ok: bool | None,
    ) -> None:
        rows.append((issue, figure, _fmt(value, unit), target, baseline, _verdict(value, ok)))

    # -- features (#4)
    base = _get(report, "features", "baseline_aiokafka_records_per_s")
    rate = _get(report, "features", "sustained", "events_per_s")
    ratio = _get(report, "features", "ratio_to_baseline")
    add(
        "#4",
        "features: sustained events/s (produced -> values in Redis), offered faster",
        rate,
        "ev/s",
        ">= 5,000 (stretch 10,000)",
        f"aiokafka produce+consume {_fmt(base, 'rec/s')} (ratio {_fmt(ratio)})",
        None if rate is None else rate >= 5000,
    )
    backlog = _get(report, "features", "steady_at_lag_rate", "max_backlog_s_at_target")
    target_rate = _get(report, "features", "steady_at_lag_rate", "target_rate")
    seconds = _get(report, "features", "steady_at_lag_rate", "seconds")
    add(
        "#4",
        f"features: largest backlog, {_fmt(target_rate, 'ev/s')} offered for {_fmt(seconds, 's')}",
        backlog,
        "s",
        "lag < 5 s",
        "—",
        None if backlog is None else backlog < 5,
    )
    cpu = _get(report, "features", "sustained", "worker_cpu_us_per_event")
    faust = _get(
        report, "features", "consume_only_baselines", "faust_take_events_noop_cpu_us_per_event"
    )
    aio = _get(report, "features", "consume_only_baselines", "aiokafka_getmany_cpu_us_per_event")
    add(
        "#4",
        "features: worker CPU per event (all work)",
        cpu,
        "µs",
        "~60-100 µs budget",
        f"Faust no-op stream {_fmt(faust, 'µs')}; aiokafka getmany {_fmt(aio, 'µs')}",
        None if cpu is None else cpu <= 100,
    )
    for q, limit in (("p50_ms", 50), ("p99_ms", 250)):
        v = _get(report, "features", "freshness_at_1000_per_s", q)
        add("#4", f"features: freshness at 1,000 ev/s, {q[:3]}", v, "ms", f"<= {limit} ms", "—",
            None if v is None else v <= limit)  # fmt: skip
    for key, n, l50, l99 in (
        ("get_online_features_1_entity", 1, 1, 5),
        ("get_online_features_100_entities", 100, 5, 20),
    ):
        raw = _get(report, "features", key.replace("get_online_features", "raw_redis"), "p50_ms")
        check = _get(report, "features", key.replace("get_online_features", "grpc_health_check"),
                     "p50_ms")  # fmt: skip
        floors = f"raw redis-py pipeline p50 {_fmt(raw, 'ms')}" + (
            "" if check is None else f"; same server's Health/Check p50 {_fmt(check, 'ms')}"
        )
        for q, limit in (("p50_ms", l50), ("p99_ms", l99)):
            v = _get(report, "features", key, q)
            add("#4", f"GetOnlineFeatures over gRPC, {n} entit{'y' if n == 1 else 'ies'}, {q[:3]}",
                v, "ms", f"<= {limit} ms", floors, None if v is None else v <= limit)  # fmt: skip

    # -- serving (#6)
    echo = _get(report, "serving", "echo_c1", "p50_ms")
    p50 = _get(report, "serving", "predict_c1", "p50_ms")
    echo_ratio = _get(report, "serving", "predict_c1_p50_ratio_to_echo")
    uv_echo = _get(report, "serving", "echo_on_uvloop_c1", "p50_ms")
    relay = _get(report, "serving", "two_hop_echo_c1", "p50_ms")
    stream_relay = _get(report, "serving", "two_hop_echo_second_on_a_stream_c1", "p50_ms")
    fetch = _get(report, "serving", "fetch_only_c1", "p50_ms")
    fetch_ratio = _get(report, "serving", "p50_ratios_to_echo", "fetch_relay")
    unary = _get(report, "serving", "predict_unary_reads_c1", "p50_ms")
    unary_ratio = _get(report, "serving", "p50_ratios_to_echo", "predict_unary_reads")
    add("#6", "Predict with feature fetch, c=1, p50", p50, "ms", "<= 2 ms and <= 3x echo",
        f"bare gRPC echo p50 {_fmt(echo, 'ms')} (ratio {_fmt(echo_ratio)}; "
        f"the echo on uvloop, as the services run: {_fmt(uv_echo, 'ms')}; two bare hops, "
        f"a relay asking the echo: {_fmt(relay, 'ms')} with a call, {_fmt(stream_relay, 'ms')} "
        f"with a message on a stream; a relay doing nothing but Predict's feature fetch from "
        f"the real features service: {_fmt(fetch, 'ms')}, {_fmt(fetch_ratio)}x the echo; "
        f"Predict reading features with a call each: {_fmt(unary, 'ms')}, "
        f"{_fmt(unary_ratio)}x)",
        None if p50 is None or echo is None else p50 <= 2 and p50 <= 3 * echo)  # fmt: skip
    p99 = _get(report, "serving", "predict_c1", "p99_ms")
    add("#6", "Predict with feature fetch, c=1, p99", p99, "ms", "<= 10 ms",
        f"echo p99 {_fmt(_get(report, 'serving', 'echo_c1', 'p99_ms'), 'ms')}",
        None if p99 is None else p99 <= 10)  # fmt: skip
    rps = _get(report, "serving", "predict_c16", "requests_per_s")
    add("#6", "Predict, c=16, throughput", rps, "req/s", ">= 1,000",
        f"echo c=16 {_fmt(_get(report, 'serving', 'echo_c16', 'requests_per_s'), 'req/s')}",
        None if rps is None else rps >= 1000)  # fmt: skip
    p99_16 = _get(report, "serving", "predict_c16", "p99_ms")
    add("#6", "Predict, c=16, p99", p99_16, "ms", "<= 50 ms", "—",
        None if p99_16 is None else p99_16 <= 50)  # fmt: skip
    rows_s = _get(report, "serving", "model_infer_256_rows", "rows_per_s")
    add("#6", "ModelInfer, 256 rows per request", rows_s, "rows/s", ">= 20,000", "—",
        None if rows_s is None else rows_s >= 20000)  # fmt: skip
    dropped = _get(report, "serving", "prediction_log", "rows_dropped")
    written = _get(report, "serving", "prediction_log", "rows_written")
    answered = _get(report, "serving", "prediction_log", "rows_answered")
    records = _get(report, "serving", "prediction_log", "records_written")
    add("#6", "prediction log during the bench's load phases: rows dropped", dropped, "",
        "0 (counted, never blocking)",
        f"{_fmt(written)} rows written of {_fmt(answered)} answered, in {_fmt(records)} records",
        None if dropped is None else dropped == 0)  # fmt: skip

    # -- bring your own model (#15)
    for kind, label in (("logreg", "a scikit-learn Pipeline(StandardScaler, LogisticRegression)"),
                        ("hgb", "a HistGradientBoostingClassifier")):  # fmt: skip
        ours = _get(report, "byom", "model_infer", f"driftline/{kind}")
        ml = _get(report, "byom", "model_infer", f"mlserver/{kind}")
        inproc = _get(report, "byom", "model_infer", f"mlserver_inproc/{kind}")
        agree = _get(report, "byom", "label_agreement_with_driftline")
        for c in sorted((ours or {}), key=int):
            ratio = _get(report, "byom", "rows_per_s_ratio_driftline_to_mlserver",
                         f"{kind} vs mlserver", c)  # fmt: skip
            ratio0 = _get(report, "byom", "rows_per_s_ratio_driftline_to_mlserver",
                          f"{kind} vs mlserver_inproc", c)  # fmt: skip
            add("#15", f"ModelInfer, 256 rows, {label}, c={c}: Driftline rows/s "
                "(ratio to MLServer 1.7.1, same model file, same tritonclient client)",
                ours[c]["rows_per_s"], "rows/s", ">= 1.5x MLServer",
                f"MLServer default {_fmt(ml and ml[c]['rows_per_s'], 'rows/s')} (ratio "
                f"{_fmt(ratio)}); MLServer parallel_workers=0 "
                f"{_fmt(inproc and inproc[c]['rows_per_s'], 'rows/s')} (ratio {_fmt(ratio0)}); "
                f"labels agree: {agree and min(agree.values()) == 1.0}",
                None if ratio is None else ratio >= 1.5)  # fmt: skip
    river = _get(report, "byom", "predict_c1", "loans-river", "p50_ms")
    paths = {"logreg": "compiled single-row path", "hgb": "scikit-learn's own predict"}
    for kind in ("logreg", "hgb"):
        v = _get(report, "byom", "predict_c1", f"loans-{kind}", "p50_ms")
        r = _get(report, "byom", "predict_c1_p50_ratio_to_river", kind)
        add("#15", f"Predict c=1 p50, scikit-learn {kind} ({paths[kind]})", v, "ms",
            "within 10% of the River model's", f"River Hoeffding tree {_fmt(river, 'ms')} "
            f"(ratio {_fmt(r)})", None if r is None else r <= 1.10)  # fmt: skip
    log = _get(report, "byom", "prediction_log") or {}
    add("#15", "prediction log during the BYOM load phases: rows dropped",
        log.get("rows_dropped"), "", "0",
        f"{_fmt(log.get('rows_written'))} rows written of {_fmt(log.get('rows_answered'))} "
        "answered", None if not log else log["rows_dropped"] == 0)  # fmt: skip
    promo = _get(report, "byom", "promotion") or {}
    add("#15", f"promotion -> serving, a {_fmt(promo.get('forest_artifact_mb'))} MB scikit-learn "
        "random forest, median", promo.get("forest_median_s"), "s", "—",
        f"a River Hoeffding tree {_fmt(promo.get('river_median_s'), 's')}", None)  # fmt: skip
    small = _get(report, "registry", "register_ms", "p50")
    for fmt_name in ("sklearn-pickle", "onnx"):
        large = _get(report, "registry", "register_10mb", fmt_name) or {}
        mb = (large.get("artifact_bytes") or 0) / 1e6
        add("#15", f"registry: register a {_fmt(mb)} MB {fmt_name} model trained elsewhere, p50",
            (large.get("register_ms") or {}).get("p50"), "ms", "—",
            f"a 1 MB River artifact p50 {_fmt(small, 'ms')}", None)  # fmt: skip

    # -- the cost of secure mode (#20): mTLS + the client's API key vs plaintext, same run
    def sec(*path: str) -> Any:
        return _get(report, "security", *path)

    bar = "our bar; the issue sets none"
    ratios = sec("ratios_secure_to_plaintext") or {}
    refused = sec("secure_serving_refuses") or {}
    for q in ("p50", "p99"):
        r = ratios.get(f"predict_c1_{q}")
        plain = _fmt(sec("predict_c1", "plaintext", f"{q}_ms"), "ms")
        add("#20", f"Predict c=1 {q}, mTLS + API key vs plaintext", sec("predict_c1", "secure",
            f"{q}_ms"), "ms", f"ratio <= 1.5x ({bar})" if q == "p50" else "— (ratio reported)",
            f"plaintext {plain} (ratio {_fmt(r)})" + ("" if q == "p99" else "; the secure "
            f"serving answers a plaintext client {refused.get('plaintext_client')}, a "
            f"certificate without a key {refused.get('client_certificate_without_api_key')}"),
            None if r is None or q == "p99" else r <= 1.5)  # fmt: skip
    r = ratios.get("predict_c16_requests_per_s")
    plain = _fmt(sec("predict_c16", "plaintext", "requests_per_s"), "req/s")
    add("#20", "Predict c=16 throughput, mTLS + API key vs plaintext",
        sec("predict_c16", "secure", "requests_per_s"), "req/s",
        f"ratio >= 0.67x, i.e. <= 1.5x the cost ({bar})", f"plaintext {plain} (ratio {_fmt(r)}); "
        f"failed calls: secure {_fmt(sec('predict_c16', 'secure', 'errors'))}, plaintext "
        f"{_fmt(sec('predict_c16', 'plaintext', 'errors'))}",
        None if r is None else r >= 0.67)  # fmt: skip
    plain = _fmt(sec("new_channel_first_answer", "plaintext", "p50_ms"), "ms")
    add("#20", "a new channel's first Predict answer (connect + TLS handshake), p50",
        sec("new_channel_first_answer", "secure", "p50_ms"), "ms", "— (ratio reported)",
        f"plaintext {plain} (ratio {_fmt(ratios.get('new_channel_first_answer_p50'))})",
        None)  # fmt: skip

    # -- scale-out (#19): the cluster beside the single node, one and two workers, same run
    def clu(*path: str) -> Any:
        return _get(report, "cluster", *path)

    limits = clu("limits") or ""
    infra_names = {"single": "one broker + one redis-server",
                   "cluster": "three brokers + Redis Cluster"}  # fmt: skip
    for kind in ("single", "cluster"):
        for workers, key in ((1, "features_1_worker"), (2, "features_2_workers")):
            other = "cluster" if kind == "single" else "single"
            plural = "s" if workers > 1 else ""
            figure = f"features sustained events/s, {infra_names[kind]}, {workers} worker{plural}"
            add("#19", figure,
                clu(kind, key, "events_per_s"), "ev/s", "— (ratios reported)",
                f"{other}: {_fmt(clu(other, key, 'events_per_s'), 'ev/s')}; offered "
                f"{_fmt(clu(kind, key, 'target_rate'), '/s')}; worker RSS "
                f"{clu(kind, key, 'rss_mb')} MB", None)  # fmt: skip
        add("#19", f"Predict c=16 with feature fetch, {kind}", clu(kind, "predict_c16",
            "requests_per_s"), "req/s", "— (ratios reported)",
            f"p99 {_fmt(clu(kind, 'predict_c16', 'p99_ms'), 'ms')}, errors "
            f"{clu(kind, 'predict_c16', 'errors')}; RSS MB "
            f"{clu(kind, 'predict_c16', 'rss_mb')}", None)  # fmt: skip
    ratios = clu("ratios_cluster_to_single") or {}
    scale = clu("ratios_2_workers_to_1") or {}
    add("#19", "cluster / single ratios (features 1 worker, 2 workers, Predict c=16)",
        f"{_fmt(ratios.get('features_1_worker'))}, {_fmt(ratios.get('features_2_workers'))}, "
        f"{_fmt(ratios.get('predict_c16'))}", "", "— (reported)",
        f"2 workers / 1: single {_fmt(scale.get('single'))}, cluster "
        f"{_fmt(scale.get('cluster'))}. {limits}", None)  # fmt: skip

    for what, rec in (_get(report, "failover", "recoveries") or {}).items():
        taken = rec.get("role_taken_over_s")
        role = "" if taken is None else f"; -> the standby active {_fmt(taken, 's')}"
        add("#19", f"cluster, 2 replicas each: kill {what} -> first event processed",
            rec.get("first_event_processed_s"), "s", "— (reported)",
            f"-> first Predict answered {_fmt(rec.get('first_predict_answered_s'), 's')}{role}",
            None)  # fmt: skip
    failed = _get(report, "failover", "predicts_failed_after_first_champion")
    if failed is not None:
        rss = _get(report, "failover", "rss_mb_after_run") or {}
        add("#19", "cluster failover run: Predicts failed after the first champion",
            sum(failed.values()), "", "0 (UNAVAILABLE retried on the other replica)",
            f"{_get(report, 'failover', 'events_sent')} events; RSS MB after the run: {rss}",
            not failed)  # fmt: skip

    # -- memory at a sustained rate (#19): every process's RSS at idle, after 200k, 400k events
    def mem(*path: str) -> Any:
        return _get(report, "memory", *path)

    totals = {k.removeprefix("after_"): v for k, v in (mem("rss_mb_total") or {}).items()}
    stages = list(totals)
    window = str(mem("growth_window")).replace("after_", "")
    growth = mem("growth_mb") or {}
    cap = mem("label_join_max_pending")
    add("#19", f"whole platform RSS after {stages[-1] if stages else '?'} loan events at "
        f"{_fmt(mem('events_per_s_fed'), 'ev/s')} (kcat), vs idle",
        totals.get(stages[-1]) if stages else None, "MiB", "— (reported)",
        "; ".join(f"{k} {_fmt(v, 'MiB')}" for k, v in totals.items()) + f"; growth {window}: "
        + ", ".join(f"{p} {v:+.0f}" for p, v in growth.items())
        + " MiB (the issue: 1.05 GB idle, 1.79 GB after 200k)", None)  # fmt: skip
    # The bar: a quarter of what the last phase's unlabelled vectors would add to training
    # if the join held them all (the watermark passes none: the run spans minutes of event
    # time, the allowed lateness is an hour), at ~0.7 KB a waiting vector with its
    # prediction (docs/runbooks/LabelJoinOverCap.md); capped, the join is already full.
    bar_mb, uncapped = mem("training_growth_bar_mb"), mem("training_uncapped_growth_mb_estimate")
    tr_growth = growth.get("training")
    rss = mem("rss_mb") or {}
    add("#19", f"training RSS growth from {window} events, label join capped "
        f"at {_fmt(cap)} (DRIFTLINE_TRAINING__LABEL_JOIN_MAX_PENDING)", tr_growth, "MiB",
        f"<= {_fmt(bar_mb, 'MiB')}: a quarter of the ~{_fmt(uncapped, 'MiB')} the phase's "
        "unlabelled vectors would add uncapped (~0.7 KB each)",
        "training " + ", ".join(f"{k.removeprefix('after_')} {_fmt(v.get('training'), 'MiB')}"
                                for k, v in rss.items())
        + " (the issue, uncapped: 161 -> 666 MB after 200k)",
        None if tr_growth is None or bar_mb is None else tr_growth <= bar_mb)  # fmt: skip
    ev = mem("evictions") or {}
    unlabelled = mem("unlabelled_vectors_sent")
    joined = list((mem("training_join") or {"": {}}).values())[-1]
    add("#19", "label join: vectors dropped over the cap, counted "
        "(driftline_training_join_records_total{outcome=\"vectors_over_cap\"})",
        ev.get("vectors_over_cap"), "", "> 0 once the cap is below the vectors held",
        f"cap {_fmt(cap)}; {_fmt(unlabelled)} unlabelled vectors sent; waiting at the end "
        f"{_fmt(joined.get('waiting_vectors'))} vectors, {_fmt(joined.get('waiting_labels'))} "
        f"labels; orphans over the cap {_fmt(ev.get('orphans_over_cap'))}",
        None if unlabelled is None or cap is None or not ev or unlabelled <= cap
        else ev["vectors_over_cap"] > 0)  # fmt: skip
    phases = mem("phases") or []
    add("#19", "memory bench: events/s fed with kcat, both phases", mem("events_per_s_fed"),
        "ev/s", "— (the rate the platform sustains: small backlog and drain)",
        f"offered {_fmt(mem('rate_offered'), 'ev/s')}; per phase: " + "; ".join(
            f"fed {_fmt(p['events_per_s_fed'], 'ev/s')}, end to end "
            f"{_fmt(p['events_per_s_end_to_end'], 'ev/s')}, largest backlog "
            f"{_fmt(p['largest_backlog_events'])} events, drained {_fmt(p['drain_s'], 's')} "
            "after the last" for p in phases), None)  # fmt: skip

    # -- drift (#7, #18)
    for t in _get(report, "drift", "eval", "targets") or []:
        add(f"#{t.get('issue', 7)}", f"eval-drift policy, {t['target'].split(' <=')[0]}",
            t["value"], "", "<= " + t["target"].split("<= ")[1],
            "River detectors alone: see the eval table", bool(t["met"]))  # fmt: skip
    for suite in ("recurring", "label_free"):
        for t in _get(report, "drift", suite, "targets") or []:
            add("#18", f"eval-drift {suite.replace('_', '-')}: {t['target']}", t["value"], "",
                "met", "see the suite's table in bench/out/drift.json", bool(t["met"]))  # fmt: skip
    mon = _get(report, "drift", "service_throughput", "events_per_s")
    add("#7", "monitoring service, every detector on", mon, "ev/s",
        ">= the features ingest rate", f"features sustained {_fmt(rate, 'ev/s')}",
        None if mon is None or rate is None else mon >= rate)  # fmt: skip

    loop = _get(report, "loop", "detection_to_new_champion_serving_s")
    add("#7", "detection -> new champion serving (make demo scenario)", loop, "s", "<= 30 s",
        f"drift -> serving {_fmt(_get(report, 'loop', 'drift_to_new_champion_serving_s'), 's')}",
        None if loop is None else loop <= 30)  # fmt: skip
    failed = _get(report, "loop", "failed_requests")
    add("#8", "make demo scenario: failed requests", failed, "", "0", "—",
        None if failed is None else failed == 0)  # fmt: skip

    # -- poison pills (#14)
    for t in _get(report, "poison", "topics") or []:
        after = t["after_hostile"]
        worst = max(after, key=lambda name: after[name]["median_ms"])
        add("#14", f"{t['source']}: hostile record -> next valid record on "
            f"{t['output']}, slowest kind ({worst}), median", after[worst]["median_ms"], "ms",
            "seconds, not never; every hostile record dead-lettered",
            f"a valid record after a valid one {_fmt(t['clean_median_ms'], 'ms')} "
            f"(ratio {_fmt(after[worst]['ratio_to_clean'])}); {len(after)} kinds; dead letters "
            f"{t['dead_letters_found_by_source_offset']} of {t['hostile_records_with_offset']}",
            t["dead_letters_found_by_source_offset"] == t["hostile_records_with_offset"]
            and after[worst]["max_ms"] < 10_000)  # fmt: skip
    running = _get(report, "poison", "services_still_running")
    if running is not None:
        add("#14", "poison bench: services never restarted",
            "yes" if all(running.values()) else "no", "",
            "ingestion and features run throughout", "—", all(running.values()))  # fmt: skip

    # -- the ops stack (#17)
    added = _get(report, "ops", "added_up_s")
    medians = _get(report, "ops", "up_s_median") or {}
    add("#17", "driftline up: start-up time the ops stack adds (median)", added, "s", "—",
        f"up without it {_fmt(medians.get('no_ops'), 's')}, with it "
        f"{_fmt(medians.get('ops'), 's')} (ratio "
        f"{_fmt(_get(report, 'ops', 'up_ratio_ops_to_no_ops'))})", None)  # fmt: skip
    rss = _get(report, "ops", "rss_mib_total")
    add("#17", "whole platform with the ops stack: resident memory", rss, "MiB", "< 3,072 MiB",
        "every process of the platform, summed", None if rss is None else rss < 3072)  # fmt: skip
    add("#17", "demo: drift detected -> DriftDetected at Alertmanager's receiver",
        _get(report, "ops", "drift_to_alert_s"), "s", "—",
        f"loop trace services in Jaeger: {_get(report, 'ops', 'loop_trace_services')}",
        None)  # fmt: skip

    # -- training, registry, infra (#3, #5)
    add("#5", "training: labelled examples learnt per s (online join)",
        _get(report, "training", "online_join_learn", "labeled_examples_per_s"), "ex/s", "—",
        "—", None)  # fmt: skip
    add("#5", "training: retrain request -> registered version",
        _get(report, "training", "retrain", "seconds_request_to_registered"), "s", "—", "—",
        None)  # fmt: skip
    add("#5", "registry: register 1 MB, p50", _get(report, "registry", "register_ms", "p50"),
        "ms", "—", "—", None)  # fmt: skip
    add("#3", "infra up, cold, mean", _get(report, "infra", "cold", "up_s", "mean"), "s", "—",
        "—", None)  # fmt: skip
    add("#3", "Kafka baseline: produce+consume", _get(report, "kafka_baseline",
        "produce_consume_msgs_per_s"), "msg/s", "(baseline)", "—", None)  # fmt: skip
    return rows


def render(report: dict[str, Any]) -> str:
    """The Markdown report."""
    lines = ["# Driftline benchmark report", ""]
    m = report["machine"]
    lines += [
        f"Measured {m['when']} on {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}. The machine is shared and noisy: compare the ratios to the "
        "baselines measured in the same run, not absolute times.",
        "",
    ]
    lines += [
        "## Headline figures",
        "",
        "| issue | figure | measured | target | baseline (same run) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for row in headline(report):
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Every figure in full, per benchmark:", ""]
    for name, entry in report["benches"].items():
        lines.append(f"## {name}")
        lines.append("")
        if entry["status"] != "ok":
            lines += [f"**{entry['status']}**: {entry.get('detail', '')}", ""]
            continue
        lines.append(f"({entry['seconds']:.0f} s)")
        lines.append("")
        lines.append("```json")
        lines.append(json.dumps(entry["result"], indent=2))
        lines.append("```")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--only", default="", help="comma-separated bench names")
    args = parser.parse_args()
    only = {x for x in args.only.split(",") if x}
    OUT.mkdir(exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "benches": {}}
    previous = HERE / "report.json"
    if only and previous.exists():
        # A partial run updates the named entries and keeps the others' figures.
        report["benches"] = json.loads(previous.read_text()).get("benches", {})
    for name, script in BENCHES.items():
        if only and name not in only:
            continue
        path = HERE / script
        if not path.exists():
            report["benches"][name] = {
                "status": "not built",
                "detail": f"{script} does not exist yet",
            }
            continue
        print(f"── {name}: running {script}", flush=True)
        out_file = OUT / f"{name}.json"
        out_file.unlink(missing_ok=True)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, str(path)], cwd=HERE.parent)
        seconds = time.monotonic() - t0
        if proc.returncode != 0 or not out_file.exists():
            report["benches"][name] = {
                "status": "failed",
                "detail": f"exit {proc.returncode}; no {out_file.name}"
                if not out_file.exists()
                else f"exit {proc.returncode}",
                "seconds": seconds,
            }
            continue
        report["benches"][name] = {
            "status": "ok",
            "seconds": seconds,
            "result": json.loads(out_file.read_text()),
        }
    (HERE / "report.json").write_text(json.dumps(report, indent=2))
    (HERE / "report.md").write_text(render(report))
    print(f"wrote {HERE / 'report.md'} and {HERE / 'report.json'}")
    failed = [n for n, e in report["benches"].items() if e["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
