#!/usr/bin/env python3
"""Rampart's load benchmark: the simulated provider called directly, a bare hyper pass-through
proxy (the physical-limit baseline), full_gateway with every layer in memory and, optionally,
full_gateway with Redis state and LiteLLM's proxy, side by side in one run.

    benches/load.sh                      # build in release, run `load` then `memory`
    benches/load.py load   [--rounds 3] [--secs 5] [--redis] [--litellm]
    benches/load.py memory [--streams 1000]
    benches/load.py soak   [--soak-secs 120] [--tenants 100000]

Pinning (2-core machine): every system under test (bare proxy, gateways, LiteLLM) on CPU 0;
the load generator (wrk, loadgen) and the simulated providers on CPU 1. Everything listens on
127.0.0.1 only. The output is markdown, ready to paste into benches/README.md.
"""

import argparse
import datetime
import glob
import hashlib
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_DIR = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
REL = os.path.join(TARGET_DIR, "release")
SUT_CPU = "0"
LOAD_CPU = "1"

PROMPT = ('"messages":[{"role":"system","content":"You are terse."},'
          '{"role":"user","content":"Summarise the benefits of a gateway in front of LLM providers."}]')


def body(model, stream=False, max_tokens=16):
    s = ',"stream":true' if stream else ""
    return '{"model":"%s","max_tokens":%d%s,%s}' % (model, max_tokens, s, PROMPT)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Procs:
    """Processes this run started; all stopped (by pid) at exit."""

    def __init__(self, work):
        self.work = work
        self.procs = []

    def start(self, name, cpu, argv, env=None):
        out = open(os.path.join(self.work, name + ".log"), "w")
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.Popen(["taskset", "-c", cpu] + argv, stdout=out, stderr=subprocess.STDOUT,
                             env=e, cwd=self.work, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


def wait_http(url, post=None, timeout=60, proc=None, name="", key=None):
    deadline = time.time() + timeout
    data = post.encode() if post else None
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit("%s exited (code %s); see its log" % (name, proc.returncode))
        try:
            headers = {"content-type": "application/json"}
            if key:
                headers["authorization"] = "Bearer " + key
            req = urllib.request.Request(url, data=data, headers=headers)
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit("%s did not come up at %s" % (name, url))


def cpu_ns(pid):
    """CPU time of every thread of `pid`, in nanoseconds (from /proc/<pid>/task/*/schedstat)."""
    total = 0
    for f in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            with open(f) as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def hwm_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def wrk(url, conns, secs, req_body, key=None):
    env = dict(os.environ, RAMPART_BODY=req_body)
    if key:
        env["RAMPART_KEY"] = key
    threads = 1
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % secs,
         "--timeout", "10s", "-s", os.path.join(ROOT, "benches", "post.lua"),
         url + "/v1/chat/completions"],
        env=env, capture_output=True, text=True, timeout=secs + 60)
    m = re.search(r"^RESULT (.*)$", out.stdout, re.M)
    if not m:
        raise SystemExit("wrk failed: %s %s" % (out.stdout, out.stderr))
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", m.group(1))}


def build(args):
    if args.no_build:
        return
    log("building release binaries (CARGO_TARGET_DIR=%s)..." % TARGET_DIR)
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "rampart-bench", "--bins",
                    "-p", "full_gateway", "--bin", "full_gateway"], cwd=ROOT, check=True)


def machine_note():
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    load = os.getloadavg()
    return ("%s, %d CPUs, Linux %s; commit %s; %s; load average at start %.2f"
            % (cpu, os.cpu_count() or 0, platform.release(), rev or "?",
               datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), load[0]))


GATEWAY_TOML = """
[rate_limits.tenant]
limits = {{ requests_per_minute = 100000000, tokens_per_minute = 100000000000, concurrency = 100000 }}

[cache]
ttl = "10m"

{providers}
"""

PROVIDER = """
[[providers]]
name = "{name}"
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"

[[models]]
name = "{model}"
provider = "{name}"
upstream_name = "gpt-4.1"
price = {{ input = 2.00, cached_input = 0.50, output = 8.00 }}
context_window = 128000
tier = "complex"
limits = {{ requests_per_minute = 100000000, tokens_per_minute = 100000000000 }}
"""


