// imagegen-loadgen: the load generator of the serving benchmark (issue 5) and of the soak
// (bench/soak.sh, issue 8).
//
//   imagegen-loadgen --mode=closed --concurrency=4 --requests=40
//   imagegen-loadgen --mode=poisson --rate=10 --duration_s=10
//   imagegen-loadgen --mode=poisson --rate=6 --duration_s=600 --mix --cancel_fraction=0.1
//       --cancel_job_fraction=0.1 --deadline_fraction=0.05         (one command line)
//
// Every request is one streaming Generate call with its own seed. The client stamps, per call,
// its first Progress, its first Progress with previews and its result, and prints one JSON line
// on stdout (and a readable one on stderr). With --mix each request draws its own shape; the
// --*_fraction flags make some requests cancel themselves or run out of time on purpose, and
// every end is sorted into expected and unexpected. Like `imagegen` it speaks only the public API.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/random/distributions.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "client/connection.h"
#include "client/connection_flags.h"
#include "client/loadgen_report.h"
#include "imagegen/v1/imagegen.grpc.pb.h"
#include "imagegen/v1/imagegen.pb.h"

ABSL_FLAG(std::string, mode, "closed", "closed or poisson");
ABSL_FLAG(int, concurrency, 1, "closed: clients, each with one request in flight");
ABSL_FLAG(int64_t, requests, 100, "closed: measured requests, after the warm-up ones");
ABSL_FLAG(int64_t, warmup, 0, "closed: requests sent (and waited for) before the measured ones");
ABSL_FLAG(double, rate, 1, "poisson: mean arrivals per second");
ABSL_FLAG(double, duration_s, 60, "poisson: seconds of measured arrivals, after the warm-up");
ABSL_FLAG(double, warmup_s, 0, "poisson: seconds of arrivals before the measured ones");
ABSL_FLAG(double, timeout_s, 600, "deadline of each request in seconds");
ABSL_FLAG(std::string, prompt, "a photo of a sneaker", "what to draw");
ABSL_FLAG(uint32_t, steps, 0, "denoising steps; 0: the model's default");
ABSL_FLAG(uint32_t, num_images, 1, "images per request");
ABSL_FLAG(uint32_t, width, 0, "image width in pixels; 0: the model's default");
ABSL_FLAG(uint32_t, height, 0, "image height in pixels; 0: the model's default");
ABSL_FLAG(float, guidance, 0, "classifier-free guidance scale; 0: the model's default");
ABSL_FLAG(std::string, sampler, "", "sampler name; empty: the model's default");
ABSL_FLAG(uint32_t, preview_every, 1, "a LATENT_APPROX preview every N steps; 0: none");
ABSL_FLAG(uint64_t, seed, 1, "seed of request 0; request k uses seed + k * num_images");
ABSL_FLAG(std::string, json, "", "also write the JSON summary to this file");
ABSL_FLAG(bool, mix, false, "each request draws its own shape (overrides the shape flags)");
ABSL_FLAG(std::string, mix_samplers,
          "ddpm,ddim,pndm,euler,euler_a,heun,dpmpp_2m,dpmpp_2m_karras,unipc",
          "--mix: the samplers to draw from");
ABSL_FLAG(double, mix_img2img, 0.1, "--mix: share of image-to-image requests");
ABSL_FLAG(double, cancel_fraction, 0, "share of requests that cancel their own call mid-stream");
ABSL_FLAG(double, cancel_job_fraction, 0,
          "share of requests cancelled by a CancelJob call mid-stream");
ABSL_FLAG(double, deadline_fraction, 0, "share of requests sent with a short deadline");
ABSL_FLAG(double, short_timeout_s, 0.3, "the short deadlines are drawn from [0.01, this] seconds");

