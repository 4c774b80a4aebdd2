// imagegen: the command-line client of the imagegen.v1.ImageGenerator service.
//
//   imagegen generate --prompt "a pair of trousers" --out image.png
//   imagegen models
//   imagegen cancel JOB_ID
//
// The exit status is the gRPC status code of the call (0 OK, 1 CANCELLED, 3 INVALID_ARGUMENT,
// 14 UNAVAILABLE, 16 UNAUTHENTICATED, ...), so that scripts can act on it; local failures (a bad
// flag, an unwritable --out) map to the nearest code the same way.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/animation.h"
#include "client/cli.h"
#include "client/interrupt.h"
#include "client/progress.h"
#include "imagegen/v1/imagegen.grpc.pb.h"
#include "imagegen/v1/imagegen.pb.h"

// Flags of every subcommand. Abseil flags are process-wide, so each subcommand reads the ones it
// uses and the usage text says which belong where.
ABSL_FLAG(std::string, server, "localhost:50051", "host:port of the imagegen server");
ABSL_FLAG(double, timeout, 0, "deadline of the call in seconds; 0: none");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA certificate(s) that signed the server's certificate; set: TLS");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate for mutual TLS (with --tls_key and --tls_ca)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, token_file, "",
          "file with the bearer token to send; empty: the environment variable IMAGEGEN_TOKEN");

ABSL_FLAG(std::string, prompt, "", "what to draw");
ABSL_FLAG(std::string, negative_prompt, "", "what to steer away from");
ABSL_FLAG(std::string, out, "", "file to write the image to (see 'imagegen help generate')");
ABSL_FLAG(uint32_t, steps, 0, "denoising steps; 0: the model's default");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt,
          "random seed (image i uses seed + i); unset: random");
ABSL_FLAG(std::string, sampler, "", "sampler name (ddpm, ddim, ...); empty: the model's default");
ABSL_FLAG(float, guidance, 0, "classifier-free guidance scale; 0: the model's default");
ABSL_FLAG(std::string, size, "", "WIDTHxHEIGHT in pixels; empty: the model's default");
ABSL_FLAG(uint32_t, num_images, 0, "images to generate; 0: 1");
ABSL_FLAG(std::string, model, "", "model name (see 'imagegen models'); empty: the default");
ABSL_FLAG(std::string, previews, "", "directory to save preview frames in; empty: none");
ABSL_FLAG(uint32_t, preview_every, 0,
          "a preview every N steps; 0: 1 when --previews or --animation is set");
ABSL_FLAG(std::string, animation, "",
          "write the denoising sequence as an animated WebP to this file; empty: none");
ABSL_FLAG(bool, json, false, "print one JSON object on stdout instead of progress and text");
ABSL_FLAG(int32_t, priority, 0, "scheduling priority, -100..100; higher runs first");
ABSL_FLAG(std::string, job_id, "", "client-chosen job id, for 'imagegen cancel'");
ABSL_FLAG(std::string, init_image, "", "image to image: a PNG or JPEG file to start from");
ABSL_FLAG(float, strength, 0, "image to image: how much of the reverse process runs, (0, 1]");

