#!/usr/bin/env python3
"""Load generator for llm-batchd (python stdlib only).

Replays a request shape against an OpenAI-compatible server, streaming every
reply, and reports throughput, TTFT / TPOT / end-to-end percentiles and SLO
attainment, overall and per priority class, plus what the server's /metrics
said about the run (batch size, step time, preemptions, overhead).

Shapes (--shape):
  poisson    steady Poisson arrivals at --rate
  bursty     Gamma inter-arrivals with a coefficient of variation of 3
  spike      a quiet period (rate/5) for the first half, then a launch
             spike (rate x 3)
  priority   Poisson at --rate, classes 0/1/2 in 70/20/10 shares
  azure      the Azure 2023 conversation trace (arrivals and lengths)
  mooncake   the Mooncake conversation trace: arrivals, lengths and its
             shareable prefix blocks (equal hash ids -> equal prompt text)
  sharegpt   ShareGPT lengths with Poisson arrivals
  servegen   ServeGen's 14-day rate history, --day-s seconds per day,
             Poisson within each 10-minute window
Lengths from the traces are scaled by --len-scale and clamped to
--max-prompt / --max-output tokens; trace time is compressed so the mean
rate is --rate (or by --time-scale).  With --clients N the run is a closed
loop instead: N clients each send their next request when the last ends
(arrival times ignored).

Prompts are customer-support messages from
../shared/data/support/bitext-customer-support.csv, cut to length with a
characters-per-token ratio measured against the server first.

  scripts/loadgen.py --url http://127.0.0.1:8080 --shape poisson --rate 4 \\
      --duration 30 --json out.json
"""
import argparse
import asyncio
import csv
import json
import math
import os
import random
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get("LLMKIT_DATA", os.path.join(HERE, "..", "..", "shared", "data"))


# ---------------------------------------------------------------- workload

def support_text(path):
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows.append((r["instruction"].strip(), r["response"].strip()))
    return rows


class Prompts:
    """Text of about n tokens, from the support corpus."""

    def __init__(self, rows, chars_per_token, rng):
        self.rows, self.cpt, self.rng = rows, chars_per_token, rng

    def make(self, n_tokens, key=None):
        r = random.Random(key) if key is not None else self.rng
        want = max(1, int(n_tokens * self.cpt))
        parts, size = [], 0
        while size < want:
            q, a = self.rows[r.randrange(len(self.rows))]
            s = "Customer: " + q + "\nAgent: " + a + "\n"
            parts.append(s)
            size += len(s)
        return "".join(parts)[:want]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def shape_requests(a, rng):
    """[(t_arrival, prompt_tokens, output_tokens, priority, prefix_blocks)]"""
    out = []
    T = a.duration
    if a.shape in ("poisson", "priority", "sharegpt", "bursty", "spike"):
        lens = None
        if a.shape == "sharegpt":
            lens = [(int(r["num_prefill_tokens"]), int(r["num_decode_tokens"]))
                    for r in read_csv(os.path.join(DATA, "traces", "sharegpt-lengths.csv"))]
        t = 0.0
        while True:
            if a.shape == "bursty":
                cv = 3.0
                k = 1 / cv ** 2
                t += rng.gammavariate(k, 1 / (a.rate * k))
            elif a.shape == "spike":
                if t < T / 2:
                    t += rng.expovariate(a.rate / 5)
                    if t >= T / 2:       # memoryless: restart at the switch
                        t = T / 2 + rng.expovariate(a.rate * 3)
                else:
                    t += rng.expovariate(a.rate * 3)
            else:
                t += rng.expovariate(a.rate)
            if t >= T:
                break
            if lens:
                p, o = lens[rng.randrange(len(lens))]
                p, o = int(p * a.len_scale), int(o * a.len_scale)
            else:
                p = int(rng.lognormvariate(math.log(a.prompt_mean), 0.6))
                o = int(rng.lognormvariate(math.log(a.output_mean), 0.5))
            pri = 0
            if a.shape == "priority":
                x = rng.random()
                pri = 2 if x < 0.1 else 1 if x < 0.3 else 0
            out.append((t, p, o, pri, None))
    elif a.shape == "azure":
        rows = read_csv(os.path.join(DATA, "traces", "azure2023-conv.csv"))
        from datetime import datetime
        ts = [datetime.fromisoformat(r["TIMESTAMP"][:26]).timestamp() for r in rows]
        t0 = ts[0]
        raw = [(t - t0, int(r["ContextTokens"]), int(r["GeneratedTokens"]))
               for t, r in zip(ts, rows)]
        out = scale_time(a, raw)
    elif a.shape == "mooncake":
        raw = []
        with open(os.path.join(DATA, "traces", "mooncake-conversation.jsonl")) as f:
            for line in f:
                o = json.loads(line)
                raw.append((o["timestamp"] / 1000, o["input_length"], o["output_length"],
                            o["hash_ids"]))
        out = scale_time(a, raw)
    elif a.shape == "servegen":
        rows = read_csv(os.path.join(DATA, "traces", "servegen-m-large-rate-10min.csv"))
        rates = [float(r["total_rate_rps"]) for r in rows]
        peak = max(rates)
        win = a.day_s / 144          # 144 ten-minute windows a day
        t = 0.0
        for i, r in enumerate(rates):
            lam = a.rate * r / peak  # the peak window gets --rate
            end = (i + 1) * win
            while lam > 0:
                t += rng.expovariate(lam)
                if t >= end:
                    t = end
                    break
                p = int(rng.lognormvariate(math.log(a.prompt_mean), 0.6))
                o = int(rng.lognormvariate(math.log(a.output_mean), 0.5))
                out.append((t, p, o, 0, None))
            t = max(t, end)
            if t >= T:
                break
    else:
        sys.exit("loadgen: unknown shape " + a.shape)
    res = []
    for t, p, o, pri, blocks in out:
        p = max(1, min(a.max_prompt, p))
        o = max(1, min(a.max_output, o))
        res.append((t, p, o, pri, blocks))
    return [r for r in res if r[0] < T]


