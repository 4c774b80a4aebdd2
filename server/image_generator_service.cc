#include "server/image_generator_service.h"

#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/request_mapper.h"
#include "server/status_util.h"

namespace imagegen {
namespace {

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

v1::ImageFormat ApiFormat(ImageFormat format) {
  switch (format) {
    case ImageFormat::kPng: return v1::IMAGE_FORMAT_PNG;
    case ImageFormat::kJpeg: return v1::IMAGE_FORMAT_JPEG;
    case ImageFormat::kWebp: return v1::IMAGE_FORMAT_WEBP;
  }
  return v1::IMAGE_FORMAT_UNSPECIFIED;
}

void FillImage(EncodedImage in, v1::Image* out) {
  out->set_data(std::move(in.data));
  out->set_format(ApiFormat(in.format));
  out->set_width(in.width);
  out->set_height(in.height);
  out->set_seed(in.seed);
  out->set_index(in.index);
}

void FillResponse(JobResult result, v1::GenerateResponse* out) {
  out->set_job_id(result.job_id);
  for (EncodedImage& image : result.images) FillImage(std::move(image), out->add_images());
  v1::Timings* t = out->mutable_timings();
  t->set_queue_seconds(absl::ToDoubleSeconds(result.timings.queue));
  t->set_text_encode_seconds(absl::ToDoubleSeconds(result.timings.text_encode));
  t->set_denoise_seconds(absl::ToDoubleSeconds(result.timings.denoise));
  t->set_decode_seconds(absl::ToDoubleSeconds(result.timings.decode));
  t->set_total_seconds(absl::ToDoubleSeconds(result.timings.total));
  out->set_model(std::move(result.model));
  out->set_sampler(std::move(result.sampler));
  out->set_steps(result.steps);
  out->set_guidance_scale(static_cast<float>(result.guidance_scale));
  for (std::string& warning : result.warnings) out->add_warnings(std::move(warning));
}

// What a call keeps of its job: the few fields its events need, not the request (which holds the
// decoded init image).
struct AdmittedJob {
  std::string principal;
  std::string job_id;
  std::string model;
  int total_steps = 0;  // StepsToRun: Progress.total_steps while queued
};

// Resolves and submits a request; on error the status to finish the call with, after counting
// an invalid request.
absl::Status Admit(const v1::GenerateRequest& request, const grpc::CallbackServerContext& context,
                   const Principal& principal, Engine& engine, Metrics& metrics, RequestLog* log,
                   const std::string& default_model, bool with_previews, std::shared_ptr<JobListener> listener,
                   AdmittedJob* job) {
  const std::string named = request.model().empty() ? default_model : request.model();
  const std::string model = engine.FindModel(named) ? named : "unknown";
  auto refused = [&](const absl::Status& status) {
    if (status.code() == absl::StatusCode::kInvalidArgument || status.code() == absl::StatusCode::kNotFound ||
        status.code() == absl::StatusCode::kPermissionDenied) {
      metrics.OnInvalidRequest(model);
    }
    if (log && !log->LogRefused(model, absl::StatusCodeToString(status.code()), std::string(status.message()))) {
      metrics.OnLogLineSuppressed();
    }
    return status;
  };
  auto resolved = ToJobRequest(request, engine, default_model, DeadlineOf(context), with_previews);
  if (!resolved.ok()) return refused(resolved.status());
  // Priority orders a principal's own jobs only (JobQueue), but is still bounded per principal.
  // (Above the API's range it is invalid for everyone: the engine says so.)
  if (resolved->priority > principal.max_priority && resolved->priority <= kMaxPriority) {
    return refused(absl::PermissionDeniedError(absl::StrCat(
        "priority is ", resolved->priority, "; allowed for this client: ", kMinPriority, " to ",
        principal.max_priority, " (its max_priority in --auth_tokens_file, else --max_priority)")));
  }
  resolved->principal = principal.name;
  *job = {principal.name, resolved->job_id, resolved->model, StepsToRun(*resolved)};
  absl::Status status = engine.Submit(*std::move(resolved), std::move(listener));
  if (!status.ok()) return refused(status);
  return status;
}

// One Generate call. Owned by itself (self_) until gRPC calls OnDone, and by the engine while the
// job runs; events arriving after Finish are dropped.
class GenerateReactor : public grpc::ServerWriteReactor<v1::GenerateEvent>,
                        public JobListener,
                        public std::enable_shared_from_this<GenerateReactor> {
 public:
  GenerateReactor(Engine* engine, Metrics* metrics, RequestLog* log) : engine_(engine), metrics_(metrics), log_(log) {}

  void Begin(grpc::CallbackServerContext* context, const v1::GenerateRequest& request,
             const Principal& principal, const std::string& default_model) {
    self_ = shared_from_this();
    absl::Status status = Admit(request, *context, principal, *engine_, *metrics_, log_, default_model,
                                /*with_previews=*/true, self_, &job_);
    if (!status.ok()) OnError(status);
  }

  // JobListener: called by the engine, never blocks.
  void OnAccepted(const std::string& job_id, int queue_position) override {
    v1::GenerateEvent event;
    event.mutable_accepted()->set_job_id(job_id);
    event.mutable_accepted()->set_queue_position(queue_position);
    {
      absl::MutexLock lock(&mu_);
      accepted_ = std::move(event);
    }
    Pump();
  }

  void OnQueuePosition(int queue_position) override {
    v1::GenerateEvent event;
    event.mutable_progress()->set_queue_position(queue_position);
    event.mutable_progress()->set_total_steps(job_.total_steps);
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      if (accepted_) {  // not sent yet: let it carry the newest position
        accepted_->mutable_accepted()->set_queue_position(queue_position);
        return;
      }
      progress_ = std::move(event);
    }
    Pump();
  }

