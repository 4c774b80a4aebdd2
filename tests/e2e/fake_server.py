#!/usr/bin/python3
"""A fake imagegen server in Python, for testing clients without LibTorch or a model.

It speaks the public API (compiled from proto/ at start) and the health service, answers
Generate with flat gray images in the requested encodings (PNG, JPEG or WebP, at the requested
quality), and validates a few fields the way the real server does. It takes the real server's
main flags (--listen, --metrics_listen, --model_dir, and --tls_cert, --tls_key,
--auth_tokens_file for TLS and bearer tokens) so that it can stand in for
BUILD_DIR/server/imagegen-server in the end-to-end scripts, plus a few of its own:

  --port_file F   write the port it listens on (useful with --listen=127.0.0.1:0)
  --events F      append one line per notable event for tests to read: "cancelled JOB_ID", and
                  "generate JOB_ID output_format=F quality=Q preview_format=F" per request
  --step_delay S  seconds per denoising step

A job whose id starts with "hold" is accepted and then held without progress until the client
cancels it, so that a test can cancel it deterministically. A job whose id starts with "pngonly"
gets PNG whatever it asked for, as from a server that predates JPEG and WebP. Prompt words of
UNKNOWN_WORDS are "not in the vocabulary": the result carries a warning for each, worded as the
real server's.

    /usr/bin/python3 tests/e2e/fake_server.py --repo_root . --listen 127.0.0.1:0 --port_file P
"""
import argparse
import concurrent.futures
import http.server
import importlib
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True

import grpc  # noqa: E402
from PIL import Image  # noqa: E402

MAX_STEPS = 200
UNKNOWN_WORDS = ("purple", "zebra")


def compile_protos(repo_root, out_dir):
    here = os.path.dirname(os.path.abspath(__file__))
    for include_dir, proto in ((os.path.join(repo_root, "proto"), "imagegen/v1/imagegen.proto"),
                               (here, "health.proto")):
        subprocess.run(["protoc", "-I", include_dir, f"--python_out={out_dir}",
                        f"--grpc_out={out_dir}",
                        "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin", proto],
                       check=True)
    sys.path.insert(0, out_dir)


def encode(pb, width, height, gray, image_format, quality):
    """A flat gray image in `image_format` (UNSPECIFIED: PNG) at `quality` (ignored by PNG)."""
    buf = io.BytesIO()
    picture = Image.new("RGB", (width, height), (gray, gray, gray))
    if image_format == pb.IMAGE_FORMAT_JPEG:
        picture.save(buf, "JPEG", quality=quality)
    elif image_format == pb.IMAGE_FORMAT_WEBP:
        picture.save(buf, "WEBP", quality=quality)
    else:
        picture.save(buf, "PNG")
    return buf.getvalue()


def read_tokens(path):
    """The server's --auth_tokens_file: one token a line; blank and '#' lines skipped."""
    with open(path) as fh:
        return {line.strip() for line in fh if line.strip() and not line.strip().startswith("#")}


def read_model(model_dir):
    """Name and default size from the bundle's model.json when there is one."""
    model = {"name": "fake", "description": "A fake model that draws gray squares.",
             "default_width": 32, "default_height": 32}
    path = os.path.join(model_dir or "", "model.json")
    if model_dir and os.path.exists(path):
        with open(path) as fh:
            found = json.load(fh)
        for key in model:
            if key in found:
                model[key] = found[key]
    return model


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = {}

    def count(self, outcome):
        with self.lock:
            self.requests[outcome] = self.requests.get(outcome, 0) + 1

    def text(self):
        lines = ["# HELP imagegen_requests_total Generate requests by outcome.",
                 "# TYPE imagegen_requests_total counter"]
        with self.lock:
            for outcome, n in sorted(self.requests.items()):
                lines.append(f'imagegen_requests_total{{outcome="{outcome}"}} {n}')
        return "\n".join(lines) + "\n"


