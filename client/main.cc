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
#include "client/connection.h"
#include "client/connection_flags.h"
#include "client/interrupt.h"
#include "client/progress.h"
#include "imagegen/v1/imagegen.grpc.pb.h"
#include "imagegen/v1/imagegen.pb.h"

// Flags of every subcommand. Abseil flags are process-wide, so each subcommand reads the ones it
// uses and the usage text says which belong where. The connection flags (--server, --tls_ca,
// --tls_cert, --tls_key, --token_file) are client/connection_flags.cc's.
ABSL_FLAG(double, timeout, 0, "deadline of the call in seconds; 0: none");

ABSL_FLAG(std::string, prompt, "", "what to draw");
ABSL_FLAG(std::string, negative_prompt, "", "what to steer away from");
ABSL_FLAG(std::string, out, "",
          "file to write the image to; its extension (.png, .jpg, .jpeg, .webp) picks the format "
          "(see 'imagegen help generate')");
ABSL_FLAG(int32_t, quality, 0, "JPEG and WebP quality of the images, 1..100; 0: the server's (90)");
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
ABSL_FLAG(std::optional<std::string>, preview_format, std::nullopt,
          "encoding of the previews: png, jpeg or webp; unset: png");
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
                          '/': DIR/<seed>.png. The extension picks the format: .png, .jpg or
                          .jpeg, .webp; none, or a directory: PNG; any other is refused (exit 3).
                          Each file gets the extension of the format the server sent: "image"
                          becomes image.png, and image.jpg becomes image.png from a server that
                          sent PNG (with a warning)
  --quality N             JPEG and WebP quality, 1..100 (higher: larger files, closer to the
                          original); 0 (default): the server's, 90. PNG ignores it
  --steps N               denoising steps
  --seed N                seed of image 0 (image i uses seed + i); unset: random
  --sampler NAME          ddpm, ddim, ... (see 'imagegen models')
  --guidance S            classifier-free guidance scale, 1..30
  --size WxH              image size in pixels, e.g. 512x512 (or 512)
  --num_images N          images to generate
  --model NAME            model to use (see 'imagegen models')
  --previews DIR          save preview frames as DIR/step-0001-image-0.png, ...
  --preview_every N       a preview every N steps (default 1 with --previews or --animation)
  --preview_format F      encoding of the previews: png (default), jpeg or webp; the preview
                          files get its extension (step-0001-image-0.webp). WebP is the smallest
                          on the wire; JPEG and WebP are lossy (the server's preview quality)
  --animation FILE        write the denoising sequence of image 0 (every preview received, then
                          the final image, held 1 s) as an animated WebP; implies a preview
                          every step unless --preview_every is given. Works with every
                          --preview_format and --out format: PNG, JPEG and WebP frames are all
                          decoded (lossy previews make lossy frames)
  --json                  no progress line or text: print one JSON object on stdout at the end
                          (job_id, model, sampler, steps, guidance_scale, images, previews_saved,
                          animation, timings, warnings), or {"error": {"code", "message"}} on
                          failure
  --priority N            scheduling priority, -100..100
  --job_id ID             choose the job id (for 'imagegen cancel')
  --init_image FILE       image to image: start from this PNG or JPEG (its size unless --size)
  --strength S            image to image: share of the steps that run, (0, 1]; 1 keeps
                          little of the init image, 0.3 keeps most of it
  --server HOST:PORT      the server (default localhost:50051)
  --timeout SECONDS       deadline of the call; 0 (default): none
  --tls_ca, --tls_cert, --tls_key, --token_file   TLS and the bearer token (see 'imagegen help')

The server's warnings (prompt words the model does not know and ignored, a prompt cut at the
text encoder's length) are printed on stderr as "imagegen: warning: ...", with --json too, and
listed in the JSON's "warnings" (always present, [] when there are none).

Examples:
  imagegen generate --prompt "a pair of trousers" --out trousers.png
  imagegen generate --prompt "a sneaker" --steps 30 --seed 42 --num_images 4 --out shoes/
  imagegen generate --prompt "a bag" --out bag.png --previews frames --preview_every 5
  imagegen generate --prompt "a dress" --init_image trousers.png --strength 0.6 --out dress.png
  imagegen generate --prompt "a coat" --steps 20 --out coat.png --animation coat.webp
  imagegen generate --prompt "a sandal" --out sandal.jpg --quality 80
  imagegen generate --prompt "a boot" --out boot.webp --animation boot-anim.webp \
      --preview_format webp
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

// Reads the TLS files and the token before any call, so that a bad flag fails at once.
absl::StatusOr<Connection> Connect() {
  return Connection::Create(ConnectionOptionsFromFlags());
}

// Sets the call's bearer token and its deadline (--timeout).
void PrepareContext(const Connection& connection, grpc::ClientContext* context) {
  connection.Authorize(context);
  const double seconds = absl::GetFlag(FLAGS_timeout);
  if (seconds <= 0) return;
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6)));
}

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  file.close();
  if (!file) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// --out names a directory when it ends with '/' or is an existing one.
