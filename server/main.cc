// imagegen-server: serves latent diffusion image generation over gRPC (README.md, "Flags").
#include <malloc.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "server/server.h"

#ifndef IMAGEGEN_DEFAULT_MODEL_DIR
#define IMAGEGEN_DEFAULT_MODEL_DIR "models"
#endif

ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC listen address (host:port; port 0 picks one).");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9090",
          "Prometheus metrics address (host:port), served at /metrics; empty disables it.");
ABSL_FLAG(std::string, model_dir, IMAGEGEN_DEFAULT_MODEL_DIR,
          "A model bundle folder, or a folder whose subfolders are bundles (each with model.json).");
ABSL_FLAG(std::string, default_model, "",
          "Model used when a request names none; empty: the first bundle by folder name.");
ABSL_FLAG(int, max_queue, 64, "Jobs that may wait in the queue; beyond it requests get RESOURCE_EXHAUSTED.");
ABSL_FLAG(std::vector<std::string>, devices, {"cpu"},
          "Comma-separated Torch devices, one worker (with its own model replicas) each: cpu, or "
          "cuda:0,cuda:1,...");
ABSL_FLAG(std::string, dtype, "float32",
          "What the models compute in: float32, float16 or bfloat16 (the last two on CUDA devices only; the "
          "samplers keep float32 latents, and a VAE decode that comes out non-finite is redone in float32).");
ABSL_FLAG(int, max_batch_rows, 32,
          "UNet rows per batched call, and the rows a worker runs at once (guidance counts two rows per image); "
          "in a call, a row of an image larger than the model's default counts its pixels over the default's, "
          "rounded up.");
ABSL_FLAG(int, max_queue_delay_ms, 0, "How long an idle worker waits for queued work to fill a first batch.");
ABSL_FLAG(std::string, batching, "step",
          "step: jobs join and leave the batch at every denoising step (continuous batching); request: a "
          "batch forms, runs to the end, then the next (for comparison).");
ABSL_FLAG(int, priority_aging_ms, 10000,
          "A queued job gains one priority level per this many milliseconds waited, so low priority "
          "work is never starved.");
ABSL_FLAG(int, intra_op_threads, 0, "LibTorch intra-op threads of the worker; 0: LibTorch's default (one per physical core).");
ABSL_FLAG(int, interop_threads, 1, "LibTorch inter-op threads (process-wide).");
ABSL_FLAG(int, drain_timeout_s, 30,
          "On SIGTERM or SIGINT: how long running and queued jobs may take to finish before the "
          "rest end UNAVAILABLE.");
ABSL_FLAG(bool, request_log, true, "One JSON line per request on stderr.");
ABSL_FLAG(int, malloc_arena_max, 2,
          "glibc malloc arenas (mallopt M_ARENA_MAX); 0: glibc's default (8 per core). With one arena "
          "per gRPC thread, freed memory stays spread over many arenas and RSS creeps up under long "
          "load (bench/RESULTS.md, \"Soak\").");
ABSL_FLAG(int, max_steps, imagegen::RequestLimits{}.max_steps, "Largest steps a request may ask for.");
ABSL_FLAG(int, max_images, imagegen::RequestLimits{}.max_images, "Largest num_images a request may ask for.");
ABSL_FLAG(int, max_prompt_chars, imagegen::RequestLimits{}.max_prompt_chars,
          "Longest prompt (and negative prompt), in characters (Unicode code points of its UTF-8).");
ABSL_FLAG(int, max_image_side, imagegen::RequestLimits{}.max_image_side,
          "Largest width or height, in pixels (also of an init_image). 0: per model, the larger of 256 and 1.5 "
          "times the model's default side (768 for Stable Diffusion 1.x, 1152 for 2.x at 768).");
ABSL_FLAG(int64_t, max_pixels, imagegen::RequestLimits{}.max_pixels,
          "Most pixels one request may make in all (width x height x num_images). 0: per model, the larger of "
          "4 x 256 x 256 and one image of the model's largest side.");