namespace imagegen::loadgen {
namespace {

namespace v1 = imagegen::v1;
using client::Connection;

constexpr char kUsage[] = R"(imagegen-loadgen: load an imagegen server and measure it.

Usage:
  imagegen-loadgen --mode=closed --concurrency=N --requests=M [--warmup=K] [flags]
  imagegen-loadgen --mode=poisson --rate=R --duration_s=D [--warmup_s=W] [flags]

closed:  N clients, each sending its next request as soon as its previous one ended. K warm-up
         requests run first (at the same concurrency) and are all waited for; then M measured
         requests run. Wall time: from the start of the measured requests to the last result.
poisson: open loop. Arrivals at exponential inter-arrival times of mean 1/R seconds, each on a
         call of its own, whatever the server does. Arrivals last W + D seconds; those of the
         first W seconds are warm-up. Wall time: from the end of the warm-up to the end of the
         arrivals or the last result of a measured request, whichever is later.

Each request is a streaming Generate with its own seed. Per request: latency (send to result),
time to the first denoising step (the first Progress with step > 0: one at step 0 only reports
the queue position), time to the first Progress with previews. Statistics cover the OK measured
requests; failures are counted by status code. Prints one JSON line on stdout and a readable
summary on stderr.

Before the run it connects (within 10 s) and makes one ListModels call, so that a wrong
--server, TLS file or token fails at once rather than as every request.

Connection (as 'imagegen' takes them):
  --server HOST:PORT    default localhost:50051
  --tls_ca FILE         TLS: trust the server's certificate if this PEM CA signed it
  --tls_cert FILE       mutual TLS: the client's PEM certificate (with --tls_key, --tls_ca)
  --tls_key FILE        mutual TLS: its PEM private key
  --token_file FILE     send the bearer token in FILE (its first line that is not blank or a
                        '#' comment) with every call; unset: the environment variable
                        IMAGEGEN_TOKEN, if set

Flags:
  --timeout_s S         deadline of each request (default 600)
  --prompt TEXT         default "a photo of a sneaker"
  --steps N             0 (default): the model's default
  --num_images N        images per request (default 1)
  --guidance S          0 (default): the model's default
  --sampler NAME        empty (default): the model's default
  --preview_every N     a LATENT_APPROX preview every N steps (default 1); 0: none
  --seed N              request k uses seed N + k * num_images (default 1)
  --json FILE           also write the JSON line to FILE

Soak (bench/soak.sh):
  --mix                 each request draws its shape from its seed: 1-4 images, 5-40 steps, a
                        sampler of --mix_samplers, guidance 1 or 1.5-6, 24, 32 or 40 pixels,
                        a prompt (sometimes a negative one, or none at guidance 1), a priority,
                        no previews, LATENT_APPROX or VAE_DECODE ones; a --mix_img2img share
                        (default 0.1) starts from an image the server drew first. The shape
                        flags above are ignored.
  --cancel_fraction F   share of requests that cancel their own call (ClientContext::TryCancel)
                        at a random point: once accepted, or after a random share of the steps
  --cancel_job_fraction F  share cancelled the same way by a CancelJob call with their job id
  --deadline_fraction F share sent with a deadline drawn from [0.01, --short_timeout_s] seconds
                        (default 0.3) instead of --timeout_s
  Every end is expected or not. Expected: OK (a cancel or a deadline may come too late),
  RESOURCE_EXHAUSTED before JobAccepted (a full queue), CANCELLED when the request cancelled
  itself or its CancelJob found the job, DEADLINE_EXCEEDED for a short deadline; CancelJob
  answering OK or NOT_FOUND (the job had ended). Anything else is unexpected, and so is an OK
  result with the wrong number of images. The JSON line counts both, per plan.

Exit status: 0 when at least one measured request succeeded; otherwise a failed request's gRPC
status code (14 UNAVAILABLE when the server cannot be reached, 16 UNAUTHENTICATED when the token
is missing or wrong, 3 INVALID_ARGUMENT for a bad flag, 5 NOT_FOUND for an unreadable file).
)";

// ---------------------------------------------------------------------------------------------
// One request

// A request and how to send it.
struct RequestSpec {
  v1::GenerateRequest request;
  Plan plan = Plan::kPlain;
  // kCancel, kCancelJob: cancel once accepted when below 0.1, else at the first Progress whose
  // step reaches this share of its total_steps.
  double cancel_at = 0;
  absl::Duration timeout;
};

Clock::duration ChronoSeconds(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

absl::Duration Between(Clock::time_point from, Clock::time_point to) {
  return absl::FromChrono(to - from);
}

// One streaming Generate call on gRPC's callback API: gRPC's threads deliver the events, so an
// open loop can keep hundreds of calls in flight without a thread each. The call deletes itself
// when it has ended, and so has its CancelJob call if it sent one, then hands its Sample to
// `done` (which runs on a gRPC thread).
class GenerateCall final : public grpc::ClientReadReactor<v1::GenerateEvent> {
 public:
  using DoneFn = std::function<void(const Sample&)>;

  // `sent` is when the request counts as sent; its durations start there. `connection` must
  // outlive the call.
  static void Start(const Connection& connection, RequestSpec spec, Clock::time_point sent,
                    DoneFn done) {
    auto* call = new GenerateCall(connection, std::move(spec), sent, std::move(done));
    call->context_.set_deadline(std::chrono::system_clock::now() +
                                absl::ToChronoMicroseconds(call->spec_.timeout));
    connection.Authorize(&call->context_);
    connection.stub()->async()->Generate(&call->context_, &call->spec_.request, call);
    call->StartRead(&call->event_);
    call->StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream has ended; OnDone follows with its status
    Observe(Clock::now());
    MaybeCancel();
    StartRead(&event_);
  }

  void OnDone(const grpc::Status& status) override {
    sample_.code = status.error_code();
    // A stream that ends OK without a result, or with the wrong number of images, is a server
    // bug; count it as a failure.
    const int asked = std::max<int>(spec_.request.num_images(), 1);
    if (status.ok() && (!has_result_ || sample_.images != asked)) {
      sample_.code = grpc::StatusCode::INTERNAL;
    }
    if (sample_.code != grpc::StatusCode::OK) {
      sample_.images = 0;
      sample_.end = Clock::now();
      sample_.latency = Between(sent_, sample_.end);
    }
    Release();
  }

 private:
  GenerateCall(const Connection& connection, RequestSpec spec, Clock::time_point sent,
               DoneFn done)
      : connection_(connection), spec_(std::move(spec)), sent_(sent), done_(std::move(done)) {
    sample_.plan = spec_.plan;
  }

  void Observe(Clock::time_point now) {
    if (event_.has_accepted()) {
      sample_.accepted = true;
      job_id_ = event_.accepted().job_id();
    }
    // A Progress at step 0 only reports the queue position; the first step is when work shows.
    if (event_.has_progress() && event_.progress().step() > 0) {
      if (!sample_.first_progress) sample_.first_progress = Between(sent_, now);
      if (!sample_.first_preview && event_.progress().previews_size() > 0) {
        sample_.first_preview = Between(sent_, now);
      }
    } else if (event_.has_result()) {
      has_result_ = true;
      sample_.images = event_.result().images_size();
      sample_.end = now;
      sample_.latency = Between(sent_, now);
    }
  }

  // Sends the cancel the plan asks for once its point has come. Runs in OnReadDone, before
  // OnDone can, so that `pending_` counts the CancelJob call before the stream may release.
  void MaybeCancel() {
    if (spec_.plan != Plan::kCancel && spec_.plan != Plan::kCancelJob) return;
    if (sample_.cancel_sent) return;
    bool due = false;
    if (event_.has_accepted()) {
      due = spec_.cancel_at < 0.1;
    } else if (event_.has_progress() && event_.progress().step() > 0) {
      due = event_.progress().step() >= spec_.cancel_at * event_.progress().total_steps();
    }
    if (!due) return;
    sample_.cancel_sent = true;
    if (spec_.plan == Plan::kCancel) {
      context_.TryCancel();
      return;
    }
    ++pending_;
    cancel_request_.set_job_id(job_id_);
    cancel_context_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    connection_.Authorize(&cancel_context_);
    connection_.stub()->async()->CancelJob(
        &cancel_context_, &cancel_request_, &cancel_response_, [this](grpc::Status status) {
          sample_.cancel_job_code = status.error_code();
          sample_.cancel_job_found = status.ok() && cancel_response_.cancelled();
          Release();
        });
  }

  // Ends the call once the stream and its CancelJob call (if any) have both ended.
  void Release() {
    if (--pending_ > 0) return;
    // Deleted first, so that a caller woken by `done` never outlives a call still being torn down.
    DoneFn done = std::move(done_);
    const Sample sample = sample_;
    delete this;
    done(sample);
  }

  const Connection& connection_;
  grpc::ClientContext context_;
  const RequestSpec spec_;  // gRPC reads the request after Start returns
  const Clock::time_point sent_;
  DoneFn done_;
  v1::GenerateEvent event_;  // reused by every read: a result's images are not kept
  bool has_result_ = false;
  std::string job_id_;  // from JobAccepted
  // The stream, and the CancelJob call while one is in flight. Their ends may come on two
  // threads; each writes only its own fields of sample_ before counting down.
  std::atomic<int> pending_{1};
  grpc::ClientContext cancel_context_;
  v1::CancelJobRequest cancel_request_;
  v1::CancelJobResponse cancel_response_;
  Sample sample_;
};

uint32_t ImagesPerRequest() { return std::max<uint32_t>(absl::GetFlag(FLAGS_num_images), 1); }

// Draws each request: its shape (--mix) or the shape flags, and its plan. Everything a request
// draws comes from a generator seeded with --seed and its index, so that a run can be repeated.
// Immutable after construction; thread-safe.
class RequestPlanner {
 public:
  // `init_image`: the PNG that --mix's image-to-image requests start from; empty: none do.
  // REQUIRES: the flags are parsed.
  explicit RequestPlanner(std::string init_image)
      : init_image_(std::move(init_image)),
        samplers_(absl::StrSplit(absl::GetFlag(FLAGS_mix_samplers), ',', absl::SkipEmpty())),
        seed_stride_(absl::GetFlag(FLAGS_mix) ? kMixMaxImages : ImagesPerRequest()) {}

  // The request with index `index` (warm-up ones included): its own seeds, so that no two
  // requests draw the same image.
  RequestSpec SpecFor(int64_t index) const {
    std::seed_seq seeds{absl::GetFlag(FLAGS_seed), static_cast<uint64_t>(index)};
    std::mt19937_64 random(seeds);
    RequestSpec spec;
    if (absl::GetFlag(FLAGS_mix)) {
      spec.request = MixedRequest(random);
    } else {
      spec.request = FlagRequest();
    }
    spec.request.set_seed(absl::GetFlag(FLAGS_seed) + static_cast<uint64_t>(index) * seed_stride_);
    spec.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
    const double cancel = absl::GetFlag(FLAGS_cancel_fraction);
    const double cancel_job = absl::GetFlag(FLAGS_cancel_job_fraction);
    const double deadline = absl::GetFlag(FLAGS_deadline_fraction);
    const double u = absl::Uniform(random, 0.0, 1.0);
    if (u < cancel) {
      spec.plan = Plan::kCancel;
    } else if (u < cancel + cancel_job) {
      spec.plan = Plan::kCancelJob;
    } else if (u < cancel + cancel_job + deadline) {
      spec.plan = Plan::kDeadline;
      spec.timeout = absl::Seconds(
          absl::Uniform(random, 0.01, std::max(0.01, absl::GetFlag(FLAGS_short_timeout_s))));
    }
    spec.cancel_at = absl::Uniform(random, 0.0, 1.0);
    return spec;
  }

 private:
  static constexpr uint32_t kMixMaxImages = 4;

  static v1::GenerateRequest FlagRequest() {
    v1::GenerateRequest request;
    request.set_prompt(absl::GetFlag(FLAGS_prompt));
    request.set_steps(absl::GetFlag(FLAGS_steps));
    request.set_num_images(absl::GetFlag(FLAGS_num_images));
    request.set_width(absl::GetFlag(FLAGS_width));
    request.set_height(absl::GetFlag(FLAGS_height));
    request.set_guidance_scale(absl::GetFlag(FLAGS_guidance));
    request.set_sampler(absl::GetFlag(FLAGS_sampler));
    if (const uint32_t every = absl::GetFlag(FLAGS_preview_every); every > 0) {
      request.mutable_preview()->set_every_n_steps(every);
      request.mutable_preview()->set_method(v1::PREVIEW_METHOD_LATENT_APPROX);
    }
    return request;
  }

  // A valid request for the default model (32x32, size multiple 8), drawn at random.
  v1::GenerateRequest MixedRequest(std::mt19937_64& random) const {
    static constexpr const char* kPrompts[] = {
        "a pair of trousers", "an ankle boot", "a wool sweater", "some sandals", "a handbag",
        "a dress",            "a shirt",       "a sneaker",      "a coat",       "a t-shirt"};
    static constexpr uint32_t kSides[] = {24, 32, 32, 40};
    v1::GenerateRequest request;
    const uint32_t steps = absl::Uniform<uint32_t>(absl::IntervalClosed, random, 5, 40);
    request.set_steps(steps);
    request.set_num_images(absl::Uniform<uint32_t>(absl::IntervalClosed, random, 1, kMixMaxImages));
    if (!samplers_.empty()) {
      request.set_sampler(samplers_[absl::Uniform<size_t>(random, 0, samplers_.size())]);
    }
    const bool guided = absl::Bernoulli(random, 0.8);
    request.set_guidance_scale(guided ? absl::Uniform(random, 1.5f, 6.0f) : 1.0f);
    // An empty prompt is allowed only without guidance: an unconditional sample.
    if (guided || absl::Bernoulli(random, 0.5)) {
      request.set_prompt(kPrompts[absl::Uniform<size_t>(random, 0, std::size(kPrompts))]);
    }
    if (guided && absl::Bernoulli(random, 0.2)) request.set_negative_prompt("a bag");
    // Only lower priorities: above its max_priority (0 unless the tokens file says more) a
    // client is refused PERMISSION_DENIED.
    request.set_priority(absl::Uniform(absl::IntervalClosed, random, -5, 0));
    if (!init_image_.empty() && absl::Bernoulli(random, absl::GetFlag(FLAGS_mix_img2img))) {
      // Its size is the init image's: width and height stay 0. strength * steps >= 1.5.
      request.set_init_image(init_image_);
      request.set_strength(absl::Uniform(absl::IntervalClosed, random, 0.3f, 1.0f));
    } else {
      const uint32_t side = kSides[absl::Uniform<size_t>(random, 0, std::size(kSides))];
      request.set_width(side);
      request.set_height(side);
    }
    const double preview = absl::Uniform(random, 0.0, 1.0);
    if (preview < 0.4) {
      request.mutable_preview()->set_every_n_steps(
          std::min(steps, absl::Uniform<uint32_t>(absl::IntervalClosed, random, 1, 5)));
      request.mutable_preview()->set_method(v1::PREVIEW_METHOD_LATENT_APPROX);
    } else if (preview < 0.6) {
      request.mutable_preview()->set_every_n_steps(
          std::min(steps, absl::Uniform<uint32_t>(absl::IntervalClosed, random, 2, 10)));
      request.mutable_preview()->set_method(v1::PREVIEW_METHOD_VAE_DECODE);
    }
    return request;
  }

  const std::string init_image_;
  const std::vector<std::string> samplers_;
  const uint64_t seed_stride_;  // request k's image i uses seed --seed + k * seed_stride_ + i
};

// ---------------------------------------------------------------------------------------------
// Modes

// The latest end of `samples`, or `floor` when none ended later.
Clock::time_point LastEnd(const std::vector<Sample>& samples, Clock::time_point floor) {
  Clock::time_point last = floor;
  for (const Sample& sample : samples) last = std::max(last, sample.end);
  return last;
}

// Sends request `index` and waits for its end.
Sample SendAndWait(const Connection& connection, const RequestPlanner& planner, int64_t index) {
  Sample sample;
  absl::Notification done;
  GenerateCall::Start(connection, planner.SpecFor(index), Clock::now(), [&](const Sample& s) {
    sample = s;
    done.Notify();
  });
  done.WaitForNotification();
  return sample;
}

// `concurrency` clients, each sending its next request as soon as its previous one ended, until
// requests first .. first + count - 1 have all ended.
std::vector<Sample> RunClients(const Connection& connection, const RequestPlanner& planner,
                               int concurrency, int64_t first, int64_t count) {
  std::vector<Sample> samples(count);
  std::atomic<int64_t> next{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < concurrency; ++c) {
    clients.emplace_back([&] {
      for (int64_t i = next++; i < count; i = next++) {
        samples[i] = SendAndWait(connection, planner, first + i);
      }
    });
  }
  for (std::thread& client : clients) client.join();
  return samples;
}

// The warm-up is a phase of its own that is waited for, so that the measured wall time starts
// with no warm-up request still holding the server.
MeasuredRun RunClosed(const Connection& connection, const RequestPlanner& planner) {
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const int64_t warmup = absl::GetFlag(FLAGS_warmup);
  RunClients(connection, planner, concurrency, 0, warmup);
  const Clock::time_point start = Clock::now();
  MeasuredRun run;
  run.samples =
      RunClients(connection, planner, concurrency, warmup, absl::GetFlag(FLAGS_requests));
  run.wall = Between(start, LastEnd(run.samples, start));
  return run;
}

// Collects the samples of calls that end on gRPC's threads, and lets the sender wait for the
// last one.
class Collector {
 public:
  void Started() {
    absl::MutexLock lock(&mu_);
    ++in_flight_;
    max_in_flight_ = std::max(max_in_flight_, in_flight_);
  }

  void Ended(const Sample& sample, bool measured) {
    absl::MutexLock lock(&mu_);
    --in_flight_;
    if (measured) samples_.push_back(sample);
  }

  // Waits until every started call has ended; returns the measured samples.
  std::vector<Sample> WaitForAll(int* max_in_flight) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &Collector::AllEnded));
    *max_in_flight = max_in_flight_;
    return std::move(samples_);
  }

 private:
  bool AllEnded() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ == 0; }

  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Sample> samples_ ABSL_GUARDED_BY(mu_);
};