bool OutIsDirectory(const std::string& out) {
  return !out.empty() && (out.back() == '/' || fs::is_directory(out));
}

bool WantsPreviews() {
  return !absl::GetFlag(FLAGS_previews).empty() || !absl::GetFlag(FLAGS_animation).empty();
}

// The encodings: output_format from --out's extension, --quality, and the previews' (every step
// by default, --preview_format) when --previews or --animation wants them.
absl::Status SetEncodings(v1::GenerateRequest* request) {
  const std::string out = absl::GetFlag(FLAGS_out);
  absl::StatusOr<v1::ImageFormat> format = OutputFormatFromOut(out, OutIsDirectory(out));
  if (!format.ok()) return format.status();
  request->set_output_format(*format);
  absl::StatusOr<uint32_t> quality = ParseQuality(absl::GetFlag(FLAGS_quality));
  if (!quality.ok()) return quality.status();
  request->set_quality(*quality);
  const std::optional<std::string> preview_format = absl::GetFlag(FLAGS_preview_format);
  if (!WantsPreviews()) {
    if (preview_format) {
      return absl::InvalidArgumentError(
          "--preview_format needs --previews DIR or --animation FILE to use the previews");
    }
    return absl::OkStatus();
  }
  absl::StatusOr<v1::ImageFormat> preview = ParsePreviewFormat(preview_format.value_or("png"));
  if (!preview.ok()) return preview.status();
  const uint32_t every = absl::GetFlag(FLAGS_preview_every);
  request->mutable_preview()->set_every_n_steps(every == 0 ? 1 : every);
  request->mutable_preview()->set_format(*preview);
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
  if (absl::Status status = SetEncodings(&request); !status.ok()) return status;
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

// Where the previews of a Generate stream go: files in --previews DIR, and image 0's frames of
// --animation. Not thread-safe: the thread that reads the stream uses it.
class PreviewSink {
 public:
  // `dir` empty: no files; `animate` false: no frames.
  PreviewSink(std::string dir, bool animate) : dir_(std::move(dir)), animate_(animate) {}

  // Saves the step's previews and decodes image 0's as a frame. Errors: a file that cannot be
  // written (PERMISSION_DENIED), a preview that cannot be decoded (INVALID_ARGUMENT).
  absl::Status Add(const v1::Progress& progress) {
    for (const v1::Image& image : progress.previews()) {
      if (!dir_.empty()) {
        absl::Status status = WriteFile(
            PreviewPath(dir_, progress.step(), image.index(), image.format()), image.data());
        if (!status.ok()) return status;
        ++saved_;
      }
      if (animate_ && image.index() == 0) {
        absl::Status status = AddFrame(image);
        if (!status.ok()) return status;
      }
    }
    return absl::OkStatus();
  }

  // Adds `image` (a preview or the final image) to the animation, whatever its encoding.
  absl::Status AddFrame(const v1::Image& image) {
    absl::StatusOr<RgbaImage> frame = DecodeImageToRgba(image.data());
    if (!frame.ok()) return frame.status();
    animation_.Add(*std::move(frame));
    return absl::OkStatus();
  }

  int saved() const { return saved_; }
  const AnimationBuilder& animation() const { return animation_; }

 private:
  const std::string dir_;
  const bool animate_;
  int saved_ = 0;
  AnimationBuilder animation_;
};

// What a Generate stream brought.
struct StreamOutcome {
  grpc::Status status;
  std::optional<v1::GenerateResponse> result;
  // A preview that could not be saved or decoded; the job was cancelled on the server.
  absl::Status local_error;
};

// Reads the stream to its end, showing progress on `progress` (null: none) and handing the
// previews to `previews`. A local error cancels the call: the rest of the job would be useless.
StreamOutcome ReadGenerateStream(const Connection& connection, const v1::GenerateRequest& request,
                                 grpc::ClientContext* context, ProgressLine* progress,
                                 PreviewSink* previews) {
  StreamOutcome outcome;
  std::unique_ptr<grpc::ClientReader<v1::GenerateEvent>> stream =
      connection.stub()->Generate(context, request);
  v1::GenerateEvent event;
  while (stream->Read(&event)) {
    if (event.has_accepted()) {
      if (progress) {
        progress->Accepted(event.accepted().job_id(), event.accepted().queue_position(),
                           absl::Now());
      }
    } else if (event.has_progress() && event.progress().step() == 0) {
      if (progress) progress->Queued(event.progress().queue_position(), absl::Now());
    } else if (event.has_progress()) {
      if (progress) {
        progress->Step(event.progress().step(), event.progress().total_steps(), absl::Now());
      }
      outcome.local_error = previews->Add(event.progress());
    } else if (event.has_result()) {
      outcome.result = std::move(*event.mutable_result());
    }
    if (!outcome.local_error.ok()) {
      context->TryCancel();
      break;
    }
  }
  outcome.status = stream->Finish();
  return outcome;
}

// The server's warnings, then the client's own: images in another format than --out asked for
// (a server that does not know the format), written with their own format's extension.
std::vector<std::string> ResultWarnings(const v1::GenerateResponse& result,
                                        v1::ImageFormat asked) {
  std::vector<std::string> warnings(result.warnings().begin(), result.warnings().end());
  for (const v1::Image& image : result.images()) {
    if (FormatName(image.format()) == FormatName(asked)) continue;
    warnings.push_back(absl::StrCat("the server sent ", FormatName(image.format()),
                                    " images, not the ", FormatName(asked), " that --out asks for;",
                                    " they are written with the extension ",
                                    FileExtension(image.format())));
    break;
  }
  return warnings;
}

// The --json report of a finished job.
std::string ResultJson(const v1::GenerateResponse& result, const std::vector<std::string>& paths,
                       int previews_saved, const std::string& animation,
                       const std::vector<std::string>& warnings) {
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
                  ",\"total_seconds\":", JsonNumber(t.total_seconds()), "},\"warnings\":[");
  for (size_t i = 0; i < warnings.size(); ++i) {
    absl::StrAppend(&json, i == 0 ? "" : ",", JsonString(warnings[i]));
  }
  absl::StrAppend(&json, "]}");
  return json;
}