ABSL_FLAG(int, max_init_image_bytes, imagegen::RequestLimits{}.max_init_image_bytes, "Largest encoded init_image (PNG or JPEG), in bytes.");
ABSL_FLAG(int, max_message_bytes, imagegen::ServerOptions{}.max_message_bytes,
          "Largest request message the gRPC port accepts, in bytes; larger ones get RESOURCE_EXHAUSTED.");

ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the gRPC port; with --tls_key turns TLS on. Empty: plaintext. Read at "
          "start-up: a new certificate takes a restart.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificate(s): mutual TLS, every client must present a certificate they signed. Needs "
          "--tls_cert and --tls_key.");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "File of bearer tokens, one per line as TOKEN or NAME:TOKEN, optionally followed by "
          "max_priority=N ('#' comments and blank lines skipped): API calls must send the metadata "
          "\"authorization: Bearer TOKEN\" with one of them, else UNAUTHENTICATED. Each NAME is a client "
          "(principal) with its own job ids, queue share and fair share of the workers. Health and "
          "reflection stay open. Empty: no tokens needed.");
ABSL_FLAG(int, max_queue_per_client, imagegen::ServerOptions{}.max_queue_per_client,
          "Jobs one client (token name, or client certificate under mutual TLS) may have waiting; beyond "
          "it RESOURCE_EXHAUSTED. 0: only --max_queue. Without tokens or mutual TLS all callers are one "
          "client and only --max_queue applies.");
ABSL_FLAG(int, max_priority, imagegen::ServerOptions{}.max_priority,
          "Highest GenerateRequest.priority a client may ask unless its line in --auth_tokens_file says "
          "max_priority=N; higher is refused PERMISSION_DENIED. Priority orders a client's own jobs only.");
