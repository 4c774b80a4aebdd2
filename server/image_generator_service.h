// The gRPC face of the engine: imagegen.v1.ImageGenerator on the callback API.
//
// Each Generate call is a write reactor that is also the job's JobListener. The worker hands it
// events without ever waiting: the reactor keeps at most one pending progress event (a newer one
// replaces it, and replaced previews are counted) and writes one message at a time, starting the
// next from OnWriteDone. Reactions never block.
#ifndef IMAGEGEN_SERVER_IMAGE_GENERATOR_SERVICE_H_
#define IMAGEGEN_SERVER_IMAGE_GENERATOR_SERVICE_H_

#include <string>

#include "core/engine/engine.h"
#include "imagegen/v1/imagegen.grpc.pb.h"
#include "server/metrics.h"
#include "server/request_log.h"

namespace imagegen {

// Thread-safe. `engine` and `metrics` must outlive the service and every call it started.
class ImageGeneratorService final : public v1::ImageGenerator::CallbackService {
 public:
  // `log` may be null.
  ImageGeneratorService(Engine* engine, Metrics* metrics, RequestLog* log, std::string default_model)
      : engine_(engine), metrics_(metrics), log_(log), default_model_(std::move(default_model)) {}

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
  Engine* engine_;
  Metrics* metrics_;
  RequestLog* log_;
  std::string default_model_;
};

}  // namespace imagegen

#endif  // IMAGEGEN_SERVER_IMAGE_GENERATOR_SERVICE_H_
