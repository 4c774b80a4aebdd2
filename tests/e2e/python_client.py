#!/usr/bin/python3
"""A second client of the imagegen API, in Python, that checks a running server's contract.

It compiles the public .proto files at run time (so it always speaks the API of this checkout)
and checks, over a real connection:
  1. grpc.health.v1.Health/Check("") answers SERVING;
  2. ListModels lists at least one model, and one is the default;
  3. Generate streams accepted, then progress with increasing steps up to total_steps and with
     previews, then exactly one result whose PNG has the default model's size;
  4. GenerateImages answers the same job unary;
  5. an invalid request (steps=100000) is answered INVALID_ARGUMENT naming "steps";
  6. an unknown model and an unknown job id are answered NOT_FOUND.
Each check prints "ok" or "FAIL" with what it saw; the exit status is 1 when any failed.

Run it with Debian's Python, which has python3-grpcio, python3-protobuf and python3-pil:
    /usr/bin/python3 tests/e2e/python_client.py --repo_root . --server 127.0.0.1:50051
"""
import argparse
import importlib
import io
import os
import subprocess
import sys
import tempfile
import traceback

sys.dont_write_bytecode = True  # keep the source tree clean when tests run this

import grpc  # noqa: E402
from PIL import Image  # noqa: E402

GRPC_PYTHON_PLUGIN = "/usr/bin/grpc_python_plugin"
MAX_MESSAGE_BYTES = 256 << 20  # a result carries whole images; gRPC's default is 4 MiB


class CheckFailed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def compile_protos(repo_root, out_dir):
    """Generates the Python stubs of the public API and of the health service into out_dir."""
    here = os.path.dirname(os.path.abspath(__file__))
    jobs = [
        (os.path.join(repo_root, "proto"), "imagegen/v1/imagegen.proto"),
        (here, "health.proto"),
    ]
    for include_dir, proto in jobs:
        cmd = ["protoc", "-I", include_dir, f"--python_out={out_dir}", f"--grpc_out={out_dir}",
               f"--plugin=protoc-gen-grpc={GRPC_PYTHON_PLUGIN}", proto]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"python_client: protoc failed for {proto}:\n{done.stderr}")


def load_stubs(out_dir):
    sys.path.insert(0, out_dir)
    return {
        "pb": importlib.import_module("imagegen.v1.imagegen_pb2"),
        "rpc": importlib.import_module("imagegen.v1.imagegen_pb2_grpc"),
        "health_pb": importlib.import_module("health_pb2"),
        "health_rpc": importlib.import_module("health_pb2_grpc"),
    }


def decode_png(data, what):
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as e:  # PIL raises several types for broken data
        raise CheckFailed(f"{what}: not a decodable image ({len(data)} bytes): {e}")
    expect(image.format == "PNG", f"{what}: format {image.format}, want PNG")
    return image


def check_image(image_msg, want_size, what):
    """The PNG decodes and its pixel size matches both the message's fields and want_size."""
    decoded = decode_png(image_msg.data, what)
    fields = (image_msg.width, image_msg.height)
    expect(decoded.size == fields,
           f"{what}: the PNG is {decoded.size[0]}x{decoded.size[1]} but the message says "
           f"{fields[0]}x{fields[1]}")
    if want_size is not None:
        expect(decoded.size == want_size,
               f"{what}: {decoded.size[0]}x{decoded.size[1]}, want the model's default "
               f"{want_size[0]}x{want_size[1]}")


