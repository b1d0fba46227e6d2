"""Serving benchmark: the `flex-ml serve` service beside a naive FastAPI + `model.predict` baseline,
both on 127.0.0.1 with the load generator in this process. Prints one JSON object (about 75 s).

    .venv/bin/python benchmarks/serving.py [--model artifacts/model] [--client raw|httpx]

Measures, one service at a time so they never share the 2 cores:
- flex_ml: cold start (process start until GET /v1/ready answers 200), scores through HTTP against
  the golden examples, throughput at saturation (closed loop, 16 concurrent clients, 8 s), latency of
  one client alone, single-record latency at a fixed offered rate of 200 rps for 10 s (open loop:
  sends scheduled at fixed intervals whatever the answers, latency counted from the scheduled send
  time, so queueing shows), and a 1,000-record batch in one request (30 requests).
- naive baseline: a minimal FastAPI app written to a temporary file at run time, loading
  `model.keras` and calling `model.predict` per request; same request body, same runs. The
  throughput ratio divides by its best rate (16 clients or 1).
- echo floor: the same fixed-rate run against two servers that answer every request with a fixed
  body of the same size as flex_ml's: a bare uvloop protocol (the floor of this client, the event
  loop and the kernel's loopback TCP on this machine) and uvicorn + httptools + uvloop with an empty
  ASGI app (the floor of the server stack flex_ml runs on). flex_ml's latency less these is its own.
The load generator is a minimal HTTP/1.1 keep-alive client on asyncio (uvloop), so that it leaves the
CPU to the server; `--client httpx` uses httpx.AsyncClient instead (it costs a few ms of CPU per request
and can saturate a core). CPU use of the client, the server and everything else on the machine is
reported per phase: other work skews every number here.

Targets: at 200 rps p50 < 2 ms and p99 < 10 ms, saturation throughput >= 30x the naive baseline,
batch-1000 p50 < 20 ms, cold start < 6 s, HTTP scores equal to the golden ones within 1e-6.
"""
import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

try:
    import uvloop
    arun = uvloop.run  # a faster event loop for the load generator, as the services use
except ImportError:
    arun = asyncio.run

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"  # loopback only, never any other address
JSON = {"content-type": "application/json"}

NAIVE_APP = '''\
"""Naive baseline: load model.keras, call model.predict on every request."""
import os
from pathlib import Path

import flex_ml.model  # registers the custom layers
import keras
from fastapi import FastAPI
from flex_ml.features import to_model_inputs
from flex_ml.model import as_tensors
from flex_ml.schema import load_schema

M = Path(os.environ["NAIVE_MODEL_DIR"])
schema = load_schema(M / "schema.yaml")
model = keras.models.load_model(M / "model.keras")
app = FastAPI()


@app.get("/v1/ready")
def ready():
    return {"ready": True}


@app.post("/v1/predict")
def predict(body: dict):
    scores = model.predict(as_tensors(to_model_inputs(body["records"], schema)), verbose=0).reshape(-1)
    return {"predictions": [{"score": float(s)} for s in scores]}
'''