namespace imagegen::client {
namespace {

namespace fs = std::filesystem;
namespace v1 = imagegen::v1;

// ---------------------------------------------------------------------------------------------
// Usage

constexpr char kMainUsage[] = R"(imagegen: generate images with an imagegen server.

Usage:
  imagegen generate --prompt TEXT --out FILE [flags]   generate images, show progress
  imagegen models [--server HOST:PORT]                 list the server's models
  imagegen cancel JOB_ID [--server HOST:PORT]          cancel a queued or running job
  imagegen help [COMMAND]                              show help

Common flags:
  --server HOST:PORT   the server (default localhost:50051)
  --timeout SECONDS    deadline of the call; 0 (default): none
  --tls_ca FILE        TLS: trust the server's certificate if this PEM CA signed it
  --tls_cert FILE      mutual TLS: the client's PEM certificate (with --tls_key, --tls_ca)
  --tls_key FILE       mutual TLS: its PEM private key
  --token_file FILE    send the bearer token in FILE (its first line that is not blank or a
                       '#' comment); unset: the environment variable IMAGEGEN_TOKEN, if set

The exit status is the gRPC status code of the call: 0 OK, 1 CANCELLED (also Ctrl-C),
3 INVALID_ARGUMENT, 4 DEADLINE_EXCEEDED, 5 NOT_FOUND, 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE,
16 UNAUTHENTICATED (no token, or a wrong one).

Examples:
  imagegen generate --prompt "a pair of trousers" --out trousers.png
  imagegen models --server imagegen.internal:50051
)";

constexpr char kGenerateUsage[] = R"(imagegen generate: generate images and save them.

Usage:
  imagegen generate --prompt TEXT --out FILE [flags]

Shows progress on stderr while it waits (one updating line on a terminal). Writes the images,
then prints their paths, seeds and the server's timings on stdout. Ctrl-C cancels the job on
the server and exits with 1 (CANCELLED).

Flags (zero or empty means the model's default):
  --prompt TEXT           what to draw
  --negative_prompt TEXT  what to steer away from
  --out FILE|DIR/         where to write. One image: FILE. Several: "image.png" becomes
                          image-<seed>.png for each. An existing directory or a path ending in
                          '/': DIR/<seed>.png.
  --steps N               denoising steps
  --seed N                seed of image 0 (image i uses seed + i); unset: random
  --sampler NAME          ddpm, ddim, ... (see 'imagegen models')
  --guidance S            classifier-free guidance scale, 1..30
  --size WxH              image size in pixels, e.g. 512x512 (or 512)
  --num_images N          images to generate
  --model NAME            model to use (see 'imagegen models')
  --previews DIR          save preview frames as DIR/step-0001-image-0.png, ...
  --preview_every N       a preview every N steps (default 1 with --previews or --animation)
  --animation FILE        write the denoising sequence of image 0 (every preview received, then
                          the final image, held 1 s) as an animated WebP; implies a preview
                          every step unless --preview_every is given
  --json                  no progress line or text: print one JSON object on stdout at the end
                          (job_id, model, sampler, steps, guidance_scale, images, previews_saved,
                          animation, timings), or {"error": {"code", "message"}} on failure
  --priority N            scheduling priority, -100..100
  --job_id ID             choose the job id (for 'imagegen cancel')
  --init_image FILE       image to image: start from this PNG or JPEG (its size unless --size)
  --strength S            image to image: share of the steps that run, (0, 1]; 1 keeps
                          little of the init image, 0.3 keeps most of it
  --server HOST:PORT      the server (default localhost:50051)
  --timeout SECONDS       deadline of the call; 0 (default): none
  --tls_ca, --tls_cert, --tls_key, --token_file   TLS and the bearer token (see 'imagegen help')

Examples:
  imagegen generate --prompt "a pair of trousers" --out trousers.png
  imagegen generate --prompt "a sneaker" --steps 30 --seed 42 --num_images 4 --out shoes/
  imagegen generate --prompt "a bag" --out bag.png --previews frames --preview_every 5
  imagegen generate --prompt "a dress" --init_image trousers.png --strength 0.6 --out dress.png
  imagegen generate --prompt "a coat" --steps 20 --out coat.png --animation coat.webp
  imagegen generate --prompt "a shirt" --out shirt.png --json | jq .images[0].path
)";

constexpr char kModelsUsage[] = R"(imagegen models: list the server's models.

Usage:
  imagegen models [--server HOST:PORT] [--timeout SECONDS] [TLS and token flags]

Prints one row per model: its default size, sampler, steps and guidance scale, and the samplers
it accepts. '*' marks the model that an empty --model resolves to.

Example:
  imagegen models --server localhost:50051
)";

constexpr char kCancelUsage[] = R"(imagegen cancel: cancel a queued or running job.

Usage:
  imagegen cancel JOB_ID [--server HOST:PORT] [--timeout SECONDS] [TLS and token flags]

JOB_ID is the id that 'imagegen generate' printed (or chose with --job_id). The job's own call
ends with CANCELLED. Exits 5 (NOT_FOUND) when no such job is queued or running.

Example:
  imagegen cancel 3f9c2a7e
)";

bool IsCommand(absl::string_view word) {
  return word == "generate" || word == "models" || word == "cancel" || word == "help";
}

const char* UsageOf(absl::string_view command) {
  if (command == "generate") return kGenerateUsage;
  if (command == "models") return kModelsUsage;
  if (command == "cancel") return kCancelUsage;
  return kMainUsage;
}

bool IsHelpFlag(absl::string_view arg) {
  return arg == "--help" || arg == "-help" || arg == "-h";
}

