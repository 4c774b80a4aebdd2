// imagegen-bench-speed: how fast a model bundle runs on this machine, in process (no network).
//
//   imagegen-bench-speed --model_dir=models/fashion-mnist-ldm --batches=1,8,32 --repeats=50
//   imagegen-bench-speed --device=cuda:0 --dtype=float16 --model_dir=DIR --width=512 --height=512
//       --batches=2,16 --repeats=30 --images=0 --engine_concurrency= --preview_formats=
//
// Prints a markdown table: the UNet's parameter count and time per call at each batch size (the
// raw limit of the hardware; mean and median, on a GPU with the device synchronised around each
// call), then the time for one whole image at the model's default settings
// through the engine (text encoding, every step with guidance, VAE decode, PNG), the median of
// --images runs, the engine's throughput under in-process loads, and what previews cost in each
// encoding (bytes per preview, time per job; --preview_formats). --images=0, an empty
// --engine_concurrency and an empty --preview_formats skip their part; with all three the engine
// is not started. Timings drift 30-50% between runs on shared 2-core machines: compare numbers
// from one run only.
#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <iostream>
#include <memory>
#include <numeric>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "core/engine/engine.h"
#include "core/model/model_bundle.h"
#include "core/model/precision.h"

ABSL_FLAG(std::string, model_dir, "models/fashion-mnist-ldm", "The model bundle to measure.");
ABSL_FLAG(std::string, device, "cpu", "Where the UNet loop and the in-process engine run: cpu or cuda:N.");
ABSL_FLAG(std::string, dtype, "float32",
          "The modules' precision for the UNet loop: float32, float16 or bfloat16 (the last two need CUDA).");
ABSL_FLAG(int, width, 0, "Image width of the UNet loop, in pixels; 0: the model's default.");
ABSL_FLAG(int, height, 0, "Image height of the UNet loop, in pixels; 0: the model's default.");
ABSL_FLAG(std::string, batches, "1,8,32", "UNet batch sizes (rows) to time.");
ABSL_FLAG(int, repeats, 50, "Timed UNet calls per batch size (after 5 warm-up calls).");
ABSL_FLAG(int, images, 10, "Whole images to time through the engine; 0: skip.");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads; 0: LibTorch's default.");
ABSL_FLAG(std::string, engine_concurrency, "1,2,4,8,16",
          "Closed-loop in-process loads: jobs kept in flight in the engine (no network); empty: skip.");
ABSL_FLAG(int, engine_requests, 48, "Jobs per in-process load (after 4 warm-up jobs).");
ABSL_FLAG(std::string, batching, "step", "step or request (the engine's batching).");
ABSL_FLAG(std::string, preview_formats, "png,jpeg,webp",
          "Preview encodings to compare (bytes per preview, time per job); empty: skip.");
ABSL_FLAG(int, preview_side, 128, "Image side of the preview comparison's jobs, in pixels.");
ABSL_FLAG(bool, preview_vae_decode, false,
          "The preview comparison's previews by the VAE decoder instead of the latent approximation.");

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Mean(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / v.size(); }

// Records the end of one job, and the bytes and count of the previews it received.
class WaitListener : public imagegen::JobListener {
 public:
  void OnAccepted(const std::string&, int) override {}
  void OnProgress(imagegen::ProgressUpdate update) override {
    for (const imagegen::EncodedImage& p : update.previews) {
      preview_bytes += static_cast<int64_t>(p.data.size());
      ++previews;
    }
  }
  void OnResult(imagegen::JobResult) override { done.Notify(); }
  void OnError(absl::Status s) override {
    status = s;
    done.Notify();
  }
  absl::Notification done;
  absl::Status status;
  int64_t preview_bytes = 0;  // written by the engine before `done`
  int previews = 0;
};