def make_servicer(pb, rpc, model, args, metrics):
    ids = itertools.count(1)
    running = {}  # job id -> grpc context
    lock = threading.Lock()

    def log_event(line):
        if args.events:
            with open(args.events, "a") as fh:
                fh.write(line + "\n")

    tokens = read_tokens(args.auth_tokens_file) if args.auth_tokens_file else None

    def authorize(context):
        if tokens is None:
            return
        header = dict(context.invocation_metadata()).get("authorization", "")
        if not header.startswith("Bearer ") or header[len("Bearer "):] not in tokens:
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "missing or unknown bearer token (metadata authorization: Bearer TOKEN)")

    def validate(request, context):
        authorize(context)
        if request.model and request.model != model["name"]:
            context.abort(grpc.StatusCode.NOT_FOUND, f"model {request.model!r} is not loaded")
        if request.steps > MAX_STEPS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"steps {request.steps} is out of range 1..{MAX_STEPS}")
        for name, value in (("quality", request.quality),
                            ("preview.quality", request.preview.quality)):
            if value > 100:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"{name} {value} is out of range 1..100 (0: the default)")

    def warnings(request):
        return [f"prompt: \"{word}\" is not in model {model['name']}'s vocabulary and was ignored"
                for word in request.prompt.lower().split() if word in UNKNOWN_WORDS]

    class Servicer(rpc.ImageGeneratorServicer):
        def ListModels(self, request, context):
            authorize(context)
            return pb.ListModelsResponse(models=[pb.ModelInfo(
                name=model["name"], description=model["description"],
                default_width=model["default_width"], default_height=model["default_height"],
                size_multiple=8, default_sampler="ddim", default_steps=20,
                default_guidance_scale=7.5, samplers=["ddpm", "ddim"], is_default=True,
                max_prompt_tokens=77, max_image_side=256, max_images=8,
                max_pixels=8 * 256 * 256, max_steps=MAX_STEPS, max_prompt_chars=1000)])

        def CancelJob(self, request, context):
            authorize(context)
            with lock:
                target = running.get(request.job_id)
            if target is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r} is running")
            target.cancel()
            return pb.CancelJobResponse(cancelled=True)

        def Generate(self, request, context):
            validate(request, context)
            job_id = request.job_id or f"job-{next(ids)}"
            cancelled = threading.Event()
            context.add_callback(cancelled.set)
            with lock:
                running[job_id] = context
            try:
                yield from self._run(request, job_id, context, cancelled)
            finally:
                with lock:
                    running.pop(job_id, None)

        def GenerateImages(self, request, context):
            validate(request, context)
            result = None
            for event in self._run(request, request.job_id or f"job-{next(ids)}", context,
                                   threading.Event()):
                if event.WhichOneof("event") == "result":
                    result = event.result
            return result

        def _run(self, request, job_id, context, cancelled):
            start = time.time()
            width = request.width or model["default_width"]
            height = request.height or model["default_height"]
            steps = request.steps or 20
            n = request.num_images or 1
            seed = request.seed if request.HasField("seed") else 12345
            output_format, preview_format = request.output_format, request.preview.format
            if job_id.startswith("pngonly"):
                output_format = preview_format = pb.IMAGE_FORMAT_PNG
            log_event(f"generate {job_id} output_format={pb.ImageFormat.Name(output_format)} "
                      f"quality={request.quality} "
                      f"preview_format={pb.ImageFormat.Name(preview_format)}")
            yield pb.GenerateEvent(accepted=pb.JobAccepted(job_id=job_id, queue_position=0))
            if job_id.startswith("hold"):
                cancelled.wait()
            if cancelled.is_set():
                metrics.count("cancelled")
                log_event(f"cancelled {job_id}")
                return
            every = request.preview.every_n_steps
            for step in range(1, steps + 1):
                if cancelled.wait(args.step_delay):
                    metrics.count("cancelled")
                    log_event(f"cancelled {job_id}")
                    return
                progress = pb.Progress(step=step, total_steps=steps)
                if every and step % every == 0:
                    for i in range(n):
                        progress.previews.add(
                            data=encode(pb, width // 8, height // 8, 128, preview_format,
                                        request.preview.quality or 75),
                            format=preview_format or pb.IMAGE_FORMAT_PNG, width=width // 8,
                            height=height // 8, seed=seed + i, index=i)
                yield pb.GenerateEvent(progress=progress)
            result = pb.GenerateResponse(job_id=job_id, model=model["name"], sampler="ddim",
                                         steps=steps, guidance_scale=7.5,
                                         warnings=warnings(request))
            for i in range(n):
                result.images.add(
                    data=encode(pb, width, height, 200, output_format, request.quality or 90),
                    format=output_format or pb.IMAGE_FORMAT_PNG, width=width, height=height,
                    seed=seed + i, index=i)
            elapsed = time.time() - start
            result.timings.total_seconds = elapsed
            result.timings.denoise_seconds = elapsed
            metrics.count("ok")
            yield pb.GenerateEvent(result=result)

    return Servicer()


def serve_metrics(address, metrics):
    host, port = address.rsplit(":", 1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = metrics.text().encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *unused):
            pass

    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo_root", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    ap.add_argument("--listen", default="127.0.0.1:50051")
    ap.add_argument("--metrics_listen", default="")
    ap.add_argument("--model_dir", default="")
    ap.add_argument("--port_file", default="")
    ap.add_argument("--events", default="")
    ap.add_argument("--step_delay", type=float, default=0.0)
    ap.add_argument("--tls_cert", default="")
    ap.add_argument("--tls_key", default="")
    ap.add_argument("--auth_tokens_file", default="")
    args, _ = ap.parse_known_args()  # the real server's other flags are accepted and ignored

    # The stubs are needed only until they are imported; the folder goes at once, so that a
    # server stopped by a signal leaves nothing behind.
    with tempfile.TemporaryDirectory(prefix="imagegen-fake-") as out_dir:
        compile_protos(os.path.abspath(args.repo_root), out_dir)
        pb = importlib.import_module("imagegen.v1.imagegen_pb2")
        rpc = importlib.import_module("imagegen.v1.imagegen_pb2_grpc")
        health_pb = importlib.import_module("health_pb2")
        health_rpc = importlib.import_module("health_pb2_grpc")

    class Health(health_rpc.HealthServicer):
        def Check(self, request, context):
            return health_pb.HealthCheckResponse(status=health_pb.HealthCheckResponse.SERVING)

    metrics = Metrics()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
    rpc.add_ImageGeneratorServicer_to_server(
        make_servicer(pb, rpc, read_model(args.model_dir), args, metrics), server)
    health_rpc.add_HealthServicer_to_server(Health(), server)
    if args.tls_cert:
        with open(args.tls_key, "rb") as key, open(args.tls_cert, "rb") as cert:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        port = server.add_secure_port(args.listen, credentials)
    else:
        port = server.add_insecure_port(args.listen)
    if port == 0:
        sys.exit(f"fake_server: cannot listen on {args.listen}")
    if args.metrics_listen:
        serve_metrics(args.metrics_listen, metrics)
    # SIGTERM stops the server and exits 0, as a well-behaved server does.
    signal.signal(signal.SIGTERM, lambda *unused: server.stop(grace=1))
    server.start()
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as fh:
            fh.write(f"{port}\n")
        os.replace(args.port_file + ".tmp", args.port_file)  # readers never see half a file
    print(f"fake_server: listening on port {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
