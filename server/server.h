// imagegen-server in one object: the engine with its models, the gRPC server (ImageGenerator,
// health, reflection) and the Prometheus endpoint. main.cc and the loopback tests use it alike.
#ifndef IMAGEGEN_SERVER_SERVER_H_
#define IMAGEGEN_SERVER_SERVER_H_

#include <memory>
#include <string>

#include <grpcpp/server.h>
#include <prometheus/exposer.h>

#include "absl/status/statusor.h"
#include "core/engine/engine.h"
#include "server/auth.h"
#include "server/image_generator_service.h"
#include "server/metrics.h"
#include "server/request_log.h"

namespace imagegen {

struct ServerOptions {
  std::string listen = "0.0.0.0:50051";         // gRPC address; port 0 picks a free port
  std::string metrics_listen = "0.0.0.0:9090";  // Prometheus /metrics; empty: no endpoint
  // Access control of the gRPC port (server/auth.h). Paths; empty: off. TLS needs both cert and
  // key; tls_client_ca (mutual TLS) needs TLS. Health and reflection stay open to all.
  std::string tls_cert;                         // PEM certificate chain of the server
  std::string tls_key;                          // PEM private key of tls_cert
  std::string tls_client_ca;                    // PEM CA(s) that must sign a client's certificate
  std::string auth_tokens_file;                 // bearer tokens, one per line (auth.h)
  // Principals (auth.h): the highest priority a principal without its own max_priority may ask,
  // and the jobs each principal may have queued when there are principals to tell apart (tokens
  // or mutual TLS; 0: no bound but engine.max_queue). Without either, all callers are one
  // principal and only engine.max_queue bounds the queue.
  int max_priority = 0;
  int max_queue_per_client = 16;
  std::string model_dir;                        // one bundle, or a folder of bundles
  std::string default_model;                    // empty: the first bundle by folder name
  bool request_log = true;                      // one JSON line per request on stderr
  int max_message_bytes = 8 << 20;              // largest request message the gRPC port takes
  Engine::Options engine;
};

// Thread-safe. Shutdown (or the destructor) ends every open call with a status.
class ImageGenServer {
 public:
  // Opens the gRPC port (health NOT_SERVING, API calls UNAVAILABLE), loads the models, then
  // serves; health reports SERVING once this returns. Errors name the file or flag at fault.
  static absl::StatusOr<std::unique_ptr<ImageGenServer>> Start(const ServerOptions& options);
  ~ImageGenServer();

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  Engine& engine() { return *engine_; }
  const std::string& default_model() const { return service_->default_model(); }

  // Health turns NOT_SERVING and new requests are answered UNAVAILABLE; queued and running jobs
  // go on. Returns true when they all ended within `timeout`. Call Shutdown next.
  bool Drain(absl::Duration timeout);
  // Health turns NOT_SERVING, running and queued jobs end UNAVAILABLE, open calls finish, the
  // gRPC server stops. Idempotent.
  void Shutdown();
  // Blocks until the gRPC server has shut down.
  void Wait();

 private:
  ImageGenServer() = default;

  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<RequestLog> request_log_;     // null without ServerOptions::request_log
  std::unique_ptr<ObserverFanout> observers_;   // metrics and the request log
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<BearerTokenChecker> tokens_;  // null without ServerOptions::auth_tokens_file
  std::unique_ptr<ImageGeneratorService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  int metrics_port_ = 0;
};

}  // namespace imagegen

#endif  // IMAGEGEN_SERVER_SERVER_H_