// The UNet's weights. A frozen module keeps them as graph constants rather than parameters:
// count both.
int64_t CountUnetParameters(imagegen::ModelBundle& bundle) {
  int64_t params = 0;
  for (const auto& p : bundle.unet().parameters()) params += p.numel();
  for (const torch::jit::Node* node : bundle.unet().get_method("forward").graph()->nodes()) {
    if (node->kind() != c10::prim::Constant) continue;
    auto value = torch::jit::toIValue(node->output());
    if (value && value->isTensor()) params += value->toTensor().numel();
  }
  return params;
}

// Waits for everything queued on a CUDA device, so that a timer around a call measures the call
// and not its launch; nothing elsewhere.
void Synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
}

// The UNet alone: one table row per --batches size, the mean and median of --repeats calls after
// 5 warm-up calls, on latents of h x w in the bundle's device and dtype (timesteps float32, as
// the engine passes them). Returns the exit status: 0, or 2 for a bad --batches.
int MeasureUnet(imagegen::ModelBundle& bundle, int64_t h, int64_t w) {
  const imagegen::ModelConfig& c = bundle.config();
  const torch::Device device = bundle.device();
  const auto opts = at::TensorOptions().device(device);
  std::cout << "| UNet batch (rows) | ms per call (mean) | ms per call (p50) | image-steps per second (p50) |\n"
               "|---|---|---|---|\n";
  at::Tensor context =
      bundle.text_encoder().forward({at::ones({1, c.max_length}, opts.dtype(at::kLong))}).toTensor();
  for (absl::string_view b : absl::StrSplit(absl::GetFlag(FLAGS_batches), ',')) {
    int batch = 0;
    if (!absl::SimpleAtoi(b, &batch) || batch < 1) {
      std::cerr << "--batches: \"" << b << "\" is not a positive integer\n";
      return 2;
    }
    at::Tensor x = at::randn({batch, c.latent_channels, h, w}, opts.dtype(bundle.dtype()));
    at::Tensor t = at::full({batch}, 500.0f, opts.dtype(at::kFloat));
    at::Tensor ctx = context.expand({batch, c.max_length, c.context_dim}).contiguous();
    std::vector<double> ms;
    for (int i = 0; i < 5 + absl::GetFlag(FLAGS_repeats); ++i) {
      Synchronize(device);
      const absl::Time start = absl::Now();
      bundle.unet().forward({x, t, ctx});
      Synchronize(device);
      if (i >= 5) ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    }
    const double p50 = Median(ms);
    std::cout << absl::StrFormat("| %d | %.2f | %.2f | %.0f |\n", batch, Mean(ms), p50, batch * 1000.0 / p50);
  }
  return 0;
}

// Job `i` at the model's defaults.
imagegen::JobRequest DefaultRequest(const imagegen::ModelConfig& c, int i) {
  imagegen::JobRequest r;
  r.job_id = absl::StrFormat("bench-%d", i);
  r.model = c.name;
  r.prompt = "a pair of trousers";
  r.width = c.default_width;
  r.height = c.default_height;
  r.steps = c.default_steps;
  r.guidance_scale = c.default_guidance_scale;
  r.sampler = c.default_sampler;
  r.seed = i;
  return r;
}

// One whole image at the defaults through the engine, one job at a time: the median of --images
// runs after one warm-up run. Returns the exit status: 0, or 1 when a job fails.
int MeasureOneImage(imagegen::Engine& engine, const imagegen::ModelConfig& c) {
  if (absl::GetFlag(FLAGS_images) <= 0) return 0;
  std::vector<double> ms;
  for (int i = 0; i < 1 + absl::GetFlag(FLAGS_images); ++i) {
    imagegen::JobRequest r = DefaultRequest(c, i);
    auto listener = std::make_shared<WaitListener>();
    const absl::Time start = absl::Now();
    if (auto s = engine.Submit(r, listener); !s.ok()) {
      std::cerr << s << "\n";
      return 1;
    }
    listener->done.WaitForNotification();
    if (!listener->status.ok()) {
      std::cerr << listener->status << "\n";
      return 1;
    }
    if (i > 0) ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));  // first run warms up
  }
  std::cout << absl::StrFormat(
      "One image at the defaults (%s, %d steps, guidance %.1f), through the engine: %.1f ms (median of %d)\n",
      c.default_sampler, c.default_steps, c.default_guidance_scale, Median(ms), static_cast<int>(ms.size()));
  return 0;
}