def scale_time(a, raw):
    """Trace rows (t, in, out[, blocks]) -> requests at mean rate --rate."""
    span = raw[-1][0] - raw[0][0] or 1
    ts = a.time_scale or (len(raw) / span) / a.rate
    out = []
    for r in raw:
        t = (r[0] - raw[0][0]) / ts
        blocks = r[3] if len(r) > 3 else None
        out.append((t, int(r[1] * a.len_scale), int(r[2] * a.len_scale), 0, blocks))
    return out


# ---------------------------------------------------------------- client

async def post_stream(host, port, path, body, key, timeout):
    """POST a streaming request; returns (status, t_first, t_end, tokens, err)."""
    data = json.dumps(body).encode()
    hdr = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(data)}\r\nConnection: close\r\n")
    if key:
        hdr += f"Authorization: Bearer {key}\r\n"
    r, w = await asyncio.open_connection(host, port)
    t_first = None
    tokens = 0
    try:
        w.write(hdr.encode() + b"\r\n" + data)
        await w.drain()
        status_line = await asyncio.wait_for(r.readline(), timeout)
        status = int(status_line.split()[1])
        chunked = False
        while True:
            line = await r.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        if status != 200:
            await r.read()
            return status, None, time.monotonic(), 0, None
        buf = b""

        async def chunks():
            if not chunked:
                while True:
                    d = await r.read(65536)
                    if not d:
                        return
                    yield d
            while True:
                size = int((await r.readline()).strip() or b"0", 16)
                if size == 0:
                    return
                d = await r.readexactly(size + 2)
                yield d[:-2]

        async for d in chunks():
            buf += d
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                if not ev.startswith(b"data: "):
                    continue
                payload = ev[6:]
                if payload == b"[DONE]":
                    continue
                o = json.loads(payload)
                if "error" in o:
                    return 500, t_first, time.monotonic(), tokens, o["error"]["message"]
                if o.get("usage"):
                    tokens = o["usage"]["completion_tokens"]
                if o.get("choices") and t_first is None:
                    t_first = time.monotonic()  # the first token's chunk
        return 200, t_first, time.monotonic(), tokens, None
    finally:
        w.close()


def metrics(url):
    try:
        text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    except OSError:
        return {}
    m = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        k, v = line.rsplit(" ", 1)
        try:
            m[k] = float(v)
        except ValueError:
            pass
    return m


METRICS_TRACE = ("llmkit_requests_waiting", "llmkit_requests_running",
                 "llmkit_batch_cap", "llmkit_kv_blocks_reserved",
                 "llmkit_kv_blocks_used")


async def sample_metrics(a, start):
    """Every --metrics-every seconds, one line of what the server's policy
    is doing: seconds since the start, then the gauges of METRICS_TRACE."""
    loop = asyncio.get_running_loop()
    with open(a.metrics_trace, "w") as f:
        f.write("# t " + " ".join(k[len("llmkit_"):] for k in METRICS_TRACE) + "\n")
        while True:
            t = time.monotonic() - start
            m = await loop.run_in_executor(None, metrics, a.url)
            if m:
                f.write("%.2f %s\n" % (t, " ".join("%g" % m.get(k, float("nan"))
                                                    for k in METRICS_TRACE)))
                f.flush()
            await asyncio.sleep(max(0.0, a.metrics_every - (time.monotonic() - start - t)))


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, int(math.ceil(q * len(xs))) - 1))
    return xs[i]


