// The gRPC face of the engine: imagegen.v1.ImageGenerator on the callback API.
//
// Each Generate call is a write reactor that is also the job's JobListener. The worker hands it
// events without ever waiting: the reactor keeps at most one pending progress event (a newer one
// replaces it, and replaced previews are counted) and writes one message at a time, starting the
// next from OnWriteDone. Reactions never block.
#ifndef IMAGEGEN_SERVER_IMAGE_GENERATOR_SERVICE_H_
#define IMAGEGEN_SERVER_IMAGE_GENERATOR_SERVICE_H_

#include <atomic>
#include <string>

#include "core/engine/engine.h"
#include "imagegen/v1/imagegen.grpc.pb.h"
#include "server/metrics.h"
#include "server/request_log.h"

namespace imagegen {

// Thread-safe. `engine` and `metrics` must outlive the service and every call it started.
class ImageGeneratorService final : public v1::ImageGenerator::CallbackService {
 public:
  // `log` may be null. Until Ready, every call is answered UNAVAILABLE (models loading).
  ImageGeneratorService(Metrics* metrics, RequestLog* log) : metrics_(metrics), log_(log) {}

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
  std::atomic<Engine*> engine_{nullptr};
  Metrics* metrics_;
  RequestLog* log_;
  std::string default_model_;  // written by Ready before engine_ is published
};

}  // namespace imagegen

#endif  // IMAGEGEN_SERVER_IMAGE_GENERATOR_SERVICE_H_