// Arrivals follow a schedule drawn in advance of each send, never the completions: a slow
// server gets the same load as a fast one. Latency counts from the scheduled arrival, so that
// a sender running late (the server shares the CPUs) cannot hide queueing time.
MeasuredRun RunPoisson(const Connection& connection, const RequestPlanner& planner) {
  const double rate = absl::GetFlag(FLAGS_rate);
  const Clock::time_point start = Clock::now();
  const Clock::time_point measured_from = start + ChronoSeconds(absl::GetFlag(FLAGS_warmup_s));
  const Clock::time_point stop = measured_from + ChronoSeconds(absl::GetFlag(FLAGS_duration_s));
  Collector collector;
  absl::BitGen random;
  MeasuredRun run;
  Clock::time_point arrival = start;
  for (int64_t index = 0;; ++index) {
    arrival += ChronoSeconds(absl::Exponential<double>(random, rate));  // mean 1 / rate
    if (arrival >= stop) break;
    std::this_thread::sleep_until(arrival);
    run.max_send_lag = std::max(run.max_send_lag, Between(arrival, Clock::now()));
    const bool measured = arrival >= measured_from;
    collector.Started();
    GenerateCall::Start(connection, planner.SpecFor(index), arrival,
                        [&collector, measured](const Sample& s) { collector.Ended(s, measured); });
  }
  run.samples = collector.WaitForAll(&run.max_in_flight);
  // The measured part lasts at least the measured arrival window, even when its last arrival
  // came early and ended before the window did.
  run.wall = Between(measured_from, LastEnd(run.samples, stop));
  return run;
}