def gateway_config(work, name, mocks, extra=""):
    """The full stack in memory: tenant limits, cache, router, fallback, per-target limits,
    breaker, with limits high enough never to refuse; a request without temperature makes the
    cache decide and bypass. One model per simulated provider."""
    providers = "".join(PROVIDER.format(name="sim-" + m, port=port, model=m) for m, port in mocks)
    path = os.path.join(work, name + ".toml")
    with open(path, "w") as fh:
        fh.write(GATEWAY_TOML.format(providers=providers) + extra)
    return path


def start_gateway(procs, work, name, config, cpu=SUT_CPU):
    port = free_port()
    p = procs.start(name, cpu, [os.path.join(REL, "full_gateway"), "--config", config,
                                "--listen", "127.0.0.1:%d" % port], env={"RUST_LOG": "warn"})
    wait_http("http://127.0.0.1:%d/health" % port, proc=p, name=name)
    return p, "http://127.0.0.1:%d" % port


def start_mock(procs, name, extra=()):
    port = free_port()
    p = procs.start(name, LOAD_CPU, [os.path.join(REL, "bench_mock"), "--listen",
                                     "127.0.0.1:%d" % port, "--threads", "1"] + list(extra))
    wait_http("http://127.0.0.1:%d/v1/chat/completions" % port, post=body("m0", max_tokens=1),
              proc=p, name=name)
    return p, port


def start_bare(procs, name, upstream_port):
    port = free_port()
    p = procs.start(name, SUT_CPU, [os.path.join(REL, "bare_proxy"), "--listen",
                                    "127.0.0.1:%d" % port, "--upstream",
                                    "127.0.0.1:%d" % upstream_port])
    wait_http("http://127.0.0.1:%d/v1/chat/completions" % port, post=body("m0", max_tokens=1),
              proc=p, name=name)
    return p, "http://127.0.0.1:%d" % port


def start_redis(procs, work):
    if not shutil.which("redis-server"):
        raise SystemExit("--redis needs redis-server (apt-get install -y redis-server)")
    port = free_port()
    p = procs.start("redis", LOAD_CPU, ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                        "--save", "", "--appendonly", "no"])
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, "redis://127.0.0.1:%d" % port
        except OSError:
            time.sleep(0.1)
    raise SystemExit("redis-server did not start")


# LiteLLM's proxy refuses to start without a master key (recent releases); a throwaway one.
LITELLM_KEY = "sk-rampart-bench-" + os.urandom(24).hex()


def start_litellm(procs, work, mock_port):
    exe = shutil.which("litellm") or os.path.join(ROOT, "benches", ".venv-litellm", "bin", "litellm")
    if not os.path.exists(exe):
        raise SystemExit("--litellm needs LiteLLM's proxy: python3 -m venv benches/.venv-litellm && "
                         "benches/.venv-litellm/bin/pip install 'litellm[proxy]'")
    cfg = os.path.join(work, "litellm.yaml")
    with open(cfg, "w") as fh:
        fh.write("model_list:\n  - model_name: m0\n    litellm_params:\n      model: openai/m0\n"
                 "      api_base: http://127.0.0.1:%d/v1\n      api_key: sk-bench\n"
                 "general_settings:\n  master_key: %s\n" % (mock_port, LITELLM_KEY))
    port = free_port()
    p = procs.start("litellm", SUT_CPU, [exe, "--config", cfg, "--host", "127.0.0.1", "--port",
                                         str(port), "--num_workers", "1"],
                    env={"LITELLM_LOG": "ERROR"})
    wait_http("http://127.0.0.1:%d/v1/chat/completions" % port, post=body("m0", max_tokens=1),
              timeout=180, proc=p, name="litellm", key=LITELLM_KEY)
    return p, "http://127.0.0.1:%d" % port


def med(rows, k):
    return statistics.median(r[k] for r in rows)