// The engine alone under closed-loop loads: N jobs in flight, each replaced when it ends, for
// each N of --engine_concurrency. Returns the exit status: 0, or 2 for a bad
// --engine_concurrency (a failed submission exits 1).
int MeasureEngineLoads(imagegen::Engine& engine, const imagegen::ModelConfig& c) {
  if (absl::GetFlag(FLAGS_engine_concurrency).empty()) return 0;
  std::cout << "\n| in-process concurrency | images/s | batching |\n|---|---|---|\n";
  int next_id = 1000;
  for (absl::string_view n : absl::StrSplit(absl::GetFlag(FLAGS_engine_concurrency), ',')) {
    int concurrency = 0;
    if (!absl::SimpleAtoi(n, &concurrency) || concurrency < 1) {
      std::cerr << "--engine_concurrency: \"" << n << "\" is not a positive integer\n";
      return 2;
    }
    const int total = 4 + absl::GetFlag(FLAGS_engine_requests);
    std::vector<std::shared_ptr<WaitListener>> in_flight;
    int submitted = 0, done = 0;
    absl::Time measured_start;
    auto submit = [&] {
      auto l = std::make_shared<WaitListener>();
      if (auto st = engine.Submit(DefaultRequest(c, next_id++), l); !st.ok()) {
        std::cerr << st << "\n";
        std::exit(1);
      }
      ++submitted;
      in_flight.push_back(l);
    };
    while (submitted < std::min(concurrency, total)) submit();
    while (done < total) {
      // Wait for the oldest job in flight, then replace it (FIFO is fine for a closed loop).
      in_flight.front()->done.WaitForNotification();
      in_flight.erase(in_flight.begin());
      if (++done == 4) measured_start = absl::Now();
      if (submitted < total) submit();
    }
    const double seconds = absl::ToDoubleSeconds(absl::Now() - measured_start);
    std::cout << absl::StrFormat("| %d | %.1f | %s |\n", concurrency, (total - 4) / seconds,
                                 absl::GetFlag(FLAGS_batching));
  }
  return 0;
}

