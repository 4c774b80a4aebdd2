#!/usr/bin/python3
"""A minimal Python client of the imagegen API, for client authors.

It does three things and exits non-zero if any of them fails:
  1. checks that grpc.health.v1.Health/Check("") answers SERVING;
  2. streams a Generate with a preview every 5 steps, saving the previews and the final PNG
     into --out_dir and printing the progress;
  3. starts a second Generate with steps=200 and cancels it from the client after the first
     progress event, then shows that the call ended CANCELLED.

Needs Debian's python3-grpcio and python3-protobuf, protoc and /usr/bin/grpc_python_plugin
(Debian packages protobuf-compiler and protobuf-compiler-grpc). The stubs are generated from the
repository's .proto files into a temporary folder at start-up, so nothing is checked in.

    /usr/bin/python3 client/examples/python/generate.py --server 127.0.0.1:50051 \
        --prompt "a pair of trousers" --out_dir /tmp/imagegen-out
"""
import argparse
import importlib
import os
import subprocess
import sys
import tempfile

import grpc

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
GRPC_PYTHON_PLUGIN = "/usr/bin/grpc_python_plugin"
MAX_MESSAGE_BYTES = 256 << 20  # results carry whole images; gRPC's default limit is 4 MiB


def load_stubs(tmp_dir):
    """Compiles the API and the health protos into tmp_dir and imports the generated modules."""
    for include_dir, proto in [(os.path.join(REPO_ROOT, "proto"), "imagegen/v1/imagegen.proto"),
                               (os.path.join(REPO_ROOT, "tests", "e2e"), "health.proto")]:
        subprocess.run(["protoc", "-I", include_dir, f"--python_out={tmp_dir}",
                        f"--grpc_out={tmp_dir}", f"--plugin=protoc-gen-grpc={GRPC_PYTHON_PLUGIN}",
                        proto], check=True)
    sys.path.insert(0, tmp_dir)
    names = ["imagegen.v1.imagegen_pb2", "imagegen.v1.imagegen_pb2_grpc",
             "health_pb2", "health_pb2_grpc"]
    return [importlib.import_module(n) for n in names]


def check_health(channel, health_pb2, health_pb2_grpc):
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=10)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"health: {status}")
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def save(path, data):
    with open(path, "wb") as f:
        f.write(data)


def generate(stub, pb, prompt, out_dir):
    """Streams one job with previews every 5 steps; returns True when a result arrived."""
    request = pb.GenerateRequest(
        prompt=prompt, steps=20, seed=42,
        preview=pb.PreviewOptions(every_n_steps=5, method=pb.PREVIEW_METHOD_LATENT_APPROX))
    got_result = False
    for event in stub.Generate(request, timeout=300):
        kind = event.WhichOneof("event")
        if kind == "accepted":
            print(f"generate: accepted job {event.accepted.job_id} "
                  f"(queue position {event.accepted.queue_position})")
        elif kind == "progress":
            p = event.progress
            if p.step == 0:
                print(f"generate: queued, {p.queue_position} job(s) ahead")
                continue
            print(f"generate: step {p.step}/{p.total_steps}")
            for image in p.previews:
                path = os.path.join(out_dir, f"preview-step{p.step:03d}-{image.index}.png")
                save(path, image.data)
                print(f"generate:   preview {path}")
        elif kind == "result":
            r = event.result
            for image in r.images:
                path = os.path.join(out_dir, f"result-{image.seed}.png")
                save(path, image.data)
                print(f"generate: result {path} ({image.width}x{image.height}, seed {image.seed})")
            print(f"generate: {r.model}, {r.sampler}, {r.steps} steps, "
                  f"{r.timings.total_seconds:.2f} s")
            got_result = len(r.images) > 0
    return got_result


def generate_and_cancel(stub, pb, prompt):
    """Starts a 200-step job and cancels the call after the first progress event."""
    call = stub.Generate(pb.GenerateRequest(prompt=prompt, steps=200), timeout=300)
    try:
        for event in call:
            if event.WhichOneof("event") == "progress" and event.progress.step > 0:
                print(f"cancel: at step {event.progress.step}/{event.progress.total_steps}, "
                      "cancelling the call")
                call.cancel()
    except grpc.RpcError as e:
        print(f"cancel: the call ended {e.code().name}")
        return e.code() == grpc.StatusCode.CANCELLED
    print("cancel: the call finished without being cancelled")
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051", help="host:port of the server")
    parser.add_argument("--prompt", default="a pair of trousers", help="what to draw")
    parser.add_argument("--out_dir", default="out", help="where previews and the result go")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="imagegen-stubs-") as tmp:
        pb, pb_grpc, health_pb2, health_pb2_grpc = load_stubs(tmp)
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        with grpc.insecure_channel(args.server, options=options) as channel:
            stub = pb_grpc.ImageGeneratorStub(channel)
            results = {}
            for name, step in [
                    ("health", lambda: check_health(channel, health_pb2, health_pb2_grpc)),
                    ("generate", lambda: generate(stub, pb, args.prompt, args.out_dir)),
                    ("cancel", lambda: generate_and_cancel(stub, pb, args.prompt))]:
                try:
                    results[name] = step()
                except grpc.RpcError as e:
                    print(f"{name}: failed: {e.code().name}: {e.details()}")
                    results[name] = False
    failed = [name for name, ok in results.items() if not ok]
    print("FAILED: " + ", ".join(failed) if failed else "all three steps passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