// Writes each image where `namer` says; returns the paths, in the result's order.
absl::StatusOr<std::vector<std::string>> WriteImages(const v1::GenerateResponse& result,
                                                     const OutputNamer& namer) {
  std::vector<std::string> paths;
  for (const v1::Image& image : result.images()) {
    const std::string path = namer.PathFor(image.seed(), result.images_size(), image.format());
    absl::Status status = WriteFile(path, image.data());
    if (!status.ok()) return status;
    paths.push_back(path);
  }
  return paths;
}

// The final image 0 ends the animation, held 1 s.
absl::Status WriteAnimation(const v1::GenerateResponse& result, const std::string& path,
                            PreviewSink* previews) {
  for (const v1::Image& image : result.images()) {
    if (image.index() != 0) continue;
    absl::Status status = previews->AddFrame(image);
    if (!status.ok()) return status;
  }
  return previews->animation().Write(path, /*frame_ms=*/100, /*last_frame_ms=*/1000);
}

void PrintTextReport(const v1::GenerateResponse& result, const std::vector<std::string>& paths,
                     const PreviewSink& previews, const std::string& animation_path) {
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
  if (previews.saved() > 0) {
    absl::PrintF("previews: %d frames in %s\n", previews.saved(), absl::GetFlag(FLAGS_previews));
  }
  if (!animation_path.empty()) {
    absl::PrintF("animation: %d frames in %s\n", previews.animation().size(), animation_path);
  }
}

