#include "server/metrics.h"

namespace imagegen {
namespace {

using prometheus::Histogram;

// Seconds: a denoising step takes milliseconds (CPU, small model) to a second (large model); a
// request from tens of milliseconds to minutes.
const Histogram::BucketBoundaries& RequestBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
  return *b;
}
const Histogram::BucketBoundaries& StepBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
  return *b;
}
const Histogram::BucketBoundaries& RowBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128};
  return *b;
}

}  // namespace

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("imagegen_requests_total")
                    .Help("Generation requests by model and outcome (ok, cancelled, deadline_exceeded, "
                          "rejected, unavailable, invalid, failed).")
                    .Register(*registry_)),
      request_duration_(prometheus::BuildHistogram()
                            .Name("imagegen_request_duration_seconds")
                            .Help("Time from acceptance to the end of an accepted request, any outcome.")
                            .Register(*registry_)),
      queue_duration_(prometheus::BuildHistogram()
                          .Name("imagegen_queue_duration_seconds")
                          .Help("Time a job waited in the queue before a worker started it.")
                          .Register(*registry_)),
      first_preview_duration_(prometheus::BuildHistogram()
                                  .Name("imagegen_time_to_first_preview_seconds")
                                  .Help("Time from acceptance to a job's first preview.")
                                  .Register(*registry_)),
      step_duration_(prometheus::BuildHistogram()
                         .Name("imagegen_step_duration_seconds")
                         .Help("Duration of one denoising step: one batched UNet call and the sampler updates.")
                         .Register(*registry_)),
      batch_rows_(prometheus::BuildHistogram()
                      .Name("imagegen_batch_rows")
                      .Help("Rows per UNet call (classifier-free guidance counts two rows per image).")
                      .Register(*registry_)),
      images_(prometheus::BuildCounter()
                  .Name("imagegen_images_generated_total")
                  .Help("Final images produced.")
                  .Register(*registry_)),
      steps_(prometheus::BuildCounter()
                 .Name("imagegen_denoising_steps_total")
                 .Help("Denoising steps completed, counted per job (a batched call that completes a step of three "
                       "jobs counts three; heun's first call of a step counts nothing).")
                 .Register(*registry_)),
      previews_sent_(prometheus::BuildCounter()
                         .Name("imagegen_previews_sent_total")
                         .Help("Preview images written to client streams.")
                         .Register(*registry_)),
      previews_replaced_(prometheus::BuildCounter()
                             .Name("imagegen_previews_replaced_total")
                             .Help("Preview images replaced by a newer one before a slow client received them.")
                             .Register(*registry_)),
      preview_failures_(prometheus::BuildCounter()
                            .Name("imagegen_preview_failures_total")
                            .Help("Due previews that could not be made (decode or encode failed); the job went on.")
                            .Register(*registry_)),
      log_lines_suppressed_(prometheus::BuildCounter()
                                .Name("imagegen_log_lines_suppressed_total")
                                .Help("Log lines of refused calls (unauthenticated, invalid) dropped by the log's rate "
                                      "limit.")
                                .Register(*registry_)),
      client_jobs_(prometheus::BuildCounter()
                       .Name("imagegen_client_jobs_total")
                       .Help("Accepted jobs by client (a name from --auth_tokens_file; other: client certificates; "
                             "shared: no access control) and outcome.")
                       .Register(*registry_)),
      batch_splits_(prometheus::BuildCounter()
                        .Name("imagegen_batch_splits_total")
                        .Help("Batched UNet calls that ran out of memory and were retried as two calls of half the "
                              "jobs each.")
                        .Register(*registry_)),
      vae_upcasts_(prometheus::BuildCounter()
                       .Name("imagegen_vae_upcasts_total")
                       .Help("VAE decodes that came out non-finite in half precision and were redone in float32.")
                       .Register(*registry_)),
      device_memory_(prometheus::BuildGauge()
                         .Name("imagegen_device_memory_bytes")
                         .Help("GPU memory of each CUDA device by kind: allocated (tensors) or reserved (the caching "
                               "allocator's, allocated included).")
                         .Register(*registry_)),
      queue_depth_(prometheus::BuildGauge()
                       .Name("imagegen_queue_depth")
                       .Help("Jobs waiting in the queue.")
                       .Register(*registry_)
                       .Add({})),
      active_jobs_(prometheus::BuildGauge()
                       .Name("imagegen_active_jobs")
                       .Help("Jobs running on a worker.")
                       .Register(*registry_)
                       .Add({})) {}

