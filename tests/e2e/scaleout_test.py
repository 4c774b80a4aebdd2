#!/usr/bin/python3
"""Three imagegen servers behind one client channel with gRPC's round_robin policy and the
retry policy the README gives client authors: work spreads over all three (their metrics say
so), and when one replica gets SIGTERM in the middle of the load no request fails (a draining
replica answers UNAVAILABLE before any response, which the client retries on another).

Usage: scaleout_test.py BUILD_DIR REPO_ROOT BUNDLE_DIR
"""
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import python_client  # noqa: E402  (proto compilation)

import grpc  # noqa: E402

SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    # Client-side health checking: a draining replica (NOT_SERVING) leaves the picker at once, so
    # no call reaches it while its gRPC server shuts down (such a call would end CANCELLED).
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [{
        "name": [{"service": "imagegen.v1.ImageGenerator"}],
        "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "1s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ok_requests(metrics_port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return sum(float(m) for m in re.findall(r'^imagegen_requests_total\{[^}]*outcome="ok"[^}]*\} (\S+)', text, re.M))


def main():
    build, root, bundle = sys.argv[1:4]
    tmp = tempfile.mkdtemp()
    python_client.compile_protos(root, tmp)
    stubs = python_client.load_stubs(tmp)
    pb, rpc = stubs["pb"], stubs["rpc"]
    servers = []
    for i in range(3):
        port, metrics = free_port(), free_port()
        proc = subprocess.Popen(
            [f"{build}/server/imagegen-server", f"--listen=127.0.0.1:{port}", f"--metrics_listen=127.0.0.1:{metrics}",
             f"--model_dir={bundle}", "--drain_timeout_s=60", "--request_log=false"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, f"server{i}.log"), "w"))
        servers.append({"port": port, "metrics": metrics, "proc": proc})
    try:
        for s in servers:  # ready when each answers ListModels (UNAVAILABLE while loading)
            stub = rpc.ImageGeneratorStub(grpc.insecure_channel(f"127.0.0.1:{s['port']}"))
            deadline = time.time() + 60
            while True:
                try:
                    stub.ListModels(pb.ListModelsRequest(), timeout=5, wait_for_ready=True)
                    break
                except grpc.RpcError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.2)
        target = "ipv4:" + ",".join(f"127.0.0.1:{s['port']}" for s in servers)
        channel = grpc.insecure_channel(target, options=[("grpc.service_config", json.dumps(SERVICE_CONFIG)),
                                                         ("grpc.enable_retries", 1)])
        stub = rpc.ImageGeneratorStub(channel)

        def one(i):
            request = pb.GenerateRequest(prompt="a photo of a sneaker", steps=20, seed=i)
            return stub.GenerateImages(request, timeout=120)

        total, done = 90, 0
        failures = []
        counts_before_stop = None
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            futures = [pool.submit(one, i) for i in range(total)]
            for future in concurrent.futures.as_completed(futures):
                try:
                    future.result()
                except grpc.RpcError as e:
                    failures.append(f"{e.code().name}: {e.details()}")
                done += 1
                if done == 30:  # in the middle of the load: drain replica 1
                    counts_before_stop = [ok_requests(s["metrics"]) for s in servers]
                    servers[1]["proc"].send_signal(signal.SIGTERM)
        counts_after = [ok_requests(s["metrics"]) for s in (servers[0], servers[2])]
        stopped_status = servers[1]["proc"].wait(timeout=90)
        print(f"scaleout_test: ok requests per replica when replica 1 got SIGTERM: {counts_before_stop}; "
              f"replicas 0 and 2 at the end: {counts_after}; replica 1 exited {stopped_status}")
        problems = []
        if failures:
            problems.append(f"{len(failures)} of {total} requests failed: {failures[:3]}")
        if counts_before_stop is None or min(counts_before_stop) < 1:
            problems.append(f"work did not reach all three replicas: {counts_before_stop}")
        if stopped_status != 0:
            problems.append(f"the drained replica exited {stopped_status}")
        if problems:
            print("scaleout_test: FAIL: " + "; ".join(problems))
            return 1
        print("scaleout_test: PASS")
        return 0
    finally:
        for s in servers:
            if s["proc"].poll() is None:
                s["proc"].terminate()
        for s in servers:
            try:
                s["proc"].wait(timeout=90)
            except subprocess.TimeoutExpired:
                s["proc"].kill()


if __name__ == "__main__":
    sys.exit(main())
