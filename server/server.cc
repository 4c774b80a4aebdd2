#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/model/bundle_dirs.h"
#include "server/thread_stacks.h"

namespace imagegen {
namespace {

// The PEM file a TLS flag names, with a block of `kind` ("CERTIFICATE", "PRIVATE KEY") in it.
// gRPC itself would only fail later, at the port, without naming the file.
absl::StatusOr<std::string> ReadPem(absl::string_view flag, const std::string& path, absl::string_view kind) {
  absl::StatusOr<std::string> pem = ReadFlagFile(flag, path);
  if (!pem.ok()) return pem.status();
  if (!absl::StrContains(*pem, "-----BEGIN") || !absl::StrContains(*pem, absl::StrCat(kind, "-----"))) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": no PEM ", kind,
                                                   " in the file; allowed: a PEM file (-----BEGIN ", kind, "-----)"));
  }
  return pem;
}

// Insecure by default; TLS with --tls_cert and --tls_key; mutual TLS with --tls_client_ca too.
// Certificates are read once: a rotated certificate takes a restart.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const ServerOptions& options) {
  const bool tls = !options.tls_cert.empty() || !options.tls_key.empty();
  if (!tls) {
    if (!options.tls_client_ca.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--tls_client_ca is ", options.tls_client_ca,
                                                     " but TLS is off; mutual TLS needs --tls_cert and --tls_key too"));
    }
    return grpc::InsecureServerCredentials();
  }
  if (options.tls_cert.empty() || options.tls_key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.tls_cert.empty() ? "--tls_key is set but --tls_cert is empty"
                                 : "--tls_cert is set but --tls_key is empty",
        "; TLS needs both: the PEM certificate chain and its private key"));
  }
  auto cert = ReadPem("--tls_cert", options.tls_cert, "CERTIFICATE");
  if (!cert.ok()) return cert.status();
  auto key = ReadPem("--tls_key", options.tls_key, "PRIVATE KEY");
  if (!key.ok()) return key.status();
  const bool mutual = !options.tls_client_ca.empty();
  grpc::SslServerCredentialsOptions ssl(mutual ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                               : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (mutual) {
    auto ca = ReadPem("--tls_client_ca", options.tls_client_ca, "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  ssl.pem_key_cert_pairs.push_back({*std::move(key), *std::move(cert)});
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ImageGenServer>> ImageGenServer::Start(const ServerOptions& options) {
  std::unique_ptr<ImageGenServer> s(new ImageGenServer());
  // Access control first: a bad flag fails before any port opens or any model loads.
  auto credentials = ServerCredentials(options);
  if (!credentials.ok()) return credentials.status();
  if (!options.auth_tokens_file.empty()) {
    auto tokens = BearerTokenChecker::FromFile(options.auth_tokens_file, options.max_priority);
    if (!tokens.ok()) return tokens.status();
    s->tokens_ = *std::move(tokens);
  }
  s->metrics_ = std::make_unique<Metrics>();
  if (s->tokens_ != nullptr) s->metrics_->SetClientNames(s->tokens_->principal_names());
  std::vector<EngineObserver*> observers = {s->metrics_.get()};
  if (options.request_log) {
    s->request_log_ = std::make_unique<RequestLog>();
    observers.push_back(s->request_log_.get());
  }
  s->observers_ = std::make_unique<ObserverFanout>(std::move(observers));

  if (!options.metrics_listen.empty()) {
    try {
      if (!ThreadStackFloorActive()) return absl::InternalError("server/thread_stacks.cc is not linked in");
      s->exposer_ = std::make_unique<prometheus::Exposer>(options.metrics_listen);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("--metrics_listen ", options.metrics_listen,
                                                 ": cannot listen: ", e.what()));
    }
    s->exposer_->RegisterCollectable(s->metrics_->registry());
    auto ports = s->exposer_->GetListeningPorts();
    s->metrics_port_ = ports.empty() ? 0 : ports.front();
  }

  // The gRPC port opens first, answering NOT_SERVING on health (and UNAVAILABLE on the API)
  // while the models load, so that an orchestrator sees a live but not yet ready server.
  const bool principals = s->tokens_ != nullptr || !options.tls_client_ca.empty();
  ImageGeneratorService::Access access;
  access.tokens = s->tokens_.get();
  access.client_cert_principals = !options.tls_client_ca.empty();
  access.default_max_priority = options.max_priority;
  s->service_ = std::make_unique<ImageGeneratorService>(s->metrics_.get(), s->request_log_.get(), access);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, *credentials, &s->port_);
  builder.RegisterService(s->service_.get());
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    // With TLS, gRPC also fails here when the key does not belong to the certificate.
    return absl::UnavailableError(
        absl::StrCat("--listen ", options.listen, ": cannot listen",
                     options.tls_cert.empty() ? "" : " (or --tls_key does not match --tls_cert)"));
  }
  s->server_->GetHealthCheckService()->SetServingStatus(false);

  auto dirs = FindBundleDirs(options.model_dir);
  if (!dirs.ok()) return dirs.status();
  Engine::Options engine_options = options.engine;
  engine_options.max_queue_per_principal = principals ? options.max_queue_per_client : 0;
  auto engine = Engine::Create(engine_options, *dirs, s->observers_.get());
  if (!engine.ok()) return engine.status();
  s->engine_ = *std::move(engine);

  std::string default_model = options.default_model;
  if (default_model.empty()) default_model = s->engine_->models().front()->name;
  if (s->engine_->FindModel(default_model) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--default_model is \"", default_model,
                                                   "\", which is not among the loaded models"));
  }
  s->service_->Ready(s->engine_.get(), default_model);
  s->server_->GetHealthCheckService()->SetServingStatus(true);
  return s;
}

ImageGenServer::~ImageGenServer() { Shutdown(); }

bool ImageGenServer::Drain(absl::Duration timeout) {
  if (server_ == nullptr || engine_ == nullptr) return true;
  // Readiness first, so that load balancers stop sending; then refuse what still arrives with
  // UNAVAILABLE (which clients may retry on another replica) and let running jobs finish.
  server_->GetHealthCheckService()->SetServingStatus(false);
  engine_->StopAccepting();
  return engine_->WaitUntilIdle(absl::Now() + timeout);
}

void ImageGenServer::Shutdown() {
  if (server_ == nullptr) return;
  server_->GetHealthCheckService()->SetServingStatus(false);
  // The engine first: it ends every job, so every open call finishes and the gRPC shutdown
  // below does not wait on a stream. (No engine when loading the models failed.)
  if (engine_ != nullptr) engine_->Shutdown();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server_->Wait();
  server_.reset();
}

void ImageGenServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace imagegen
