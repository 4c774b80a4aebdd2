// The gRPC face of the engine: imagegen.v1.ImageGenerator on the callback API.
//
// Each Generate call is a write reactor that is also the job's JobListener. The worker hands it
// events without ever waiting: the reactor keeps at most one pending progress event (a newer one
// replaces it, and replaced previews are counted) and writes one message at a time, starting the
// next from OnWriteDone. Reactions never block.
//
// With bearer tokens, each method checks the call's token first, before anything else (the
// models-loading answer included). Only this service: the health service stays open for
// Kubernetes' native gRPC probes, which cannot send a token, and reflection, since the schema is
// public.
#ifndef IMAGEGEN_SERVER_IMAGE_GENERATOR_SERVICE_H_
#define IMAGEGEN_SERVER_IMAGE_GENERATOR_SERVICE_H_

#include <atomic>
#include <string>

#include "core/engine/engine.h"
#include "imagegen/v1/imagegen.grpc.pb.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/request_log.h"

namespace imagegen {

// Who a call is (Principal, auth.h): the bearer token's principal when `tokens` is set; else,
// with `client_cert_principals` (mutual TLS), the client certificate's subject; else the one
// shared principal. Principals without a max_priority of their own get `default_max_priority`.
struct ServiceAccess {
  const BearerTokenChecker* tokens = nullptr;
  bool client_cert_principals = false;
  int default_max_priority = 0;
};

// Thread-safe. `engine` and `metrics` must outlive the service and every call it started.
class ImageGeneratorService final : public v1::ImageGenerator::CallbackService {
 public:
  using Access = ServiceAccess;

  // `log` may be null. `access.tokens` may be null (every call allowed); otherwise it must outlive
  // the service, and calls without one of its tokens are answered UNAUTHENTICATED. Until Ready,
  // every allowed call is answered UNAVAILABLE (models loading).
  ImageGeneratorService(Metrics* metrics, RequestLog* log, Access access = Access())
      : metrics_(metrics), log_(log), access_(access) {}

  // Starts serving with `engine`, whose models are loaded. Call once.
  void Ready(Engine* engine, std::string default_model) {
    default_model_ = std::move(default_model);
    engine_.store(engine, std::memory_order_release);
  }

  grpc::ServerWriteReactor<v1::GenerateEvent>* Generate(grpc::CallbackServerContext* context,
                                                       const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* GenerateImages(grpc::CallbackServerContext* context,
                                           const v1::GenerateRequest* request,
                                           v1::GenerateResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const v1::CancelJobRequest* request,
                                      v1::CancelJobResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;

  const std::string& default_model() const { return default_model_; }

 private:
  // The call's principal when it may go on; otherwise UNAUTHENTICATED, logged as refused (never
  // the token; rate-limited).
  absl::StatusOr<Principal> Authenticate(const grpc::CallbackServerContext& context, const char* method) const;
  // What every method checks first: the caller, then that the models are loaded (UNAVAILABLE
  // until Ready). On OK, `*engine` is the engine to serve the call with and `*principal` the caller.
  grpc::Status Gate(const grpc::CallbackServerContext& context, const char* method, Engine** engine,
                    Principal* principal) const;

  std::atomic<Engine*> engine_{nullptr};
  Metrics* metrics_;
  RequestLog* log_;
  const Access access_;
  std::string default_model_;  // written by Ready before engine_ is published
};

}  // namespace imagegen

#endif  // IMAGEGEN_SERVER_IMAGE_GENERATOR_SERVICE_H_