ECHO_APP = '''\
"""Echo floor: answer every HTTP/1.1 request with a fixed JSON body. argv: raw|uvicorn, port, body."""
import asyncio, sys

kind, port, BODY = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
HEAD = b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: %d\\r\\n\\r\\n" % len(BODY)

if kind == "raw":  # a bare protocol: parse just enough of the request, write the answer in one go
    import uvloop

    class Echo(asyncio.Protocol):
        def connection_made(self, transport): self.transport, self.buf = transport, b""
        def data_received(self, data):
            self.buf += data
            while (end := self.buf.find(b"\\r\\n\\r\\n")) >= 0:
                head = self.buf[:end].lower()
                at = head.find(b"content-length:")
                n = int(head[at + 15:].split(b"\\r\\n", 1)[0]) if at >= 0 else 0
                if len(self.buf) < end + 4 + n: return
                self.buf = self.buf[end + 4 + n:]
                self.transport.write(HEAD + BODY)

    async def main():
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port)
        await server.serve_forever()
    uvloop.run(main())
else:  # the server stack flex_ml runs on, with an ASGI app that does nothing
    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http": return
        while (await receive()).get("more_body"): pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
        await send({"type": "http.response.body", "body": BODY})
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False,
                log_level="warning", lifespan="off")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    "User + system CPU seconds of process `pid` so far (all its threads)."
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    "A service in a subprocess, with its output in a log file; `stop` ends it (terminate, then kill)."
    def __init__(self, name, cmd, env, log_dir):
        self.name, self.port = name, free_port()
        self.cmd = [c.replace("{port}", str(self.port)) for c in cmd]
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://{HOST}:{self.port}"

    def wait_ready(self, timeout=90.0) -> float:
        "Seconds from process start until GET /v1/ready answers 200."
        with httpx.Client(timeout=1.0) as c:
            while time.perf_counter() - self.t0 < timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
                try:
                    if c.get(f"{self.url}/v1/ready").status_code == 200:
                        return time.perf_counter() - self.t0
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.tail()}")

    def cpu(self) -> float: return cpu_seconds(self.proc.pid)

    def tail(self, n=3000) -> str:
        self.log.flush()
        return self.log_path.read_text()[-n:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try: self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill(); self.proc.wait()
        self.log.close()


def machine_busy_seconds() -> float:
    "CPU seconds the whole machine has spent busy (all cores, from /proc/stat)."
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def pct(xs, qs=(50, 90, 99)) -> dict:
    "Percentiles of seconds `xs` in milliseconds."
    if not xs: return {f"p{q}": None for q in qs}
    v = np.percentile(np.asarray(xs) * 1000, qs)
    return {f"p{q}": round(float(x), 3) for q, x in zip(qs, v)}


class Usage:
    "Cores used over a phase by the client (this process), the server, and everything else on the machine."
    def __init__(self, server): self.server = server
    def __enter__(self):
        self.w, self.c, self.s, self.m = time.perf_counter(), time.process_time(), self.server.cpu(), machine_busy_seconds()
        return self
    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w
        self.client = (time.process_time() - self.c) / self.wall
        self.srv = (self.server.cpu() - self.s) / self.wall
        self.other = max(0.0, (machine_busy_seconds() - self.m) / self.wall - self.client - self.srv)
    def as_dict(self):
        return {"client_cpu_cores": round(self.client, 2), "server_cpu_cores": round(self.srv, 2),
                "other_cpu_cores": round(self.other, 2)}


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, up to `pool` connections: POST bytes, get
    (status, body). Far cheaper per request than httpx, so the load generator leaves the CPU to the server."""
    kind = "raw asyncio HTTP/1.1 keep-alive client"

    def __init__(self, url: str, pool: int):
        u = httpx.URL(url)
        self.host, self.port, self.path = u.host, u.port, u.raw_path.decode()
        self.slots = asyncio.Queue()
        for _ in range(pool): self.slots.put_nowait(None)  # None: a slot without a connection yet
        self.conns = []

    async def post(self, body: bytes) -> tuple[int, bytes]:
        conn = await self.slots.get()
        try:
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port); self.conns.append(conn)
            reader, writer = conn
            writer.write(f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(head[0].split()[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
            if "content-length" in headers:
                data = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding") == "chunked":
                data = b""
                while size := int((await reader.readline()).strip(), 16):
                    data += (await reader.readexactly(size + 2))[:-2]
                await reader.readline()
            else:
                raise ValueError("response without Content-Length")
            if headers.get("connection") == "close": writer.close(); conn = None
        except BaseException:
            if conn is not None: conn[1].close()
            self.slots.put_nowait(None)
            raise
        self.slots.put_nowait(conn)
        return status, data

    async def __aenter__(self): return self
    async def __aexit__(self, *exc):
        for _, w in self.conns: w.close()


class HttpxClient:
    "The same interface on `httpx.AsyncClient` (`--client httpx`)."
    kind = "httpx.AsyncClient"

    def __init__(self, url: str, pool: int):
        self.url = url
        self.c = httpx.AsyncClient(limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
                                   timeout=httpx.Timeout(60.0))

    async def post(self, body: bytes) -> tuple[int, bytes]:
        r = await self.c.post(self.url, content=body, headers=JSON)
        return r.status_code, r.content

    async def __aenter__(self): return self
    async def __aexit__(self, *exc): await self.c.aclose()


CLIENTS = {"raw": RawClient, "httpx": HttpxClient}
Client = RawClient  # set from --client in main
ERRORS = (OSError, ValueError, asyncio.IncompleteReadError, httpx.HTTPError)


async def warm(url: str, body: bytes, n: int = 200, concurrency: int = 4):
    async with Client(url, concurrency) as c:
        async def w():
            for _ in range(n // concurrency): await c.post(body)
        await asyncio.gather(*(w() for _ in range(concurrency)))


class Ticker:
    """Wake-ups at `t0 + i / rate` (perf_counter seconds) for the event loop, from a periodic Linux timerfd
    (CLOCK_MONOTONIC, the clock of `time.perf_counter`): the kernel keeps the schedule to the microsecond
    and the loop sleeps in epoll in between (no spinning). asyncio's own timers, uvloop's included, work in
    whole milliseconds, so a send scheduled through `asyncio.sleep` starts up to ~1 ms late, and that
    lateness, the client's and not the server's, would count in every latency. None where there is no timerfd."""
    def __init__(self, t0: float, rate: float):
        import ctypes, ctypes.util
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.timerfd_create(1, 0o4000 | 0o2000000)  # CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC
        if self.fd < 0: raise OSError(ctypes.get_errno(), "timerfd_create")
        ts = lambda ns: (ctypes.c_long * 2)(ns // 10**9, ns % 10**9)
        self.period_ns, self.t0_ns = round(1e9 / rate), round(t0 * 1e9)
        spec = (ctypes.c_long * 4)(*ts(self.period_ns), *ts(self.t0_ns))  # it_interval, it_value (absolute)
        if libc.timerfd_settime(self.fd, 1, spec, None) != 0:  # TFD_TIMER_ABSTIME
            os.close(self.fd); raise OSError(ctypes.get_errno(), "timerfd_settime")

    def scheduled(self, i: int) -> float: return (self.t0_ns + i * self.period_ns) / 1e9

    def expirations(self) -> int:
        "How many ticks have passed since the last call (0 if none)."
        try: return int.from_bytes(os.read(self.fd, 8), "little")
        except BlockingIOError: return 0

    def close(self): os.close(self.fd)


async def open_loop(url: str, body: bytes, rate: float, seconds: float, grace: float, pool: int = 32) -> dict:
    """Send `rate * seconds` requests at fixed intervals whatever the answers; latency is counted from each
    request's scheduled send time, so a queue that builds up (in the client's pool of `pool` connections or
    in the server) counts, and so does the client's own lateness (`client_send_lag_ms`). Sends are timed by
    a `Ticker` (timerfd) where there is one, else by `asyncio.sleep`. Requests still open `grace` seconds
    after the last send are cancelled."""
    n = int(rate * seconds)
    lat, lags, errors, done_at = [], [], [0], []
    loop = asyncio.get_running_loop()
    async with Client(url, pool) as c:
        async def one(ts):
            try:
                ok = (await c.post(body))[0] == 200
            except ERRORS:
                ok = False
            if ok:
                now = time.perf_counter(); lat.append(now - ts); done_at.append(now)
            else:
                errors[0] += 1
        t0 = time.perf_counter() + 0.05
        tasks = []
        def launch(ts):
            lags.append(max(0.0, time.perf_counter() - ts))
            tasks.append(asyncio.create_task(one(ts)))
        try: ticker = Ticker(t0, rate)
        except (OSError, AttributeError): ticker = None
        if ticker is not None:
            t0, all_sent = ticker.scheduled(0), loop.create_future()
            def on_tick():
                for _ in range(ticker.expirations()):
                    if len(tasks) < n: launch(ticker.scheduled(len(tasks)))
                if len(tasks) >= n and not all_sent.done():
                    loop.remove_reader(ticker.fd); all_sent.set_result(None)
            loop.add_reader(ticker.fd, on_tick)
            try: await all_sent
            finally: loop.remove_reader(ticker.fd); ticker.close()
        else:
            for i in range(n):
                ts = t0 + i / rate
                delay = ts - time.perf_counter()
                if delay > 0: await asyncio.sleep(delay)
                launch(ts)
        sent_for = time.perf_counter() - t0
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for t in pending: t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    achieved = len(lat) / (max(done_at) - t0) if done_at else 0.0
    return {"offered_rps": rate, "requests": n, "ok": len(lat), "errors": errors[0], "unfinished": len(pending),
            "send_rate_rps": round(n / sent_for, 1), "achieved_rps": round(achieved, 1),
            "sustained": errors[0] == 0 and not pending and achieved >= 0.95 * rate,
            "latency_ms": pct(lat), "client_send_lag_ms": pct(lags),
            "send_timer": "timerfd" if ticker is not None else "asyncio.sleep"}


async def closed_loop(url: str, body: bytes, concurrency: int, seconds: float) -> dict:
    "`concurrency` clients, each sending its next request when the last answers, for `seconds`."
    lat, errors = [], [0]
    async with Client(url, concurrency) as c:
        end = time.perf_counter() + seconds
        async def worker():
            while time.perf_counter() < end:
                t = time.perf_counter()
                try:
                    ok = (await c.post(body))[0] == 200
                except ERRORS:
                    ok = False
                if ok: lat.append(time.perf_counter() - t)
                else: errors[0] += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"concurrency": concurrency, "seconds": round(wall, 2), "ok": len(lat), "errors": errors[0],
            "rps": round(len(lat) / wall, 1), "latency_ms": pct(lat)}


async def batch_latency(url: str, body: bytes, n_records: int, reps: int) -> dict:
    "Latency of `reps` requests of `n_records` records each, one at a time (after 3 untimed)."
    lat, errors = [], 0
    async with Client(url, 1) as c:
        for i in range(reps + 3):
            t = time.perf_counter()
            status, data = await c.post(body)
            dt = time.perf_counter() - t
            ok = status == 200 and len(json.loads(data)["predictions"]) == n_records
            if i < 3: continue
            if ok: lat.append(dt)
            else: errors += 1
    return {"records": n_records, "requests": reps, "errors": errors, "latency_ms": pct(lat, (50, 99)),
            "records_per_s": round(n_records / float(np.median(lat))) if lat else None}


def predict_server_mean_ms(metrics_text: str) -> tuple[float, float]:
    "(sum seconds, count) of flex_ml's /v1/predict latency histogram."
    get = lambda k: float(re.search(rf'^flex_ml_request_seconds_{k}{{path="/v1/predict"}} (\S+)$', metrics_text, re.M).group(1))
    return get("sum"), get("count")


def run_phases(server: Server, body: bytes, args, flex: bool) -> dict:
    """Closed-loop throughput, then open-loop latency, of single-record requests to `server` (in that order:
    a fixed-rate run the server cannot keep up with leaves requests queued in it)."""
    url = f"{server.url}/v1/predict"
    out = {}
    arun(warm(url, body, n=200 if flex else 8))
    # one client, one request at a time: the service time without queueing (and the naive baseline's best case)
    runs = [("saturation", args.concurrency, args.sat_seconds), ("one_client", 1, 3.0 if flex else 5.0)]
    for name, conc, secs in runs:
        with Usage(server) as u:
            r = arun(closed_loop(url, body, conc, secs))
        out[name] = r | u.as_dict()
    m0 = predict_server_mean_ms(httpx.get(f"{server.url}/metrics").text) if flex else None
    with Usage(server) as u:
        r = arun(open_loop(url, body, args.rate, args.seconds, grace=args.grace))
    out["fixed_rate"] = r | u.as_dict()
    if flex:  # the service's own view (its middleware's histogram): time inside the app, queueing in the loop included
        m1 = predict_server_mean_ms(httpx.get(f"{server.url}/metrics").text)
        out["fixed_rate"]["server_side_mean_ms"] = round((m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * 1000, 3)
    return out


def echo_floor(tmp: str, env: dict, body: bytes, answer: bytes, args) -> dict:
    "The fixed-rate run against the two echo servers (see the module docstring), one at a time."
    path = Path(tmp) / "echo_app.py"
    path.write_text(ECHO_APP)
    out = {}
    for kind in ("raw", "uvicorn"):
        srv = Server(f"echo_{kind}", [sys.executable, str(path), kind, "{port}", answer.decode()], env, tmp)
        try:
            srv.wait_ready()
            url = f"{srv.url}/v1/predict"
            arun(warm(url, body))
            with Usage(srv) as u:
                r = arun(open_loop(url, body, args.rate, args.seconds, grace=args.grace))
            out["uvloop_protocol" if kind == "raw" else "uvicorn_empty_asgi"] = r | u.as_dict()
        finally:
            srv.stop()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("artifacts/model"), help="export folder (relative to the repo root)")
    ap.add_argument("--rate", type=float, default=200.0, help="offered requests/s of the fixed-rate run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the fixed-rate run")
    ap.add_argument("--grace", type=float, default=2.0, help="seconds to wait for open requests after the last send")
    ap.add_argument("--concurrency", type=int, default=16, help="clients of the saturation run")
    ap.add_argument("--sat-seconds", type=float, default=8.0, help="length of the saturation run")
    ap.add_argument("--client", choices=sorted(CLIENTS), default="raw",
                    help="load generator: a minimal asyncio HTTP/1.1 client (default) or httpx.AsyncClient")
    ap.add_argument("--batch-reps", type=int, default=30, help="timed requests of the batch-1000 run")
    ap.add_argument("--log", choices=("none", "sqlite"), default="none",
                    help="flex_ml's prediction log: none, or a SQLite file in a temporary folder (each decision committed before it is answered)")
    ap.add_argument("--flex-only", action="store_true", help="measure flex_ml only (no echo floor, no naive baseline)")
    args = ap.parse_args()
    global Client
    Client = CLIENTS[args.client]
    model = args.model if args.model.is_absolute() else ROOT / args.model
    golden = json.loads((model / "golden_examples.json").read_text())
    body = json.dumps({"records": [golden[0]["record"]]}).encode()
    batch = [golden[i % len(golden)]["record"] for i in range(1000)]
    batch_body = json.dumps({"records": batch}).encode()
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", TF_CPP_MIN_LOG_LEVEL="2", NAIVE_MODEL_DIR=str(model))
    result = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "host": HOST},
              "load_generator": f"{Client.kind}, asyncio on {'uvloop' if arun is not asyncio.run else 'asyncio'}, in this process",
              "model": str(model), "golden_examples": len(golden)}
    tmp = tempfile.TemporaryDirectory(prefix="flex-ml-serving-bench-")
    servers = []
    try:
        # flex_ml service
        log_args = ["--log-db", str(Path(tmp.name) / "predictions.db")] if args.log == "sqlite" else []
        result["prediction_log"] = args.log
        flex = Server("flex_ml", [str(BIN / "flex-ml"), "serve", "--model", str(model), "--host", HOST, "--port", "{port}", *log_args],
                      env, tmp.name)
        servers.append(flex)
        cold = flex.wait_ready()
        r = httpx.post(f"{flex.url}/v1/predict", json={"records": [g["record"] for g in golden]}, timeout=30)
        r.raise_for_status()
        got = np.array([p["score"] for p in r.json()["predictions"]])
        gap = float(np.max(np.abs(got - np.array([g["expected_score"] for g in golden]))))
        f = {"cold_start_s": round(cold, 3), "golden_max_abs_gap": gap} | run_phases(flex, body, args, flex=True)
        with Usage(flex) as u:
            b = arun(batch_latency(f"{flex.url}/v1/predict", batch_body, 1000, args.batch_reps))
        f["batch_1000"] = b | u.as_dict()
        result["flex_ml"] = f
        answer = httpx.post(f"{flex.url}/v1/predict", content=body, headers=JSON).content
        flex.stop(); servers.remove(flex)
        if args.flex_only:
            fr = f["fixed_rate"]["latency_ms"]
            result["targets"] = {"p50_under_2ms_at_200rps": fr["p50"] is not None and fr["p50"] < 2,
                                 "p99_under_10ms_at_200rps": fr["p99"] is not None and fr["p99"] < 10,
                                 "golden_parity_1e-6": f["golden_max_abs_gap"] <= 1e-6}
            print(json.dumps(result, indent=2))
            return

        # echo floor: the same fixed-rate run against servers that do no work
        result["echo_floor"] = echo_floor(tmp.name, env, body, answer, args)

        # naive baseline, alone on the machine
        app_dir = Path(tmp.name) / "naive"; app_dir.mkdir()
        (app_dir / "naive_app.py").write_text(NAIVE_APP)
        naive = Server("naive", [sys.executable, "-m", "uvicorn", "naive_app:app", "--app-dir", str(app_dir),
                                 "--host", HOST, "--port", "{port}", "--no-access-log", "--log-level", "warning"],
                       env, tmp.name)
        servers.append(naive)
        n = {"cold_start_s": round(naive.wait_ready(), 3)}
        r = httpx.post(f"{naive.url}/v1/predict", json={"records": [g["record"] for g in golden]}, timeout=30)
        r.raise_for_status()
        got = np.array([p["score"] for p in r.json()["predictions"]])
        n["golden_max_abs_gap"] = float(np.max(np.abs(got - np.array([g["expected_score"] for g in golden]))))
        n |= run_phases(naive, body, args, flex=False)
        result["naive_baseline"] = n
        naive.stop(); servers.remove(naive)
    finally:
        for s in servers: s.stop()
        tmp.cleanup()

    f, n = result["flex_ml"], result["naive_baseline"]
    naive_best = max(n["saturation"]["rps"], n["one_client"]["rps"])
    ratio = f["saturation"]["rps"] / naive_best if naive_best else float("inf")
    result["throughput_ratio_flex_over_naive"] = round(ratio, 1)
    result["throughput_ratio_basis"] = (f"flex_ml at {args.concurrency} clients over the naive baseline's best "
                                        f"({naive_best} rps, of {args.concurrency} clients and 1 client)")
    busy = {f"{svc}.{ph}": r[ph]["client_cpu_cores"] for svc, r in (("flex_ml", f), ("naive", n))
            for ph in ("fixed_rate", "saturation") if r[ph]["client_cpu_cores"] >= 0.85}
    result["client_cpu_note"] = (
        f"the load generator ({Client.kind}, one process) used >= 0.85 of a core in {busy}: there the client, "
        "not the service, may cap throughput and add latency" if busy else
        "the load generator stayed below 0.85 of a core in every phase")
    phases = {f"{svc}.{ph}": r[ph]["other_cpu_cores"] for svc, r in (("flex_ml", f), ("naive", n))
              for ph in ("fixed_rate", "saturation")} | {"flex_ml.batch_1000": f["batch_1000"]["other_cpu_cores"]}
    other = {k: v for k, v in phases.items() if v >= 0.2}
    if other:
        result["machine_note"] = (f"other processes used >= 0.2 of a core during {other} (of {os.cpu_count()}): "
                                  "those numbers are pessimistic; rerun on a quiet machine")
    if not n["fixed_rate"]["sustained"]:
        result["naive_note"] = (f"the naive baseline could not sustain {args.rate:g} rps: it answered "
                                f"{n['fixed_rate']['achieved_rps']} rps; its latencies include the queue that built up")
    fr = f["fixed_rate"]["latency_ms"]
    floor = result["echo_floor"]["uvloop_protocol"]["latency_ms"]
    result["echo_floor_note"] = (
        f"at {args.rate:g} rps a server that does no work answers in p50 {floor['p50']} ms, p99 {floor['p99']} ms "
        f"(client, event loop and loopback TCP); uvicorn with an empty app: p50 "
        f"{result['echo_floor']['uvicorn_empty_asgi']['latency_ms']['p50']} ms; flex_ml: p50 {fr['p50']} ms")
    result["targets"] = {
        "p50_under_2ms_at_200rps": fr["p50"] is not None and fr["p50"] < 2,
        "p99_under_10ms_at_200rps": fr["p99"] is not None and fr["p99"] < 10,
        "throughput_ratio_at_least_30": ratio >= 30,
        "batch_1000_p50_under_20ms": f["batch_1000"]["latency_ms"]["p50"] is not None and f["batch_1000"]["latency_ms"]["p50"] < 20,
        "cold_start_under_6s": f["cold_start_s"] < 6,
        "golden_parity_1e-6": f["golden_max_abs_gap"] <= 1e-6,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