// Abseil would answer --help itself with a list of every flag in the binary, gRPC's included;
// a reader wants the subcommand's own page. Returns the command whose help was asked for
// ("" for the main page), or nullopt when no help was asked for.
std::optional<std::string> HelpRequest(int argc, char** argv) {
  std::optional<std::string> help;
  std::string command;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (IsHelpFlag(arg)) help = "";
    if (command.empty() && IsCommand(arg)) {
      command = std::string(arg);
      if (command == "help") {
        help = "";
        command.clear();
        // "imagegen help generate": the word after "help" names the page.
        if (i + 1 < argc) command = argv[i + 1];
        break;
      }
    }
  }
  if (help) return command;
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Calls

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag, const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::string contents(std::istreambuf_iterator<char>(file), {});
  if (!file) return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot read"));
  return contents;
}

// --tls_ca turns TLS on; --tls_cert and --tls_key add the client certificate (mutual TLS).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials() {
  const std::string ca = absl::GetFlag(FLAGS_tls_ca);
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(cert.empty() ? "--tls_key is set but --tls_cert is empty"
                                  : "--tls_cert is set but --tls_key is empty",
                     "; mutual TLS needs both: the client's PEM certificate and its private key"));
  }
  if (ca.empty()) {
    if (!cert.empty()) {
      return absl::InvalidArgumentError(
          "--tls_cert needs --tls_ca too: the PEM CA that signed the server's certificate "
          "(mutual TLS is TLS first)");
    }
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions ssl;
  absl::StatusOr<std::string> pem = ReadFlagFile("--tls_ca", ca);
  if (!pem.ok()) return pem.status();
  ssl.pem_root_certs = *std::move(pem);
  if (!cert.empty()) {
    pem = ReadFlagFile("--tls_cert", cert);
    if (!pem.ok()) return pem.status();
    ssl.pem_cert_chain = *std::move(pem);
    pem = ReadFlagFile("--tls_key", key);
    if (!pem.ok()) return pem.status();
    ssl.pem_private_key = *std::move(pem);
  }
  return grpc::SslCredentials(ssl);
}

// --token_file, else IMAGEGEN_TOKEN (an empty variable counts as unset), else none ("").
absl::StatusOr<std::string> BearerToken() {
  if (const std::string path = absl::GetFlag(FLAGS_token_file); !path.empty()) {
    absl::StatusOr<std::string> contents = ReadFlagFile("--token_file", path);
    if (!contents.ok()) return contents.status();
    return ParseBearerToken(*contents, absl::StrCat("--token_file ", path));
  }
  const char* env = std::getenv("IMAGEGEN_TOKEN");
  if (env == nullptr || *env == '\0') return std::string();
  return ParseBearerToken(env, "IMAGEGEN_TOKEN");
}

// A stub for --server, and what each of its calls carries.
struct Connection {
  std::unique_ptr<v1::ImageGenerator::Stub> stub;
  std::string token;  // empty: no authorization metadata

  // Sets the call's deadline (--timeout) and bearer token.
  void Prepare(grpc::ClientContext* context) const {
    // Plain metadata rather than call credentials: gRPC sends those only over TLS, and a server
    // behind a mesh that encrypts for it may take tokens on a plaintext port.
    if (!token.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
    const double seconds = absl::GetFlag(FLAGS_timeout);
    if (seconds <= 0) return;
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6)));
  }
};