  void OnProgress(ProgressUpdate update) override {
    v1::GenerateEvent event;
    v1::Progress* p = event.mutable_progress();
    p->set_step(update.step);
    p->set_total_steps(update.total_steps);
    for (EncodedImage& image : update.previews) FillImage(std::move(image), p->add_previews());
    int replaced = 0;
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      if (progress_) replaced = progress_->progress().previews_size();
      progress_ = std::move(event);
    }
    if (replaced > 0) metrics_->OnPreviewsReplaced(job_.model, replaced);
    Pump();
  }

  void OnResult(JobResult result) override {
    v1::GenerateEvent event;
    FillResponse(std::move(result), event.mutable_result());
    {
      absl::MutexLock lock(&mu_);
      result_ = std::move(event);
    }
    Pump();
  }

  void OnError(absl::Status status) override {
    {
      absl::MutexLock lock(&mu_);
      error_ = ToGrpcStatus(status);
    }
    Pump();
  }

  // Reactions.
  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok && !error_) error_ = grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
    if (!ok) engine_->Cancel(job_.principal, job_.job_id, this);
    Pump();
  }

  void OnCancel() override { engine_->Cancel(job_.principal, job_.job_id, this); }

  void OnDone() override { self_.reset(); }

 private:
  enum class Action { kNone, kWrite, kWriteLast, kFinish };

  // Starts the next write or the finish, if one is due and none is in flight. gRPC calls are made
  // outside mu_ so that a reaction that runs inline cannot deadlock on it.
  void Pump() {
    Action action = Action::kNone;
    grpc::Status status;
    int previews = 0;
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || finished_) return;
      if (accepted_) {
        current_ = *std::move(accepted_);
        accepted_.reset();
        action = Action::kWrite;
      } else if (progress_) {
        current_ = *std::move(progress_);
        progress_.reset();
        previews = current_.progress().previews_size();
        action = Action::kWrite;
      } else if (error_) {
        status = *error_;
        action = Action::kFinish;
      } else if (result_) {
        current_ = *std::move(result_);
        result_.reset();
        action = Action::kWriteLast;
      }
      if (action == Action::kWrite) writing_ = true;
      if (action == Action::kWriteLast || action == Action::kFinish) finished_ = true;
    }
    if (previews > 0) metrics_->OnPreviewsSent(job_.model, previews);
    switch (action) {
      case Action::kNone: break;
      case Action::kWrite: StartWrite(&current_); break;
      case Action::kWriteLast: StartWriteAndFinish(&current_, grpc::WriteOptions(), grpc::Status::OK); break;
      case Action::kFinish: Finish(status); break;
    }
  }

  Engine* const engine_;
  Metrics* const metrics_;
  RequestLog* const log_;
  AdmittedJob job_;  // Set in Begin before any event; read-only after.
  std::shared_ptr<GenerateReactor> self_;

  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // Pending events, written in this order of preference. At most one progress event waits.
  std::optional<v1::GenerateEvent> accepted_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::GenerateEvent> progress_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::GenerateEvent> result_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> error_ ABSL_GUARDED_BY(mu_);
  // The message in flight; gRPC reads it until OnWriteDone. Only touched while !writing_.
  v1::GenerateEvent current_;
};