// ---------------------------------------------------------------------------------------------
// Main

// The flags' own limits; the request fields' ranges are the server's to check.
absl::Status CheckFlags() {
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode == "closed") {
    if (absl::GetFlag(FLAGS_concurrency) < 1)
      return absl::InvalidArgumentError("--concurrency must be >= 1");
    if (absl::GetFlag(FLAGS_requests) < 1)
      return absl::InvalidArgumentError("--requests must be >= 1");
    if (absl::GetFlag(FLAGS_warmup) < 0) return absl::InvalidArgumentError("--warmup must be >= 0");
  } else if (mode == "poisson") {
    if (!(absl::GetFlag(FLAGS_rate) > 0)) return absl::InvalidArgumentError("--rate must be > 0");
    if (!(absl::GetFlag(FLAGS_duration_s) > 0))
      return absl::InvalidArgumentError("--duration_s must be > 0");
    if (!(absl::GetFlag(FLAGS_warmup_s) >= 0))
      return absl::InvalidArgumentError("--warmup_s must be >= 0");
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--mode is \"", mode, "\"; allowed: closed, poisson"));
  }
  if (!(absl::GetFlag(FLAGS_timeout_s) > 0))
    return absl::InvalidArgumentError("--timeout_s must be > 0");
  const double cancel = absl::GetFlag(FLAGS_cancel_fraction);
  const double cancel_job = absl::GetFlag(FLAGS_cancel_job_fraction);
  const double deadline = absl::GetFlag(FLAGS_deadline_fraction);
  const double img2img = absl::GetFlag(FLAGS_mix_img2img);
  if (!(cancel >= 0 && cancel_job >= 0 && deadline >= 0 && cancel + cancel_job + deadline <= 1))
    return absl::InvalidArgumentError(
        "--cancel_fraction, --cancel_job_fraction and --deadline_fraction must be >= 0 and sum "
        "to at most 1");
  if (!(img2img >= 0 && img2img <= 1))
    return absl::InvalidArgumentError("--mix_img2img must be in [0, 1]");
  if (!(absl::GetFlag(FLAGS_short_timeout_s) > 0))
    return absl::InvalidArgumentError("--short_timeout_s must be > 0");
  return absl::OkStatus();
}