async def run(a):
    rng = random.Random(a.seed)
    host, port = a.url.split("://", 1)[1].rstrip("/").split(":")
    port = int(port)
    rows = support_text(os.path.join(DATA, "support", "bitext-customer-support.csv"))
    # characters per token of this server's tokenizer
    sample = "".join(q + " " + r for q, r in rows[:20])[:200]
    req = urllib.request.Request(a.url + "/v1/completions",
                                 data=json.dumps({"prompt": sample, "max_tokens": 1}).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": "Bearer " + a.api_key}
                                             if a.api_key else {})})
    n = json.load(urllib.request.urlopen(req, timeout=60))["usage"]["prompt_tokens"]
    cpt = len(sample) / max(1, n)
    prompts = Prompts(rows, cpt, rng)
    reqs = shape_requests(a, rng)
    if a.clients:
        reqs = reqs or [(0, a.prompt_mean, a.output_mean, 0, None)]
    block_tok = max(1, int(512 * a.len_scale))
    results = []

    def body_for(p, o, pri, blocks, i):
        if blocks:
            text = "".join(prompts.make(block_tok, key="blk%d" % h) for h in blocks)
            text = text[:int(p * cpt)]
        else:
            text = prompts.make(p)
        b = {"prompt": text, "max_tokens": o, "temperature": a.temperature,
             "ignore_eos": True, "stream": True, "seed": i,
             "stream_options": {"include_usage": True}}
        if pri:
            b["priority"] = pri
        return b

    async def one(i, r, t_sched):
        _, p, o, pri, blocks = r
        b = body_for(p, o, pri, blocks, i)
        t0 = time.monotonic()
        try:
            st, tf, te, ntok, err = await post_stream(host, port, "/v1/completions", b,
                                                      a.api_key, a.timeout)
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            st, tf, te, ntok, err = 0, None, time.monotonic(), 0, str(e)
        results.append({"i": i, "t_sched": t_sched, "t_send": t0, "t_first": tf,
                        "t_end": te, "status": st, "tokens": ntok, "want": o,
                        "prompt": p, "priority": pri, "err": err})

    if a.start_at:
        await asyncio.sleep(max(0.0, a.start_at - time.time()))
    m0 = metrics(a.url)
    start = time.monotonic()
    sampler = None
    if a.metrics_trace:
        sampler = asyncio.create_task(sample_metrics(a, start))
    if a.clients:
        # closed loop for --duration seconds; what is still running then is
        # abandoned (its connection closed: the server cancels it) and not
        # counted
        counter = iter(range(10 ** 9))

        async def client():
            while True:
                i = next(counter)
                await one(i, reqs[i % len(reqs)], time.monotonic() - start)
        tasks = [asyncio.create_task(client()) for _ in range(a.clients)]
        await asyncio.sleep(a.duration)
        loop = asyncio.get_running_loop()
        m_end = await loop.run_in_executor(None, metrics, a.url)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        wall = a.duration
    else:
        tasks = []
        for i, r in enumerate(reqs):
            delay = start + r[0] - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, r, r[0])))
        await asyncio.gather(*tasks)
        wall = time.monotonic() - start
        m_end = None
    if sampler:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    await asyncio.sleep(0.5)     # let the server see the abandoned ones go
    m1 = m_end or metrics(a.url)
    return summarize(a, results, wall, m0, m1)