class Checks:
    def __init__(self, stubs, channel, timeout):
        self.s = stubs
        self.timeout = timeout
        self.stub = stubs["rpc"].ImageGeneratorStub(channel)
        self.health = stubs["health_rpc"].HealthStub(channel)
        self.default_model = None  # ModelInfo, set by check_list_models

    def check_health(self):
        hp = self.s["health_pb"]
        reply = self.health.Check(hp.HealthCheckRequest(service=""), timeout=self.timeout)
        status = hp.HealthCheckResponse.ServingStatus.Name(reply.status)
        expect(reply.status == hp.HealthCheckResponse.SERVING, f"status {status}, want SERVING")
        return status

    def check_list_models(self):
        reply = self.stub.ListModels(self.s["pb"].ListModelsRequest(), timeout=self.timeout)
        expect(len(reply.models) > 0, "no models listed")
        defaults = [m for m in reply.models if m.is_default]
        expect(len(defaults) == 1, f"{len(defaults)} models marked is_default, want 1")
        m = defaults[0]
        expect(m.default_width > 0 and m.default_height > 0,
               f"default model {m.name}: default size {m.default_width}x{m.default_height}")
        expect(m.default_sampler in m.samplers,
               f"default model {m.name}: default sampler {m.default_sampler!r} not in "
               f"samplers {list(m.samplers)}")
        self.default_model = m
        return (f"{len(reply.models)} model(s); default {m.name} "
                f"{m.default_width}x{m.default_height}")

    def default_size(self):
        expect(self.default_model is not None, "skipped: ListModels did not pass")
        return (self.default_model.default_width, self.default_model.default_height)

    def check_generate_stream(self):
        pb = self.s["pb"]
        want_size = self.default_size()
        steps = 5
        request = pb.GenerateRequest(prompt="a pair of trousers", steps=steps, seed=1,
                                     preview=pb.PreviewOptions(every_n_steps=1))
        events = list(self.stub.Generate(request, timeout=self.timeout))
        kinds = [e.WhichOneof("event") for e in events]
        summary = " ".join(k[0] for k in kinds)  # a=accepted p=progress r=result
        expect(len(events) >= 3, f"only {len(events)} events: {summary}")
        expect(kinds[0] == "accepted", f"first event is {kinds[0]}, want accepted ({summary})")
        expect(kinds[-1] == "result", f"last event is {kinds[-1]}, want result ({summary})")
        expect(kinds.count("accepted") == 1, f"{kinds.count('accepted')} accepted events")
        expect(kinds.count("result") == 1, f"{kinds.count('result')} result events")
        accepted = events[0].accepted
        expect(accepted.job_id != "", "JobAccepted.job_id is empty")

        progress = [e.progress for e in events[1:-1]]
        expect(all(k == "progress" for k in kinds[1:-1]), f"unexpected event order: {summary}")
        step_list = [p.step for p in progress]
        expect(step_list[0] >= 1, f"first progress step {step_list[0]}, want >= 1")
        expect(all(a < b for a, b in zip(step_list, step_list[1:])),
               f"progress steps not increasing: {step_list}")
        expect(all(p.total_steps == steps for p in progress),
               f"total_steps {[p.total_steps for p in progress]}, want {steps} in each")
        expect(step_list[-1] == steps, f"last progress step {step_list[-1]}, want {steps}")
        with_previews = [p for p in progress if p.previews]
        expect(with_previews, "no progress event carried a preview (every_n_steps=1)")
        for p in with_previews:
            expect(len(p.previews) == 1, f"step {p.step}: {len(p.previews)} previews, want 1")
            check_image(p.previews[0], None, f"preview of step {p.step}")

        result = events[-1].result
        expect(result.job_id == accepted.job_id,
               f"result job_id {result.job_id!r} != accepted {accepted.job_id!r}")
        expect(len(result.images) == 1, f"{len(result.images)} images, want 1")
        image = result.images[0]
        expect(image.seed == 1 and image.index == 0,
               f"image seed {image.seed} index {image.index}, want seed 1 index 0")
        check_image(image, want_size, "result image")
        expect(result.steps == steps, f"result.steps {result.steps}, want {steps}")
        expect(result.model == self.default_model.name,
               f"result.model {result.model!r}, want the default {self.default_model.name!r}")
        expect(result.timings.total_seconds > 0, "timings.total_seconds is 0")
        return (f"job {accepted.job_id}: {len(progress)} progress events (steps {step_list}), "
                f"{len(with_previews)} with previews, result {image.width}x{image.height} "
                f"in {result.timings.total_seconds:.3f} s")

    def check_generate_unary(self):
        pb = self.s["pb"]
        want_size = self.default_size()
        request = pb.GenerateRequest(prompt="a pair of trousers", steps=2, seed=5, num_images=2)
        reply = self.stub.GenerateImages(request, timeout=self.timeout)
        expect(len(reply.images) == 2, f"{len(reply.images)} images, want 2")
        for i, image in enumerate(reply.images):
            expect(image.index == i and image.seed == 5 + i,
                   f"image {i}: index {image.index} seed {image.seed}, want index {i} "
                   f"seed {5 + i}")
            check_image(image, want_size, f"image {i}")
        return f"job {reply.job_id}: 2 images, seeds 5 and 6"

    def expect_error(self, call, request, want_code, want_word, streaming=False):
        """The call fails with want_code and a message that contains want_word."""
        try:
            reply = call(request, timeout=self.timeout)
            if streaming:  # a stream answers its status after the events
                for _ in reply:
                    pass
        except grpc.RpcError as e:
            expect(e.code() == want_code,
                   f"answered {e.code().name}: {e.details()!r}, want {want_code.name}")
            expect(want_word in (e.details() or ""),
                   f"message {e.details()!r} does not mention {want_word!r}")
            return f"{e.code().name}: {e.details()}"
        raise CheckFailed(f"the call succeeded, want {want_code.name}")

    def check_invalid_steps(self):
        request = self.s["pb"].GenerateRequest(prompt="a pair of trousers", steps=100000)
        return self.expect_error(self.stub.Generate, request, grpc.StatusCode.INVALID_ARGUMENT,
                                 "steps", streaming=True)

    def check_not_found(self):
        pb = self.s["pb"]
        model = self.expect_error(
            self.stub.Generate, pb.GenerateRequest(prompt="a bag", model="no-such-model"),
            grpc.StatusCode.NOT_FOUND, "no-such-model", streaming=True)
        # The contract names only the code for an unknown job, not the message.
        job = self.expect_error(self.stub.CancelJob, pb.CancelJobRequest(job_id="no-such-job"),
                                grpc.StatusCode.NOT_FOUND, "")
        return f"model: {model}; job: {job}"