def load(args, procs, work):
    mock0, port0 = start_mock(procs, "mock-0ms")
    mock50, port50 = start_mock(procs, "mock-50ms", ["--base", "50ms"])
    bare0, bare0_url = start_bare(procs, "bare-0ms", port0)
    bare50, bare50_url = start_bare(procs, "bare-50ms", port50)
    gw_cfg = gateway_config(work, "gateway", [("m0", port0), ("m50", port50)])
    gw, gw_url = start_gateway(procs, work, "gateway", gw_cfg)
    direct0 = "http://127.0.0.1:%d" % port0
    direct50 = "http://127.0.0.1:%d" % port50
    # target -> latency -> (url, pid of the system under test)
    targets = {
        "direct": {0: (direct0, mock0.pid), 50: (direct50, mock50.pid)},
        "bare proxy": {0: (bare0_url, bare0.pid), 50: (bare50_url, bare50.pid)},
        "gateway (memory)": {0: (gw_url, gw.pid), 50: (gw_url, gw.pid)},
    }
    if args.redis:
        _, redis_url = start_redis(procs, work)
        rcfg = gateway_config(work, "gateway-redis", [("m0", port0), ("m50", port50)],
                              extra='\n[state]\nredis_url = "%s"\n' % redis_url)
        rgw, rgw_url = start_gateway(procs, work, "gateway-redis", rcfg)
        targets["gateway (redis)"] = {0: (rgw_url, rgw.pid), 50: (rgw_url, rgw.pid)}
    if args.litellm:
        lp, lurl = start_litellm(procs, work, port0)
        targets["litellm"] = {0: (lurl, lp.pid)}

    scenarios = [("json", c, lat) for lat in (0, 50) for c in (1, 16, 64)] + [("stream", 16, 0)]
    if args.quick:
        scenarios = [("json", 1, 0), ("json", 16, 0), ("stream", 16, 0)]
    for name, t in targets.items():
        url, _ = t[0]
        log("warm-up: %s" % name)
        wrk(url, 8, 2, body("m0"), key=LITELLM_KEY if name == "litellm" else None)
    results = {}
    for r in range(args.rounds):
        for kind, conns, lat in scenarios:
            for name, t in targets.items():
                if lat not in t:
                    continue
                if name == "litellm" and (conns > 16 or kind == "stream"):
                    continue
                url, pid = t[lat]
                model = "m%d" % lat
                b = body(model, stream=True, max_tokens=20) if kind == "stream" else body(model)
                before = cpu_ns(pid)
                res = wrk(url, conns, args.secs, b, key=LITELLM_KEY if name == "litellm" else None)
                res["cpu_us"] = (cpu_ns(pid) - before) / 1000.0 / max(res["requests"], 1)
                results.setdefault((kind, conns, lat, name), []).append(res)
                log("round %d %s c=%d %dms %-18s %8.0f req/s p50 %6d µs p99 %6d µs cpu %6.1f µs/req err %d" % (
                    r + 1, kind, conns, lat, name, res["rps"], res["p50"], res["p99"], res["cpu_us"],
                    res["errors"]))
    rss = {name: max(hwm_kb(pid) for _, pid in t.values()) for name, t in targets.items()}
    # Peak RSS of the mock is what "direct" measures; the bare proxy's two processes share it.
    print("### Load: %d round(s) × %d s per cell, medians\n" % (args.rounds, args.secs))
    print("Machine: %s.\n" % MACHINE)
    print("Command: `benches/load.sh%s` (wrk %s; system under test on CPU %s, wrk and the "
          "simulated provider on CPU %s).\n" % (
              (" --rounds %d --secs %d" % (args.rounds, args.secs)) if (args.rounds, args.secs) != (3, 5) else "",
              "-t1", SUT_CPU, LOAD_CPU))
    print("| scenario | target | req/s | p50 µs | p99 µs | p99.9 µs | added p50 | added p99 | CPU µs/req | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, conns, lat in scenarios:
        d = results.get((kind, conns, lat, "direct"))
        for name in targets:
            rows = results.get((kind, conns, lat, name))
            if not rows:
                continue
            added = lambda k: ("%+.0f" % (med(rows, k) - med(d, k))) if (d and name != "direct") else "–"
            label = "%s c=%d %s" % (kind + (" 20 chunks" if kind == "stream" else ""), conns,
                                    "%d ms" % lat)
            print("| %s | %s | %s | %.0f | %.0f | %.0f | %s | %s | %.1f | %.0f |" % (
                label, name, format(round(med(rows, "rps")), ","), med(rows, "p50"), med(rows, "p99"),
                med(rows, "p999"), added("p50"), added("p99"), med(rows, "cpu_us"), med(rows, "errors")))
    print()
    print("Peak RSS (VmHWM) over the run: " + ", ".join(
        "%s %.1f MB" % (n, kb / 1024.0) for n, kb in rss.items()) + ".\n")
    verdict(results, targets)


def verdict(results, targets):
    """DESIGN §6 targets, from the rows of this run."""
    def get(kind, c, lat, name):
        rows = results.get((kind, c, lat, name))
        return rows and {k: med(rows, k) for k in ("rps", "p50", "p99", "cpu_us")}
    d, b, g = (get("json", 16, 0, n) for n in ("direct", "bare proxy", "gateway (memory)"))
    if not (d and b and g):
        return
    print("Targets (DESIGN §6), full stack in memory, JSON, concurrency 16, zero upstream latency:\n")
    checks = [
        ("added p50 ≤ 100 µs", g["p50"] - d["p50"] <= 100, "%+.0f µs" % (g["p50"] - d["p50"])),
        ("added p99 ≤ 500 µs", g["p99"] - d["p99"] <= 500, "%+.0f µs" % (g["p99"] - d["p99"])),
        ("throughput ≥ 80 % of the bare proxy", g["rps"] >= 0.8 * b["rps"],
         "%.0f %%" % (100.0 * g["rps"] / b["rps"])),
        ("throughput ≥ 10,000 req/s", g["rps"] >= 10000, "%s req/s" % format(round(g["rps"]), ",")),
        ("CPU per request ≤ 2 × the bare proxy's", g["cpu_us"] <= 2 * b["cpu_us"],
         "%.1f vs %.1f µs (%.2f×)" % (g["cpu_us"], b["cpu_us"], g["cpu_us"] / max(b["cpu_us"], 1e-9))),
    ]
    bs, gs = get("stream", 16, 0, "bare proxy"), get("stream", 16, 0, "gateway (memory)")
    if bs and gs:
        checks.append(("stream CPU ≤ 1.5 × the bare proxy's", gs["cpu_us"] <= 1.5 * bs["cpu_us"],
                       "%.1f vs %.1f µs (%.2f×)" % (gs["cpu_us"], bs["cpu_us"], gs["cpu_us"] / max(bs["cpu_us"], 1e-9))))
    r = get("json", 16, 0, "gateway (redis)")
    if r:
        checks.append(("Redis path added p99 ≤ 1.5 ms", r["p99"] - d["p99"] <= 1500,
                       "%+.0f µs" % (r["p99"] - d["p99"])))
    print("| target | measured | met |")
    print("|---|---|---|")
    for what, ok, measured in checks:
        print("| %s | %s | %s |" % (what, measured, "yes" if ok else "**no**"))
    print()


def loadgen(args_list, timeout):
    out = subprocess.run(["taskset", "-c", LOAD_CPU, os.path.join(REL, "loadgen")] + args_list,
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SystemExit("loadgen failed: %s %s" % (out.stdout, out.stderr))
    return out.stdout


def memory(args, procs, work):
    """RSS with N concurrent open streams (20 chunks, 250 ms apart: each lasts ~5 s)."""
    slow, slow_port = start_mock(procs, "mock-slow", ["--chunk-gap", "250ms"])
    bare, bare_url = start_bare(procs, "bare-slow", slow_port)
    cfg = gateway_config(work, "gateway-streams", [("slow", slow_port)])
    gw, gw_url = start_gateway(procs, work, "gateway-streams", cfg)
    rows = []
    for name, url, pid in (("bare proxy", bare_url, bare.pid), ("gateway (memory)", gw_url, gw.pid)):
        out = loadgen(["streams", "--url", url, "--pid", str(pid), "--n", str(args.streams),
                       "--model", "slow", "--hold", "2s"], timeout=180)
        m = re.search(r"^STREAMS (.*)$", out, re.M)
        f = dict(re.findall(r"(\w+)=(\d+)", m.group(1))) if m else {}
        rows.append((name, f))
        log("%s: %s" % (name, m.group(1) if m else out))
    print("### Memory: %d concurrent open streams\n" % args.streams)
    print("| target | streams open | completed | RSS before | RSS with all open | peak RSS | open fds |")
    print("|---|---|---|---|---|---|---|")
    for name, f in rows:
        mb = lambda k: "%.1f MB" % (int(f.get(k, 0)) / 1024.0)
        print("| %s | %s / %s | %s | %s | %s | %s | %s |" % (
            name, f.get("open", "?"), f.get("n", "?"), f.get("complete", "?"), mb("rss_before_kb"),
            mb("rss_open_kb"), mb("hwm_kb"), f.get("fds_open", "?")))
    print()
    g = dict(rows).get("gateway (memory)", {})
    if g:
        ok = int(g.get("hwm_kb", 0)) <= 64 * 1024
        print("Target ≤ 64 MB RSS at %d open streams: %s.\n" % (args.streams, "met" if ok else "**missed**"))


def soak(args, procs, work):
    """Mixed traffic over many tenants for a bounded time; RSS and fds sampled."""
    tenants = args.tenants
    fast, fast_port = start_mock(procs, "mock-soak", ["--fault", "err=503", "--fault", "cut=cut:5"])
    slow, slow_port = start_mock(procs, "mock-soak-slow", ["--chunk-gap", "50ms"])
    models = ""
    for name, port, upstream in (("ok", fast_port, "ok"), ("err", fast_port, "err"),
                                 ("cut", fast_port, "cut"), ("slow", slow_port, "slow")):
        models += ('\n[[providers]]\nname = "p-%s"\nkind = "openai"\nbase_url = "http://127.0.0.1:%d/v1"\n'
                   '\n[[models]]\nname = "%s"\nprovider = "p-%s"\nupstream_name = "%s"\n'
                   'price = { input = 2.00, cached_input = 0.50, output = 8.00 }\n' % (
                       name, port, name, name, upstream))
    keys = []
    for i in range(tenants):
        d = hashlib.sha256(("sk-soak-%d" % i).encode()).hexdigest()
        keys.append('[[virtual_keys]]\ntenant = "t%d"\nkey_sha256 = "%s"\n' % (i, d))
    cfg = os.path.join(work, "gateway-soak.toml")
    with open(cfg, "w") as fh:
        fh.write('[rate_limits.tenant]\nlimits = { requests_per_minute = 6000, tokens_per_minute = 10000000, concurrency = 64 }\n\n'
                 '[cache]\nttl = "10m"\nmax_bytes = 8388608\n\n[fallback]\nmax_attempts = 1\n' + models + "\n" + "\n".join(keys))
    gw, gw_url = start_gateway(procs, work, "gateway-soak", cfg)
    log("soak: %d s over %d tenants..." % (args.soak_secs, tenants))
    out = loadgen(["soak", "--url", gw_url, "--pid", str(gw.pid), "--key-prefix", "sk-soak-",
                   "--tenants", str(tenants), "--concurrency", str(args.soak_concurrency),
                   "--duration", "%ds" % args.soak_secs, "--sample", "%ds" % max(1, args.soak_secs // 20)],
                  timeout=args.soak_secs + 120)
    print("### Soak: %d s, %d tenants, concurrency %d\n" % (args.soak_secs, tenants, args.soak_concurrency))
    print("Machine: %s. Command: `benches/load.py soak --soak-secs %d --tenants %d`.\n" % (
        MACHINE, args.soak_secs, tenants))
    print("Mix: 30 % cache hits (200 tenants × 5 questions), 25 % misses (unique prompts), 10 % upstream "
          "503s, 10 % streams cut by the upstream after 5 events, 10 % slow streams the client drops "
          "after the first event, 15 % streams read to the end; tenants taken in turn.\n")
    print(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="*", default=["load", "memory"], help="load, memory, soak (default: load memory)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="three scenarios only")
    ap.add_argument("--redis", action="store_true", help="also full_gateway with [state] redis_url (needs redis-server)")
    ap.add_argument("--litellm", action="store_true", help="also LiteLLM's proxy on the same mock (not in CI)")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--soak-secs", type=int, default=120)
    ap.add_argument("--soak-concurrency", type=int, default=16)
    ap.add_argument("--tenants", type=int, default=100000)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    args.soak_secs = max(10, min(args.soak_secs, 600))
    for tool in ("taskset",) + (("wrk",) if "load" in args.what else ()):
        if not shutil.which(tool):
            raise SystemExit("%s not found (apt-get install -y %s)" % (tool, "wrk" if tool == "wrk" else "util-linux"))
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs at least 2 CPUs (system under test on CPU 0, load on CPU 1)")
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, 65536)
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass
    build(args)
    global MACHINE
    MACHINE = machine_note()
    work = tempfile.mkdtemp(prefix="rampart-load-")
    procs = Procs(work)
    try:
        for what in args.what:
            if what == "load":
                load(args, procs, work)
            elif what == "memory":
                memory(args, procs, work)
            elif what == "soak":
                soak(args, procs, work)
            else:
                raise SystemExit("unknown: %s (load, memory, soak)" % what)
            procs.stop_all()
            procs.procs = []
    finally:
        procs.stop_all()
        if os.environ.get("RAMPART_KEEP_LOGS"):
            log("logs kept in %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


MACHINE = ""

if __name__ == "__main__":
    main()