def summarize(a, res, wall, m0, m1):
    ok = [r for r in res if r["status"] == 200 and r["t_first"] is not None]

    def stats(rs):
        ttft = [r["t_first"] - r["t_send"] for r in rs]
        tpot = [(r["t_end"] - r["t_first"]) / (r["tokens"] - 1) for r in rs if r["tokens"] > 1]
        e2e = [r["t_end"] - r["t_send"] for r in rs]
        slo = [1 for r in rs if r["t_first"] - r["t_send"] <= a.slo_ttft and
               (r["tokens"] <= 1 or (r["t_end"] - r["t_first"]) / (r["tokens"] - 1) <= a.slo_tpot)]
        d = {"n": len(rs)}
        for name, xs in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
            for q in (50, 95, 99):
                d[f"{name}_p{q}"] = pct(xs, q / 100)
        d["slo"] = len(slo) / len(rs) if rs else float("nan")
        return d

    def delta(k):
        return m1.get(k, 0) - m0.get(k, 0)

    s = {"shape": a.shape if not a.clients else "closed-%d" % a.clients,
         "label": a.label, "requests": len(res), "ok": len(ok),
         "errors": len(res) - len(ok),
         "rejected_429": sum(1 for r in res if r["status"] == 429),
         "wall_s": wall, "gen_tokens": sum(r["tokens"] for r in ok),
         "policy": None}
    s["tok_per_s"] = s["gen_tokens"] / wall if wall > 0 else 0
    # all tokens the server generated in the window (also for requests
    # still running at its end): the throughput of a closed loop
    s["server_tok_per_s"] = delta("llmkit_generation_tokens_total") / wall if wall > 0 else 0
    s["req_per_s"] = len(ok) / wall if wall > 0 else 0
    # SLO attainment counts every request: a refused one missed it
    st = stats(ok)
    st["slo"] = st["slo"] * len(ok) / len(res) if res else float("nan")
    s.update(st)
    by = {}
    for pri in sorted({r["priority"] for r in res}):
        rs = [r for r in ok if r["priority"] == pri]
        if rs:
            by[str(pri)] = stats(rs)
    if len(by) > 1:
        s["by_priority"] = by
    steps = delta("llmkit_batch_size_count")
    s["server"] = {
        "mean_batch": delta("llmkit_batch_size_sum") / steps if steps else 0,
        "mean_step_ms": 1000 * delta("llmkit_step_seconds_sum") / steps if steps else 0,
        "preemptions": delta("llmkit_preemptions_total"),
        "prefix_cached_tokens": delta("llmkit_prompt_tokens_cached_total"),
        "prompt_tokens": delta("llmkit_prompt_tokens_total"),
        "decode_s": delta("llmkit_decode_seconds_total"),
        "sched_s": delta("llmkit_sched_seconds_total"),
        "sample_s": delta("llmkit_sample_seconds_total"),
        "busy_s": delta("llmkit_busy_seconds_total"),
        "http_s": delta("llmkit_http_seconds_total"),
    }
    sv = s["server"]
    sv["overhead"] = (sv["http_s"] + sv["sched_s"]) / sv["busy_s"] if sv["busy_s"] else 0
    for k, v in m1.items():
        if k.startswith("llmkit_info{"):
            s["policy"] = k.split('policy="', 1)[1].split('"', 1)[0]
    if a.trace:
        with open(a.trace, "w") as f:
            for r in sorted(res, key=lambda r: r["t_sched"]):
                f.write("%.3f %.4f %.4f %d %d\n" % (
                    r["t_sched"],
                    (r["t_first"] - r["t_send"]) if r["t_first"] else -1,
                    r["t_end"] - r["t_send"], r["priority"], r["status"]))
    return s


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--api-key")
    p.add_argument("--shape", default="poisson")
    p.add_argument("--label", default="")
    p.add_argument("--rate", type=float, default=2.0, help="mean requests/s")
    p.add_argument("--duration", type=float, default=30)
    p.add_argument("--clients", type=int, default=0, help="closed loop with N clients")
    p.add_argument("--time-scale", type=float, default=0,
                   help="trace seconds per replay second (default: from --rate)")
    p.add_argument("--len-scale", type=float, default=0.125)
    p.add_argument("--prompt-mean", type=float, default=64)
    p.add_argument("--output-mean", type=float, default=32)
    p.add_argument("--max-prompt", type=int, default=384)
    p.add_argument("--max-output", type=int, default=128)
    p.add_argument("--day-s", type=float, default=120, help="servegen: seconds per day")
    p.add_argument("--temperature", type=float, default=0)
    p.add_argument("--slo-ttft", type=float, default=2.0, help="seconds")
    p.add_argument("--slo-tpot", type=float, default=0.25, help="seconds")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start-at", type=float, default=0,
                   help="start at this Unix time (to line up with a season)")
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--trace", help="per-request lines: t_scheduled ttft e2e priority status")
    p.add_argument("--metrics-trace",
                   help="sample /metrics during the run: t waiting running batch_cap "
                        "kv_blocks_reserved kv_blocks_used per line")
    p.add_argument("--metrics-every", type=float, default=0.25, help="seconds")
    a = p.parse_args()
    s = asyncio.run(run(a))
    out = json.dumps(s, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(out + "\n")
    print(out)


if __name__ == "__main__":
    main()
