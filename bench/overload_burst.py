#!/usr/bin/python3
"""Bursts against a running imagegen-server, and its resident memory after each (bench/overload.sh).

Each burst opens CALLS calls at once, half GenerateImages and half Generate streams (a preview
every 5 steps), then waits for every one to end. A call ends OK (accepted and completed),
RESOURCE_EXHAUSTED (refused: the queue was full) or otherwise (an error: none is expected). After
each burst it reads VmRSS and VmHWM of the server process from /proc/PID/status. Prints a
markdown table and a summary; exits 1 when a call ended otherwise than OK or RESOURCE_EXHAUSTED.

    /usr/bin/python3 bench/overload_burst.py --repo_root . --server 127.0.0.1:PORT --pid PID \
        [--bursts 20] [--calls 40] [--steps 30]

Needs Debian's python3-grpcio and python3-protobuf (the stubs are generated at run time).
"""
import argparse
import concurrent.futures
import importlib
import os
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep the source tree clean

import grpc  # noqa: E402

PROMPTS = ["a pair of trousers", "an ankle boot", "a dress", "a wool sweater", "some sandals",
           "a bag", "a coat", "a shirt", "a sneaker", "a t-shirt"]


def load_stubs(repo_root, out_dir):
    cmd = ["protoc", "-I", os.path.join(repo_root, "proto"), f"--python_out={out_dir}",
           f"--grpc_out={out_dir}", "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
           "imagegen/v1/imagegen.proto"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"overload_burst: protoc failed:\n{done.stderr}")
    sys.path.insert(0, out_dir)
    return (importlib.import_module("imagegen.v1.imagegen_pb2"),
            importlib.import_module("imagegen.v1.imagegen_pb2_grpc"))


def memory_kib(pid):
    """VmRSS and VmHWM of process pid, in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def run_call(stub, request, stream, timeout):
    """(status code, seconds to its end) of one call: a Generate stream read to its end, or a
    GenerateImages call."""
    start = time.monotonic()
    try:
        if stream:
            for _ in stub.Generate(request, timeout=timeout):
                pass
        else:
            stub.GenerateImages(request, timeout=timeout)
        return grpc.StatusCode.OK, time.monotonic() - start
    except grpc.RpcError as e:
        return e.code(), time.monotonic() - start


def burst(pb, stub, pool, calls, steps, seed, timeout):
    """Opens `calls` calls at once (one pool thread each); (code, seconds) per call."""
    requests = [pb.GenerateRequest(prompt=PROMPTS[(seed + i) % len(PROMPTS)], seed=seed + i, steps=steps,
                                   preview=pb.PreviewOptions(every_n_steps=5))
                for i in range(calls)]
    futures = [pool.submit(run_call, stub, r, i % 2 == 1, timeout) for i, r in enumerate(requests)]
    return [f.result() for f in futures]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo_root", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--pid", type=int, required=True, help="the server's process id, for /proc")
    ap.add_argument("--bursts", type=int, default=20)
    ap.add_argument("--calls", type=int, default=40, help="calls per burst")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--timeout", type=float, default=120.0, help="deadline of each call, s")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        pb, rpc = load_stubs(args.repo_root, tmp)
        channel = grpc.insecure_channel(args.server, options=[("grpc.max_receive_message_length", 64 << 20)])
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = rpc.ImageGeneratorStub(channel)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.calls)

        rss0, _ = memory_kib(args.pid)
        print(f"Server VmRSS before the first burst: {rss0 / 1024:.1f} MiB.")
        print()
        print("| burst | calls | ok (accepted) | RESOURCE_EXHAUSTED | other | slowest refusal ms "
              "| burst s | VmRSS MiB | VmHWM MiB |")
        print("|---|---|---|---|---|---|---|---|---|")
        rows = []
        failures = 0
        for b in range(1, args.bursts + 1):
            start = time.monotonic()
            results = burst(pb, stub, pool, args.calls, args.steps, seed=1000 * b, timeout=args.timeout)
            seconds = time.monotonic() - start
            ok = sum(1 for c, _ in results if c == grpc.StatusCode.OK)
            refused = [t for c, t in results if c == grpc.StatusCode.RESOURCE_EXHAUSTED]
            other = [c for c, _ in results if c not in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED)]
            failures += len(other)
            rss, hwm = memory_kib(args.pid)
            slowest = f"{1000 * max(refused):.0f}" if refused else "-"
            print(f"| {b} | {len(results)} | {ok} | {len(refused)} | {len(other)} | {slowest} "
                  f"| {seconds:.2f} | {rss / 1024:.1f} | {hwm / 1024:.1f} |", flush=True)
            if other:
                print(f"other codes in burst {b}: {sorted(set(str(c) for c in other))}", file=sys.stderr)
            rows.append((ok, len(refused), rss, hwm, refused))
        pool.shutdown()
        channel.close()

    total_ok = sum(r[0] for r in rows)
    total_refused = sum(r[1] for r in rows)
    all_refusals = [t for r in rows for t in r[4]]
    refusal_p50 = sorted(all_refusals)[len(all_refusals) // 2] if all_refusals else 0
    first, last = rows[0][2], rows[-1][2]
    peak = max(r[3] for r in rows)
    print()
    print(f"Summary: {args.bursts} bursts of {args.calls} calls; {total_ok} accepted and completed, "
          f"{total_refused} RESOURCE_EXHAUSTED (median {1000 * refusal_p50:.0f} ms to the refusal, "
          f"slowest {1000 * max(all_refusals, default=0):.0f} ms), {failures} other. VmRSS after burst 1: "
          f"{first / 1024:.1f} MiB, after burst {args.bursts}: {last / 1024:.1f} MiB "
          f"({100.0 * (last - first) / first:+.1f}%); peak (VmHWM) {peak / 1024:.1f} MiB; "
          f"before the first burst {rss0 / 1024:.1f} MiB.")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
