#include "client/connection.h"

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/cli.h"

namespace imagegen::client {
namespace {

// A result holds up to --max_images full-size images; gRPC's 4 MiB default is too small.
constexpr int kMaxReceiveMessageBytes = 256 << 20;

absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag, const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::string contents(std::istreambuf_iterator<char>(file), {});
  if (!file) return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot read"));
  return contents;
}

}  // namespace

absl::StatusOr<std::optional<grpc::SslCredentialsOptions>> LoadTlsFiles(
    const ConnectionOptions& options) {
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.tls_cert.empty() ? "--tls_key is set but --tls_cert is empty"
                                              : "--tls_cert is set but --tls_key is empty",
                     "; mutual TLS needs both: the client's PEM certificate and its private key"));
  }
  if (options.tls_ca.empty()) {
    if (!options.tls_cert.empty()) {
      return absl::InvalidArgumentError(
          "--tls_cert needs --tls_ca too: the PEM CA that signed the server's certificate "
          "(mutual TLS is TLS first)");
    }
    return std::nullopt;
  }
  grpc::SslCredentialsOptions ssl;
  absl::StatusOr<std::string> pem = ReadFlagFile("--tls_ca", options.tls_ca);
  if (!pem.ok()) return pem.status();
  ssl.pem_root_certs = *std::move(pem);
  if (!options.tls_cert.empty()) {
    pem = ReadFlagFile("--tls_cert", options.tls_cert);
    if (!pem.ok()) return pem.status();
    ssl.pem_cert_chain = *std::move(pem);
    pem = ReadFlagFile("--tls_key", options.tls_key);
    if (!pem.ok()) return pem.status();
    ssl.pem_private_key = *std::move(pem);
  }
  return ssl;
}

absl::StatusOr<std::string> LoadBearerToken(const ConnectionOptions& options) {
  if (!options.token_file.empty()) {
    absl::StatusOr<std::string> contents = ReadFlagFile("--token_file", options.token_file);
    if (!contents.ok()) return contents.status();
    return ParseBearerToken(*contents, absl::StrCat("--token_file ", options.token_file));
  }
  const char* env = std::getenv(kTokenEnvironmentVariable);
  if (env == nullptr || *env == '\0') return std::string();
  return ParseBearerToken(env, kTokenEnvironmentVariable);
}

void AddBearerToken(absl::string_view token, grpc::ClientContext* context) {
  if (token.empty()) return;
  context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
}

Connection::Connection(std::string server, std::shared_ptr<grpc::Channel> channel,
                       std::string token)
    : server_(std::move(server)),
      channel_(std::move(channel)),
      stub_(imagegen::v1::ImageGenerator::NewStub(channel_)),
      token_(std::move(token)) {}

absl::StatusOr<Connection> Connection::Create(const ConnectionOptions& options) {
  if (options.server.empty()) {
    return absl::InvalidArgumentError("--server is empty; allowed: HOST:PORT of the server");
  }
  absl::StatusOr<std::optional<grpc::SslCredentialsOptions>> tls = LoadTlsFiles(options);
  if (!tls.ok()) return tls.status();
  absl::StatusOr<std::string> token = LoadBearerToken(options);
  if (!token.ok()) return token.status();
  const std::shared_ptr<grpc::ChannelCredentials> credentials =
      tls->has_value() ? grpc::SslCredentials(**tls) : grpc::InsecureChannelCredentials();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  return Connection(options.server, grpc::CreateCustomChannel(options.server, credentials, args),
                    *std::move(token));
}

}  // namespace imagegen::client