// Connects before the run, so that connection setup is not in the first request's latency, and
// a wrong --server, TLS file or token fails at once instead of as every request: the channel must
// connect within 10 s, and one ListModels call must pass the server's token check.
absl::StatusOr<Connection> Connect() {
  const client::ConnectionOptions options = client::ConnectionOptionsFromFlags();
  absl::StatusOr<Connection> connection = Connection::Create(options);
  if (!connection.ok()) return connection.status();
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(10);
  if (!connection->channel()->WaitForConnected(deadline)) {
    return absl::UnavailableError(absl::StrCat(
        "cannot connect to ", options.server, " within 10 s",
        options.tls_ca.empty() ? ""
                               : " (with TLS: did --tls_ca sign the server's certificate, and "
                                 "does it name the host of --server?)"));
  }
  grpc::ClientContext context;
  context.set_deadline(deadline);
  connection->Authorize(&context);
  v1::ListModelsResponse models;
  const grpc::Status status =
      connection->stub()->ListModels(&context, v1::ListModelsRequest(), &models);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("ListModels before the run: ", status.error_message()));
  }
  return connection;
}

// --mix's image-to-image requests start from a picture of the server's own: one unary call at
// the defaults, before the run. Empty when none is wanted.
absl::StatusOr<std::string> InitImage(const Connection& connection) {
  if (!absl::GetFlag(FLAGS_mix) || absl::GetFlag(FLAGS_mix_img2img) <= 0) return std::string();
  v1::GenerateRequest request;
  request.set_prompt("a pair of trousers");
  request.set_seed(absl::GetFlag(FLAGS_seed));
  v1::GenerateResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  connection.Authorize(&context);
  const grpc::Status status = connection.stub()->GenerateImages(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("the init image for --mix: ", status.error_message()));
  }
  if (response.images_size() == 0) return absl::InternalError("the init image for --mix: no image");
  return response.images(0).data();
}