ABSL_FLAG(double, max_work, 0,
          "Most work one request may ask, in units of UNet rows (images, x2 with guidance) x UNet calls "
          "(steps that run, x2 for heun) x megapixels per image; more is refused INVALID_ARGUMENT. 0: per "
          "model, 512 x the work of the model's default request.");

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("imagegen-server: latent diffusion image generation over gRPC.\n"
                               "  imagegen-server --listen=0.0.0.0:50051 --model_dir=models");
  absl::ParseCommandLine(argc, argv);
  // Before any thread starts, so that every thread shares the few arenas.
  if (absl::GetFlag(FLAGS_malloc_arena_max) > 0) mallopt(M_ARENA_MAX, absl::GetFlag(FLAGS_malloc_arena_max));

  imagegen::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.model_dir = absl::GetFlag(FLAGS_model_dir);
  options.default_model = absl::GetFlag(FLAGS_default_model);
  options.request_log = absl::GetFlag(FLAGS_request_log);
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  options.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  options.engine.max_queue = absl::GetFlag(FLAGS_max_queue);
  options.max_queue_per_client = absl::GetFlag(FLAGS_max_queue_per_client);
  options.max_priority = absl::GetFlag(FLAGS_max_priority);
  if (options.max_queue_per_client < 0 || options.max_priority < imagegen::kMinPriority ||
      options.max_priority > imagegen::kMaxPriority) {
    std::cerr << "imagegen-server: --max_queue_per_client is " << options.max_queue_per_client
              << " (allowed: >= 0) and --max_priority is " << options.max_priority << " (allowed: "
              << imagegen::kMinPriority << " to " << imagegen::kMaxPriority << ")\n";
    return 2;
  }
  options.engine.devices = absl::GetFlag(FLAGS_devices);
  if (auto precision = imagegen::ParsePrecision(absl::GetFlag(FLAGS_dtype)); precision.ok()) {
    options.engine.precision = *precision;
  } else {
    std::cerr << "imagegen-server: --" << precision.status().message() << "\n";
    return 2;
  }
  options.engine.max_batch_rows = absl::GetFlag(FLAGS_max_batch_rows);
  options.engine.max_queue_delay = absl::Milliseconds(absl::GetFlag(FLAGS_max_queue_delay_ms));
  options.engine.priority_aging = absl::Milliseconds(std::max(1, absl::GetFlag(FLAGS_priority_aging_ms)));
  const std::string batching = absl::GetFlag(FLAGS_batching);
  if (batching != "step" && batching != "request") {
    std::cerr << "imagegen-server: --batching is \"" << batching << "\"; allowed: step, request\n";
    return 2;
  }
  options.engine.request_level_batching = batching == "request";
  options.engine.intra_op_threads = absl::GetFlag(FLAGS_intra_op_threads);
  options.engine.interop_threads = absl::GetFlag(FLAGS_interop_threads);
  options.engine.limits.max_steps = absl::GetFlag(FLAGS_max_steps);
  options.engine.limits.max_images = absl::GetFlag(FLAGS_max_images);
  options.engine.limits.max_prompt_chars = absl::GetFlag(FLAGS_max_prompt_chars);
  options.engine.limits.max_image_side = absl::GetFlag(FLAGS_max_image_side);
  options.engine.limits.max_pixels = absl::GetFlag(FLAGS_max_pixels);
  options.engine.limits.max_init_image_bytes = absl::GetFlag(FLAGS_max_init_image_bytes);
  options.engine.limits.max_work = absl::GetFlag(FLAGS_max_work);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);

  // Installed before the models load, so that a SIGTERM then still ends in an orderly exit.
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  auto server = imagegen::ImageGenServer::Start(options);
  if (!server.ok()) {
    std::cerr << "imagegen-server: " << server.status().message() << "\n";
    return 1;
  }
  std::vector<std::string> models;
  for (const imagegen::ModelConfig* m : (*server)->engine().models()) models.push_back(m->name);
  const char* transport = options.tls_cert.empty() ? "plaintext" : options.tls_client_ca.empty() ? "TLS" : "mutual TLS";
  const std::string access = absl::StrCat(
      "access: ", transport, options.auth_tokens_file.empty() ? ", no token needed" : ", bearer tokens required",
      options.auth_tokens_file.empty() && options.tls_client_ca.empty() ? ", one shared client" : ", clients by ",
      !options.auth_tokens_file.empty() ? "token name" : !options.tls_client_ca.empty() ? "certificate subject" : "");
  if (options.tls_cert.empty() && !options.auth_tokens_file.empty()) {
    std::cerr << "imagegen-server: warning: bearer tokens over plaintext can be read on the network; "
                 "set --tls_cert and --tls_key unless a proxy or mesh encrypts the traffic"
              << std::endl;
  }
  std::cerr << "imagegen-server: serving gRPC on port " << (*server)->port() << " (" << options.listen
            << "), metrics on " << (options.metrics_listen.empty() ? std::string("none")
                                                                   : absl::StrCat("port ", (*server)->metrics_port(), "/metrics"))
            << "; " << access
            << "; devices " << absl::StrJoin(options.engine.devices, ",") << " ("
            << imagegen::PrecisionName(options.engine.precision) << ", " << batching
            << "-level batching, " << options.engine.max_batch_rows << " rows); models: " << absl::StrJoin(models, ", ")
            << " (default " << (*server)->default_model() << ")" << std::endl;

  while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const absl::Duration drain = absl::Seconds(absl::GetFlag(FLAGS_drain_timeout_s));
  std::cerr << "imagegen-server: draining (up to " << absl::FormatDuration(drain) << ")" << std::endl;
  const bool drained = (*server)->Drain(drain);
  std::cerr << "imagegen-server: " << (drained ? "drained" : "drain timeout: ending the remaining jobs UNAVAILABLE")
            << "; shutting down" << std::endl;
  (*server)->Shutdown();
  return 0;
}