// Reads the TLS files and the token before any call, so that a bad flag fails at once.
absl::StatusOr<Connection> Connect() {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = ChannelCredentials();
  if (!credentials.ok()) return credentials.status();
  absl::StatusOr<std::string> token = BearerToken();
  if (!token.ok()) return token.status();
  grpc::ChannelArguments args;
  // A result holds up to --max_images full-size images; gRPC's 4 MiB default is too small.
  args.SetMaxReceiveMessageSize(256 << 20);
  Connection connection;
  connection.stub = v1::ImageGenerator::NewStub(
      grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server), *credentials, args));
  connection.token = *std::move(token);
  return connection;
}

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  file.close();
  if (!file) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<v1::GenerateRequest> BuildGenerateRequest() {
  v1::GenerateRequest request;
  request.set_prompt(absl::GetFlag(FLAGS_prompt));
  request.set_negative_prompt(absl::GetFlag(FLAGS_negative_prompt));
  request.set_model(absl::GetFlag(FLAGS_model));
  request.set_steps(absl::GetFlag(FLAGS_steps));
  request.set_sampler(absl::GetFlag(FLAGS_sampler));
  request.set_guidance_scale(absl::GetFlag(FLAGS_guidance));
  request.set_num_images(absl::GetFlag(FLAGS_num_images));
  request.set_priority(absl::GetFlag(FLAGS_priority));
  request.set_job_id(absl::GetFlag(FLAGS_job_id));
  if (const std::optional<uint64_t> seed = absl::GetFlag(FLAGS_seed)) request.set_seed(*seed);
  if (const std::string path = absl::GetFlag(FLAGS_init_image); !path.empty()) {
    std::ifstream file(path, std::ios::binary);
    if (!file) return absl::NotFoundError(absl::StrCat("--init_image ", path, ": cannot read"));
    request.set_init_image(std::string(std::istreambuf_iterator<char>(file), {}));
  }
  request.set_strength(absl::GetFlag(FLAGS_strength));
  absl::StatusOr<ImageSize> size = ParseImageSize(absl::GetFlag(FLAGS_size));
  if (!size.ok()) return size.status();
  request.set_width(size->width);
  request.set_height(size->height);
  if (!absl::GetFlag(FLAGS_previews).empty() || !absl::GetFlag(FLAGS_animation).empty()) {
    const uint32_t every = absl::GetFlag(FLAGS_preview_every);
    request.mutable_preview()->set_every_n_steps(every == 0 ? 1 : every);
  }
  // Range checks are the server's: it knows its own limits and names them in its message.
  return request;
}

// Checks --out and --previews before the call, so that a typo does not waste a generation.
absl::StatusOr<OutputNamer> PrepareOutputs() {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return absl::InvalidArgumentError("--out is required (a file or DIR/)");
  std::error_code error;
  const bool ends_with_slash = out.back() == '/';
  if (ends_with_slash) fs::create_directories(out, error);
  if (error) return absl::PermissionDeniedError(absl::StrCat("cannot create ", out, ": ",
                                                             error.message()));
  const bool is_directory = ends_with_slash || fs::is_directory(out);
  if (!is_directory) {
    const fs::path parent = fs::path(out).parent_path();
    if (!parent.empty() && !fs::is_directory(parent)) {
      return absl::NotFoundError(absl::StrCat("--out ", out, ": directory ", parent.string(),
                                              " does not exist"));
    }
  }
  const std::string previews = absl::GetFlag(FLAGS_previews);
  if (!previews.empty()) {
    fs::create_directories(previews, error);
    if (error) return absl::PermissionDeniedError(absl::StrCat("cannot create --previews ",
                                                               previews, ": ", error.message()));
  } else if (absl::GetFlag(FLAGS_preview_every) != 0 && absl::GetFlag(FLAGS_animation).empty()) {
    return absl::InvalidArgumentError(
        "--preview_every needs --previews DIR or --animation FILE to use them");
  }
  if (const std::string animation = absl::GetFlag(FLAGS_animation); !animation.empty()) {
    const fs::path parent = fs::path(animation).parent_path();
    if (!parent.empty() && !fs::is_directory(parent)) {
      return absl::NotFoundError(absl::StrCat("--animation ", animation, ": directory ",
                                              parent.string(), " does not exist"));
    }
  }
  return OutputNamer(out, is_directory);
}