absl::Status WriteJson(const std::string& path, const std::string& json) {
  std::ofstream file(path, std::ios::trunc);
  file << json << "\n";
  file.close();
  if (!file) return absl::PermissionDeniedError(absl::StrCat("cannot write --json ", path));
  return absl::OkStatus();
}

int Fail(const absl::Status& status) {
  absl::FPrintF(stderr, "imagegen-loadgen: %s\n", status.ToString());
  return static_cast<int>(status.code());
}

// The load the flags offered, for the report.
LoadOptions LoadOptionsFromFlags() {
  LoadOptions load;
  load.mode = absl::GetFlag(FLAGS_mode);
  load.concurrency = absl::GetFlag(FLAGS_concurrency);
  load.warmup = absl::GetFlag(FLAGS_warmup);
  load.rate = absl::GetFlag(FLAGS_rate);
  load.duration_s = absl::GetFlag(FLAGS_duration_s);
  load.warmup_s = absl::GetFlag(FLAGS_warmup_s);
  load.mix = absl::GetFlag(FLAGS_mix);
  load.mix_samplers = absl::GetFlag(FLAGS_mix_samplers);
  load.mix_img2img = absl::GetFlag(FLAGS_mix_img2img);
  load.steps = absl::GetFlag(FLAGS_steps);
  load.num_images = ImagesPerRequest();
  load.sampler = absl::GetFlag(FLAGS_sampler);
  load.preview_every = absl::GetFlag(FLAGS_preview_every);
  load.cancel_fraction = absl::GetFlag(FLAGS_cancel_fraction);
  load.cancel_job_fraction = absl::GetFlag(FLAGS_cancel_job_fraction);
  load.deadline_fraction = absl::GetFlag(FLAGS_deadline_fraction);
  load.short_timeout_s = absl::GetFlag(FLAGS_short_timeout_s);
  return load;
}