// Previews on every step in each of --preview_formats at --preview_side pixels: what a stream
// carries per preview image, and what encoding costs the job. Returns the exit status.
int MeasurePreviewFormats(imagegen::Engine& engine, const imagegen::ModelConfig& c) {
  const std::string formats = absl::GetFlag(FLAGS_preview_formats);
  if (formats.empty()) return 0;
  const int side = absl::GetFlag(FLAGS_preview_side);
  std::cout << absl::StrFormat(
      "\nPreviews on every step (%s, %dx%d, %d steps), one job at a time:\n\n"
      "| preview format | bytes per preview | vs PNG | ms per job (median of 3) |\n|---|---|---|---|\n",
      absl::GetFlag(FLAGS_preview_vae_decode) ? "VAE decoder" : "latent approximation", side, side,
      c.default_steps);
  double png_bytes = 0;
  int next_id = 5000;
  for (absl::string_view name : absl::StrSplit(formats, ',')) {
    imagegen::ImageFormat format;
    if (name == "png") {
      format = imagegen::ImageFormat::kPng;
    } else if (name == "jpeg") {
      format = imagegen::ImageFormat::kJpeg;
    } else if (name == "webp") {
      format = imagegen::ImageFormat::kWebp;
    } else {
      std::cerr << "--preview_formats: \"" << name << "\"; allowed: png, jpeg, webp\n";
      return 2;
    }
    std::vector<double> ms;
    double bytes = 0;
    for (int i = 0; i < 4; ++i) {  // the first warms up
      imagegen::JobRequest r = DefaultRequest(c, next_id++);
      r.width = r.height = side;
      r.preview_every_n_steps = 1;
      r.preview_format = format;
      r.preview_vae_decode = absl::GetFlag(FLAGS_preview_vae_decode);
      auto listener = std::make_shared<WaitListener>();
      const absl::Time start = absl::Now();
      if (auto st = engine.Submit(r, listener); !st.ok()) {
        std::cerr << st << "\n";
        return 1;
      }
      listener->done.WaitForNotification();
      if (!listener->status.ok() || listener->previews == 0) {
        std::cerr << "preview job failed: " << listener->status << "\n";
        return 1;
      }
      if (i == 0) continue;
      ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
      bytes = static_cast<double>(listener->preview_bytes) / listener->previews;
    }
    if (format == imagegen::ImageFormat::kPng) png_bytes = bytes;
    std::cout << absl::StrFormat("| %s | %.0f | %s | %.1f |\n", name, bytes,
                                 png_bytes > 0 ? absl::StrFormat("%.2f", bytes / png_bytes) : "-", Median(ms));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int threads = absl::GetFlag(FLAGS_threads);
  if (threads > 0) at::set_num_threads(threads);
  c10::InferenceMode guard;

  auto precision = imagegen::ParsePrecision(absl::GetFlag(FLAGS_dtype));
  if (!precision.ok()) {
    std::cerr << "--dtype: " << precision.status() << "\n";
    return 2;
  }
  const std::string device = absl::GetFlag(FLAGS_device);
  auto bundle = imagegen::ModelBundle::Load(absl::GetFlag(FLAGS_model_dir), device, *precision);
  if (!bundle.ok()) {
    std::cerr << bundle.status() << "\n";
    return 1;
  }
  const imagegen::ModelConfig c = (*bundle)->config();  // a copy: the bundle goes before the engine comes
  const int width = absl::GetFlag(FLAGS_width) > 0 ? absl::GetFlag(FLAGS_width) : c.default_width;
  const int height = absl::GetFlag(FLAGS_height) > 0 ? absl::GetFlag(FLAGS_height) : c.default_height;
  if (width % c.size_multiple != 0 || height % c.size_multiple != 0) {
    std::cerr << absl::StrFormat("--width/--height: %dx%d; model %s takes multiples of %d\n", width, height, c.name,
                                 c.size_multiple);
    return 2;
  }
  const int64_t params = CountUnetParameters(**bundle);
  const int64_t h = height / c.downsampling_factor, w = width / c.downsampling_factor;
  std::cout << absl::StrFormat("model %s, %dx%d (latent %dx%dx%d), device %s, dtype %s, LibTorch threads %d\n\n",
                               c.name, width, height, c.latent_channels, h, w, device,
                               imagegen::PrecisionName(*precision), at::get_num_threads());
  if (const int status = MeasureUnet(**bundle, h, w); status != 0) return status;
  std::cout << absl::StrFormat("\nUNet parameters: %d\n", params);

  if (absl::GetFlag(FLAGS_images) <= 0 && absl::GetFlag(FLAGS_engine_concurrency).empty() &&
      absl::GetFlag(FLAGS_preview_formats).empty()) {
    return 0;  // no engine part asked for: do not load the bundle again
  }
  bundle->reset();  // one copy of the weights on the device at a time
  imagegen::Engine::Options options;
  options.devices = {device};
  options.precision = *precision;
  options.intra_op_threads = threads;
  options.request_level_batching = absl::GetFlag(FLAGS_batching) == "request";
  auto engine = imagegen::Engine::Create(options, {absl::GetFlag(FLAGS_model_dir)}, nullptr);
  if (!engine.ok()) {
    std::cerr << engine.status() << "\n";
    return 1;
  }
  if (const int status = MeasureOneImage(**engine, c); status != 0) return status;
  if (const int status = MeasureEngineLoads(**engine, c); status != 0) return status;
  return MeasurePreviewFormats(**engine, c);
}
