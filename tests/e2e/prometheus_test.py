#!/usr/bin/python3
"""A real Prometheus (Debian's `prometheus`) scrapes a running imagegen-server; after one
generation, its HTTP API must show the request counter and the step histogram moved.

Usage: prometheus_test.py BUILD_DIR BUNDLE_DIR
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(prom_port: int, expr: str) -> float:
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        data = json.load(r)
    result = data["data"]["result"]
    return sum(float(sample["value"][1]) for sample in result) if result else 0.0


def main() -> int:
    build, bundle = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp()
    grpc_port, metrics_port, prom_port = free_port(), free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(
            [f"{build}/server/imagegen-server", f"--listen=127.0.0.1:{grpc_port}",
             f"--metrics_listen=127.0.0.1:{metrics_port}", f"--model_dir={bundle}", "--request_log=false"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "server.log"), "w")))
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: imagegen
    static_configs:
      - targets: ["127.0.0.1:{metrics_port}"]
""")
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "prometheus.log"), "w")))

        client = f"{build}/client/imagegen"
        for _ in range(120):
            if subprocess.run([client, "models", "--server", f"127.0.0.1:{grpc_port}"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        # Wait until Prometheus has scraped the target once (up == 1) before generating.
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if query(prom_port, 'up{job="imagegen"}') == 1:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("prometheus_test: FAIL: Prometheus never scraped imagegen")
        before = query(prom_port, 'sum(imagegen_requests_total{outcome="ok"})')
        subprocess.run([client, "generate", "--server", f"127.0.0.1:{grpc_port}", "--prompt", "a bag",
                        "--steps", "5", "--out", os.path.join(tmp, "bag.png")], check=True,
                       capture_output=True)
        deadline = time.time() + 30
        requests = steps = 0.0
        while time.time() < deadline:
            requests = query(prom_port, 'sum(imagegen_requests_total{outcome="ok"})')
            steps = query(prom_port, "sum(imagegen_step_duration_seconds_count)")
            if requests >= before + 1 and steps >= 5:
                print(f"prometheus_test: PASS: Prometheus reads requests_total{{ok}} {requests:g}, "
                      f"step_duration_seconds_count {steps:g}")
                return 0
            time.sleep(0.5)
        print(f"prometheus_test: FAIL: requests {requests} (before {before}), steps {steps}")
        return 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