// One GenerateImages call: the job's result only.
class GenerateImagesReactor : public grpc::ServerUnaryReactor,
                              public JobListener,
                              public std::enable_shared_from_this<GenerateImagesReactor> {
 public:
  GenerateImagesReactor(Engine* engine, Metrics* metrics, RequestLog* log, v1::GenerateResponse* response)
      : engine_(engine), metrics_(metrics), log_(log), response_(response) {}

  void Begin(grpc::CallbackServerContext* context, const v1::GenerateRequest& request,
             const Principal& principal, const std::string& default_model) {
    self_ = shared_from_this();
    absl::Status status = Admit(request, *context, principal, *engine_, *metrics_, log_, default_model,
                                /*with_previews=*/false, self_, &job_);
    if (!status.ok()) OnError(status);
  }

  void OnAccepted(const std::string&, int) override {}
  void OnProgress(ProgressUpdate) override {}
  void OnResult(JobResult result) override {
    if (!TakeFinish()) return;
    FillResponse(std::move(result), response_);
    Finish(grpc::Status::OK);
  }
  void OnError(absl::Status status) override {
    if (!TakeFinish()) return;
    Finish(ToGrpcStatus(status));
  }

  void OnCancel() override { engine_->Cancel(job_.principal, job_.job_id, this); }
  void OnDone() override { self_.reset(); }

 private:
  // True for the one caller that may finish the call.
  bool TakeFinish() {
    absl::MutexLock lock(&mu_);
    if (finished_) return false;
    finished_ = true;
    return true;
  }

  Engine* const engine_;
  Metrics* const metrics_;
  RequestLog* const log_;
  v1::GenerateResponse* const response_;  // Owned by gRPC; valid until OnDone.
  AdmittedJob job_;
  std::shared_ptr<GenerateImagesReactor> self_;
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// A Generate call refused before any event (Gate: no valid token, or the models are loading).
class RefusedStream : public grpc::ServerWriteReactor<v1::GenerateEvent> {
 public:
  explicit RefusedStream(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

const grpc::Status& Loading() {
  static const auto* status = new grpc::Status(grpc::StatusCode::UNAVAILABLE, "the models are still loading; retry");
  return *status;
}

// A unary call answered at once with `status`.
grpc::ServerUnaryReactor* Answered(grpc::CallbackServerContext* context, const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

}  // namespace

absl::StatusOr<Principal> ImageGeneratorService::Authenticate(const grpc::CallbackServerContext& context,
                                                              const char* method) const {
  if (access_.tokens != nullptr) {
    absl::StatusOr<Principal> principal = access_.tokens->Check(context.client_metadata());
    if (principal.ok()) return principal;
    metrics_->OnUnauthenticated();
    // The method and the peer help an operator find a misconfigured client; the message never
    // holds the presented token. Rate-limited: a flood of bad calls cannot flood the log.
    if (log_ && !log_->LogRefusedCall({{"method", method}, {"outcome", "refused"}, {"code", "UNAUTHENTICATED"},
                                       {"message", std::string(principal.status().message())},
                                       {"peer", ClipForEcho(context.peer())}})) {
      metrics_->OnLogLineSuppressed();
    }
    return principal.status();
  }
  Principal principal;
  principal.max_priority = access_.default_max_priority;
  if (access_.client_cert_principals) {
    // gRPC has verified the certificate against --tls_client_ca before any method runs.
    const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
    std::string subject;
    if (auth != nullptr) {
      for (const grpc::string_ref& v : auth->FindPropertyValues("x509_subject")) subject.assign(v.data(), v.size());
      if (subject.empty()) {
        for (const grpc::string_ref& v : auth->GetPeerIdentity()) {
          subject.assign(v.data(), v.size());
          break;
        }
      }
    }
    principal.name = absl::StrCat("cert:", subject);
  }
  return principal;
}

grpc::Status ImageGeneratorService::Gate(const grpc::CallbackServerContext& context, const char* method,
                                         Engine** engine, Principal* principal) const {
  absl::StatusOr<Principal> caller = Authenticate(context, method);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  *principal = *std::move(caller);
  *engine = engine_.load(std::memory_order_acquire);
  return *engine == nullptr ? Loading() : grpc::Status::OK;
}

grpc::ServerWriteReactor<v1::GenerateEvent>* ImageGeneratorService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  Engine* engine = nullptr;
  Principal principal;
  if (grpc::Status refused = Gate(*context, "Generate", &engine, &principal); !refused.ok()) {
    return new RefusedStream(refused);
  }
  auto reactor = std::make_shared<GenerateReactor>(engine, metrics_, log_);
  reactor->Begin(context, *request, principal, default_model_);
  return reactor.get();  // Kept alive by its own self_ until OnDone.
}

grpc::ServerUnaryReactor* ImageGeneratorService::GenerateImages(grpc::CallbackServerContext* context,
                                                                const v1::GenerateRequest* request,
                                                                v1::GenerateResponse* response) {
  Engine* engine = nullptr;
  Principal principal;
  if (grpc::Status refused = Gate(*context, "GenerateImages", &engine, &principal); !refused.ok()) {
    return Answered(context, refused);
  }
  auto reactor = std::make_shared<GenerateImagesReactor>(engine, metrics_, log_, response);
  reactor->Begin(context, *request, principal, default_model_);
  return reactor.get();
}

grpc::ServerUnaryReactor* ImageGeneratorService::CancelJob(grpc::CallbackServerContext* context,
                                                           const v1::CancelJobRequest* request,
                                                           v1::CancelJobResponse* response) {
  Engine* engine = nullptr;
  Principal principal;
  if (grpc::Status refused = Gate(*context, "CancelJob", &engine, &principal); !refused.ok()) {
    return Answered(context, refused);
  }
  if (request->job_id().empty()) {
    return Answered(context, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "job_id is empty; name the job to cancel"));
  }
  // Only the caller's own jobs: another client's job with that id is as unknown as none.
  if (!engine->Cancel(principal.name, request->job_id())) {
    return Answered(context, grpc::Status(grpc::StatusCode::NOT_FOUND,
                                          absl::StrCat("job_id \"", ClipForEcho(request->job_id()),
                                                       "\" is not one of your queued or running jobs")));
  }
  response->set_cancelled(true);
  return Answered(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ImageGeneratorService::ListModels(grpc::CallbackServerContext* context,
                                                            const v1::ListModelsRequest*,
                                                            v1::ListModelsResponse* response) {
  Engine* engine = nullptr;
  Principal principal;
  if (grpc::Status refused = Gate(*context, "ListModels", &engine, &principal); !refused.ok()) {
    return Answered(context, refused);
  }
  for (const ModelConfig* m : engine->models()) {
    v1::ModelInfo* info = response->add_models();
    info->set_name(m->name);
    info->set_description(m->description);
    info->set_default_width(m->default_width);
    info->set_default_height(m->default_height);
    info->set_size_multiple(m->size_multiple);
    info->set_default_sampler(m->default_sampler);
    info->set_default_steps(m->default_steps);
    info->set_default_guidance_scale(static_cast<float>(m->default_guidance_scale));
    for (const std::string& s : m->SupportedSamplers()) info->add_samplers(s);
    info->set_is_default(m->name == default_model_);
    info->set_max_prompt_tokens(m->max_length);
    const RequestLimits limits = engine->LimitsFor(*m);
    info->set_max_image_side(limits.max_image_side);
    info->set_max_images(limits.max_images);
    info->set_max_pixels(limits.max_pixels);
    info->set_max_steps(std::min(limits.max_steps, m->num_train_timesteps));
    info->set_max_prompt_chars(limits.max_prompt_chars);
  }
  return Answered(context, grpc::Status::OK);
}

}  // namespace imagegen