absl::Status SaveAndReport(const v1::GenerateResponse& result, v1::ImageFormat asked,
                           const OutputNamer& namer, PreviewSink* previews) {
  // Warnings go to stderr even with --json: like errors, they are for the person running it.
  const std::vector<std::string> warnings = ResultWarnings(result, asked);
  for (const std::string& warning : warnings) {
    absl::FPrintF(stderr, "imagegen: warning: %s\n", warning);
  }
  absl::StatusOr<std::vector<std::string>> paths = WriteImages(result, namer);
  if (!paths.ok()) return paths.status();
  const std::string animation_path = absl::GetFlag(FLAGS_animation);
  if (!animation_path.empty()) {
    absl::Status status = WriteAnimation(result, animation_path, previews);
    if (!status.ok()) return status;
  }
  if (absl::GetFlag(FLAGS_json)) {
    absl::PrintF("%s\n", ResultJson(result, *paths, previews->saved(), animation_path, warnings));
  } else {
    PrintTextReport(result, *paths, *previews, animation_path);
  }
  return absl::OkStatus();
}

absl::Status RunGenerate() {
  absl::StatusOr<v1::GenerateRequest> request = BuildGenerateRequest();
  if (!request.ok()) return request.status();
  absl::StatusOr<OutputNamer> namer = PrepareOutputs();
  if (!namer.ok()) return namer.status();
  absl::StatusOr<Connection> connection = Connect();
  if (!connection.ok()) return connection.status();

  grpc::ClientContext context;
  PrepareContext(*connection, &context);
  InterruptCanceller canceller(&context);
  // --json: stdout carries the report only, and stderr has no progress line.
  std::optional<ProgressLine> progress;
  if (!absl::GetFlag(FLAGS_json)) progress.emplace(stderr, isatty(STDERR_FILENO) != 0);
  PreviewSink previews(absl::GetFlag(FLAGS_previews), !absl::GetFlag(FLAGS_animation).empty());
  StreamOutcome outcome = ReadGenerateStream(*connection, *request, &context,
                                             progress ? &*progress : nullptr, &previews);
  if (progress) progress->Finish(absl::Now());

  if (!outcome.local_error.ok()) return outcome.local_error;
  if (!outcome.status.ok() && canceller.interrupted()) {
    return absl::CancelledError("interrupted: the job was cancelled on the server");
  }
  if (!outcome.status.ok()) return FromGrpc(outcome.status);
  if (!outcome.result) return absl::InternalError("the stream ended OK but carried no result");
  return SaveAndReport(*outcome.result, request->output_format(), *namer, &previews);
}

absl::Status RunModels() {
  absl::StatusOr<Connection> connection = Connect();
  if (!connection.ok()) return connection.status();
  grpc::ClientContext context;
  PrepareContext(*connection, &context);
  v1::ListModelsResponse response;
  const grpc::Status status =
      connection->stub()->ListModels(&context, v1::ListModelsRequest(), &response);
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
  PrepareContext(*connection, &context);
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  v1::CancelJobResponse response;
  const grpc::Status status = connection->stub()->CancelJob(&context, request, &response);
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