def run_checks(checks):
    failures = 0
    for name in ("health", "list_models", "generate_stream", "generate_unary", "invalid_steps",
                 "not_found"):
        try:
            detail = getattr(checks, "check_" + name)()
            print(f"ok    {name}: {detail}", flush=True)
        except CheckFailed as e:
            failures += 1
            print(f"FAIL  {name}: {e}", flush=True)
        except grpc.RpcError as e:
            failures += 1
            print(f"FAIL  {name}: the call failed with {e.code().name}: {e.details()}",
                  flush=True)
        except Exception:  # a bug in this script or a malformed reply; show where
            failures += 1
            print(f"FAIL  {name}: unexpected error\n{traceback.format_exc()}", flush=True)
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo_root", required=True, help="checkout holding proto/")
    ap.add_argument("--server", required=True, help="host:port of a running imagegen server")
    ap.add_argument("--timeout", type=float, default=120, help="deadline of each call, seconds")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="imagegen-py-") as out_dir:
        compile_protos(os.path.abspath(args.repo_root), out_dir)
        stubs = load_stubs(out_dir)
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        with grpc.insecure_channel(args.server, options=options) as channel:
            failures = run_checks(Checks(stubs, channel, args.timeout))
    if failures:
        sys.exit(f"python_client: {failures} check(s) failed against {args.server}")
    print(f"python_client: all checks passed against {args.server}")


if __name__ == "__main__":
    main()