absl::Status SavePreviews(const v1::Progress& progress, const std::string& dir) {
  for (const v1::Image& image : progress.previews()) {
    absl::Status status =
        WriteFile(PreviewPath(dir, progress.step(), image.index(), image.format()), image.data());
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

// The --json report of a finished job.
std::string ResultJson(const v1::GenerateResponse& result, const std::vector<std::string>& paths,
                       int previews_saved, const std::string& animation) {
  std::string json = absl::StrCat(
      "{\"job_id\":", JsonString(result.job_id()), ",\"model\":", JsonString(result.model()),
      ",\"sampler\":", JsonString(result.sampler()), ",\"steps\":", result.steps(),
      ",\"guidance_scale\":", JsonNumber(result.guidance_scale()), ",\"images\":[");
  for (int i = 0; i < result.images_size(); ++i) {
    const v1::Image& image = result.images(i);
    absl::StrAppend(&json, i == 0 ? "" : ",", "{\"path\":", JsonString(paths[i]),
                    ",\"seed\":", image.seed(), ",\"width\":", image.width(),
                    ",\"height\":", image.height(), "}");
  }
  const v1::Timings& t = result.timings();
  absl::StrAppend(&json, "],\"previews_saved\":", previews_saved, ",\"animation\":",
                  animation.empty() ? "null" : JsonString(animation), ",\"timings\":{",
                  "\"queue_seconds\":", JsonNumber(t.queue_seconds()),
                  ",\"text_encode_seconds\":", JsonNumber(t.text_encode_seconds()),
                  ",\"denoise_seconds\":", JsonNumber(t.denoise_seconds()),
                  ",\"decode_seconds\":", JsonNumber(t.decode_seconds()),
                  ",\"total_seconds\":", JsonNumber(t.total_seconds()), "}}");
  return json;
}

absl::Status SaveAndReport(const v1::GenerateResponse& result, const OutputNamer& namer,
                           int previews_saved, AnimationBuilder* animation) {
  const bool json = absl::GetFlag(FLAGS_json);
  const std::string animation_path = absl::GetFlag(FLAGS_animation);
  std::vector<std::string> paths;
  for (const v1::Image& image : result.images()) {
    const std::string path = namer.PathFor(image.seed(), result.images_size(), image.format());
    absl::Status status = WriteFile(path, image.data());
    if (!status.ok()) return status;
    paths.push_back(path);
  }
  if (!animation_path.empty()) {
    for (const v1::Image& image : result.images()) {
      if (image.index() != 0) continue;
      absl::StatusOr<RgbaImage> frame = DecodePngToRgba(image.data());
      if (!frame.ok()) return frame.status();
      animation->Add(*std::move(frame));
    }
    absl::Status status = animation->Write(animation_path, /*frame_ms=*/100,
                                           /*last_frame_ms=*/1000);
    if (!status.ok()) return status;
  }
  if (json) {
    absl::PrintF("%s\n", ResultJson(result, paths, previews_saved, animation_path));
    return absl::OkStatus();
  }
  absl::PrintF("job %s: model %s, sampler %s, %d steps, guidance %g\n", result.job_id(),
               result.model(), result.sampler(), result.steps(), result.guidance_scale());
  for (int i = 0; i < result.images_size(); ++i) {
    const v1::Image& image = result.images(i);
    absl::PrintF("%s  %dx%d  seed %d\n", paths[i], image.width(), image.height(), image.seed());
  }
  const v1::Timings& t = result.timings();
  absl::PrintF("timings: queue %s, text %s, denoise %s, decode %s, total %s\n",
               FormatSeconds(t.queue_seconds()), FormatSeconds(t.text_encode_seconds()),
               FormatSeconds(t.denoise_seconds()), FormatSeconds(t.decode_seconds()),
               FormatSeconds(t.total_seconds()));
  if (previews_saved > 0) {
    absl::PrintF("previews: %d frames in %s\n", previews_saved, absl::GetFlag(FLAGS_previews));
  }
  if (!animation_path.empty()) {
    absl::PrintF("animation: %d frames in %s\n", animation->size(), animation_path);
  }
  return absl::OkStatus();
}

absl::Status RunGenerate() {
  absl::StatusOr<v1::GenerateRequest> request = BuildGenerateRequest();
  if (!request.ok()) return request.status();
  absl::StatusOr<OutputNamer> namer = PrepareOutputs();
  if (!namer.ok()) return namer.status();
  const std::string previews_dir = absl::GetFlag(FLAGS_previews);
  const bool want_animation = !absl::GetFlag(FLAGS_animation).empty();
  const bool json = absl::GetFlag(FLAGS_json);
  AnimationBuilder animation;

  absl::StatusOr<Connection> connection = Connect();
  if (!connection.ok()) return connection.status();
  grpc::ClientContext context;
  connection->Prepare(&context);
  InterruptCanceller canceller(&context);
  // --json: stdout carries the report only, and stderr stays quiet.
  std::optional<ProgressLine> progress;
  if (!json) progress.emplace(stderr, isatty(STDERR_FILENO) != 0);

  std::unique_ptr<grpc::ClientReader<v1::GenerateEvent>> stream =
      connection->stub->Generate(&context, *request);
  std::optional<v1::GenerateResponse> result;
  int previews_saved = 0;
  absl::Status local_error;
  v1::GenerateEvent event;
  while (stream->Read(&event)) {
    if (event.has_accepted()) {
      if (progress) progress->Accepted(event.accepted().job_id(), event.accepted().queue_position(), absl::Now());
    } else if (event.has_progress() && event.progress().step() == 0) {
      if (progress) progress->Queued(event.progress().queue_position(), absl::Now());
    } else if (event.has_progress()) {
      if (progress) {
        progress->Step(event.progress().step(), event.progress().total_steps(), absl::Now());
      }
      if (!previews_dir.empty()) {
        local_error = SavePreviews(event.progress(), previews_dir);
        previews_saved += event.progress().previews_size();
      }
      if (want_animation && local_error.ok()) {
        for (const v1::Image& preview : event.progress().previews()) {
          if (preview.index() != 0) continue;
          absl::StatusOr<RgbaImage> frame = DecodePngToRgba(preview.data());
          if (!frame.ok()) {
            local_error = frame.status();
            break;
          }
          animation.Add(*std::move(frame));
        }
      }
    } else if (event.has_result()) {
      result = std::move(*event.mutable_result());
    }
    if (!local_error.ok()) {
      // A disk problem here makes the rest of the job useless; stop it on the server too.
      context.TryCancel();
      break;
    }
  }
  const grpc::Status status = stream->Finish();
  if (progress) progress->Finish(absl::Now());

  if (!local_error.ok()) return local_error;
  if (!status.ok() && canceller.interrupted()) {
    return absl::CancelledError("interrupted: the job was cancelled on the server");
  }
  if (!status.ok()) return FromGrpc(status);
  if (!result) return absl::InternalError("the stream ended OK but carried no result");
  return SaveAndReport(*result, *namer, previews_saved, &animation);
}

absl::Status RunModels() {
  absl::StatusOr<Connection> connection = Connect();
  if (!connection.ok()) return connection.status();
  grpc::ClientContext context;
  connection->Prepare(&context);
  v1::ListModelsResponse response;
  const grpc::Status status =
      connection->stub->ListModels(&context, v1::ListModelsRequest(), &response);
  if (!status.ok()) return FromGrpc(status);
  absl::PrintF("%s", FormatModelsTable(response));
  return absl::OkStatus();
}

absl::Status RunCancel(const std::vector<std::string>& args) {
  // The job id is positional; --job_id is accepted too, as generate takes it that way.
  std::string job_id = absl::GetFlag(FLAGS_job_id);
  if (args.size() > 1 || (args.size() == 1 && !job_id.empty())) {
    return absl::InvalidArgumentError("cancel takes exactly one JOB_ID");
  }
  if (args.size() == 1) job_id = args[0];
  if (job_id.empty()) return absl::InvalidArgumentError("usage: imagegen cancel JOB_ID");

  absl::StatusOr<Connection> connection = Connect();
  if (!connection.ok()) return connection.status();
  grpc::ClientContext context;
  connection->Prepare(&context);
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  v1::CancelJobResponse response;
  const grpc::Status status = connection->stub->CancelJob(&context, request, &response);
  if (!status.ok()) return FromGrpc(status);
  if (response.cancelled()) {
    absl::PrintF("job %s cancelled\n", job_id);
  } else {
    absl::PrintF("job %s was not cancelled\n", job_id);
  }
  return absl::OkStatus();
}

absl::Status Dispatch(const std::string& command, const std::vector<std::string>& args) {
  if (command == "generate" || command == "models") {
    if (!args.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unexpected argument \"", args[0], "\" (quote a prompt: --prompt \"a red bag\")"));
    }
    return command == "generate" ? RunGenerate() : RunModels();
  }
  if (command == "cancel") return RunCancel(args);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown command \"", command, "\"; see 'imagegen --help'"));
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kMainUsage);
  if (std::optional<std::string> help = HelpRequest(argc, argv)) {
    std::fputs(UsageOf(*help), stdout);
    return 0;
  }
  // Positional arguments (the command and its operands) may sit between flags; Abseil returns
  // them in order after argv[0].
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() < 2) {
    std::fputs(kMainUsage, stderr);
    return ExitCode(absl::InvalidArgumentError("no command"));
  }
  const std::string command = positional[1];
  const std::vector<std::string> args(positional.begin() + 2, positional.end());

  const absl::Status status = Dispatch(command, args);
  if (!status.ok() && command == "generate" && absl::GetFlag(FLAGS_json)) {
    absl::PrintF("{\"error\":{\"code\":%s,\"message\":%s}}\n",
                 JsonString(absl::StatusCodeToString(status.code())),
                 JsonString(status.message()));
  }
  if (!status.ok()) {
    // "UNAVAILABLE: failed to connect ...": the code name first, so that it can be grepped.
    absl::FPrintF(stderr, "imagegen %s: %s\n", command, status.ToString());
  }
  return ExitCode(status);
}

}  // namespace
}  // namespace imagegen::client

int main(int argc, char** argv) { return imagegen::client::Main(argc, argv); }