void Metrics::OnInvalidRequest(const std::string& model) {
  requests_.Add({{"model", model}, {"outcome", "invalid"}}).Increment();
}

void Metrics::OnUnauthenticated() {
  requests_.Add({{"model", "unknown"}, {"outcome", "unauthenticated"}}).Increment();
}

void Metrics::OnLogLineSuppressed() { log_lines_suppressed_.Add({}).Increment(); }

void Metrics::SetClientNames(const std::vector<std::string>& names) {
  client_names_ = absl::flat_hash_set<std::string>(names.begin(), names.end());
}

void Metrics::OnJobSummary(const JobSummary& s) {
  const std::string client = client_names_.contains(s.principal) ? s.principal
                             : s.principal.empty()               ? "shared"
                                                                 : "other";
  client_jobs_.Add({{"client", client}, {"outcome", JobOutcomeName(s.outcome)}}).Increment();
}

void Metrics::OnBatchSplit(const std::string& model, int) { batch_splits_.Add({{"model", model}}).Increment(); }

void Metrics::OnVaeUpcast(const std::string& model, int count) { vae_upcasts_.Add({{"model", model}}).Increment(count); }

void Metrics::OnDeviceMemory(const std::string& device, int64_t allocated_bytes, int64_t reserved_bytes) {
  device_memory_.Add({{"device", device}, {"kind", "allocated"}}).Set(static_cast<double>(allocated_bytes));
  device_memory_.Add({{"device", device}, {"kind", "reserved"}}).Set(static_cast<double>(reserved_bytes));
}

void Metrics::OnPreviewsSent(const std::string& model, int images) {
  previews_sent_.Add({{"model", model}}).Increment(images);
}

void Metrics::OnPreviewsReplaced(const std::string& model, int images) {
  previews_replaced_.Add({{"model", model}}).Increment(images);
}

void Metrics::OnQueueDepth(int depth) { queue_depth_.Set(depth); }

void Metrics::OnActiveJobs(int active) { active_jobs_.Set(active); }

void Metrics::OnJobRejected(const std::string& model) {
  requests_.Add({{"model", model}, {"outcome", JobOutcomeName(JobOutcome::kRejected)}}).Increment();
}

void Metrics::OnJobStarted(const std::string& model, absl::Duration queue_time) {
  queue_duration_.Add({{"model", model}}, RequestBuckets()).Observe(absl::ToDoubleSeconds(queue_time));
}

void Metrics::OnModelCall(const std::string& model, int rows, int job_steps, absl::Duration duration) {
  step_duration_.Add({{"model", model}}, StepBuckets()).Observe(absl::ToDoubleSeconds(duration));
  batch_rows_.Add({{"model", model}}, RowBuckets()).Observe(rows);
  steps_.Add({{"model", model}}).Increment(job_steps);
}

void Metrics::OnFirstPreview(const std::string& model, absl::Duration since_accepted) {
  first_preview_duration_.Add({{"model", model}}, RequestBuckets()).Observe(absl::ToDoubleSeconds(since_accepted));
}

void Metrics::OnPreviewFailed(const std::string& model, const std::string&, const absl::Status&) {
  preview_failures_.Add({{"model", model}}).Increment();
}

void Metrics::OnJobFinished(const std::string& model, JobOutcome outcome, absl::Duration total, int images) {
  requests_.Add({{"model", model}, {"outcome", JobOutcomeName(outcome)}}).Increment();
  request_duration_.Add({{"model", model}}, RequestBuckets()).Observe(absl::ToDoubleSeconds(total));
  if (images > 0) images_.Add({{"model", model}}).Increment(images);
}

}  // namespace imagegen