// Prints the JSON line on stdout (and to --json) and the readable summary on stderr; returns
// the exit status.
int Report(const LoadOptions& load, const MeasuredRun& run) {
  const Summary summary = Summarize(run.samples);
  const std::string json = JsonSummary(load, run, summary);
  std::printf("%s\n", json.c_str());
  std::fflush(stdout);
  absl::FPrintF(stderr, "%s\n%s\n", HumanSummary(load, run, summary), HumanOutcomes(summary));
  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    if (absl::Status status = WriteJson(path, json); !status.ok()) return Fail(status);
  }
  return ExitStatus(run, summary);
}

int Main(int argc, char** argv) {
  // Abseil's own --help would list every flag in the binary, gRPC's included.
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  absl::SetProgramUsageMessage(kUsage);
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    return Fail(
        absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", positional[1], "\"")));
  }
  if (absl::Status status = CheckFlags(); !status.ok()) return Fail(status);
  absl::StatusOr<Connection> connection = Connect();
  if (!connection.ok()) return Fail(connection.status());

  absl::StatusOr<std::string> init_image = InitImage(*connection);
  if (!init_image.ok()) return Fail(init_image.status());
  const RequestPlanner planner(*std::move(init_image));

  const MeasuredRun run = absl::GetFlag(FLAGS_mode) == "closed"
                              ? RunClosed(*connection, planner)
                              : RunPoisson(*connection, planner);
  return Report(LoadOptionsFromFlags(), run);
}

}  // namespace
}  // namespace imagegen::loadgen

int main(int argc, char** argv) { return imagegen::loadgen::Main(argc, argv); }
