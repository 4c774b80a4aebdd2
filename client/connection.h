// How the command-line tools (`imagegen`, `imagegen-loadgen`) reach an imagegen server: its
// address, TLS (--tls_ca, and --tls_cert with --tls_key for mutual TLS) and the bearer token
// (--token_file, else the environment variable IMAGEGEN_TOKEN) that every call carries.
//
// Everything is read and checked before the first call, so that a bad flag or an unreadable file
// fails at once, with a status naming the flag and the file, instead of as every call's error.
#ifndef IMAGEGEN_CLIENT_CONNECTION_H_
#define IMAGEGEN_CLIENT_CONNECTION_H_

#include <memory>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "imagegen/v1/imagegen.grpc.pb.h"

namespace imagegen::client {

// The environment variable that holds the bearer token when no --token_file is given.
inline constexpr char kTokenEnvironmentVariable[] = "IMAGEGEN_TOKEN";

// Where the server is and how to prove who we are. Each field is the flag of the same name
// (client/connection_flags.h); the error messages name the flags.
struct ConnectionOptions {
  // host:port, or any gRPC target ("dns:///imagegen.internal:50051").
  std::string server = "localhost:50051";
  // PEM CA certificate(s) that signed the server's certificate. Set: TLS. Empty: plaintext.
  std::string tls_ca;
  // Mutual TLS: the client's PEM certificate and its private key, both or neither; need tls_ca.
  std::string tls_cert;
  std::string tls_key;
  // File whose first line that is neither blank nor a '#' comment is the bearer token (the
  // server's --auth_tokens_file format). Empty: IMAGEGEN_TOKEN, if set and not empty; else none.
  std::string token_file;
};

// The PEM files of `options` read into gRPC's TLS options, or nullopt for plaintext (no tls_ca).
// INVALID_ARGUMENT when tls_cert and tls_key are not both set or both empty, or when tls_cert is
// set without tls_ca; NOT_FOUND naming the flag and the file when one cannot be read.
absl::StatusOr<std::optional<grpc::SslCredentialsOptions>> LoadTlsFiles(
    const ConnectionOptions& options);

// The bearer token: token_file's, else IMAGEGEN_TOKEN's (an empty variable counts as unset),
// else "" (send none). NOT_FOUND naming --token_file and the file when it cannot be read;
// INVALID_ARGUMENT (from ParseBearerToken, naming the file or the variable, never the token)
// when it holds no usable token.
absl::StatusOr<std::string> LoadBearerToken(const ConnectionOptions& options);

// Adds "authorization: Bearer <token>" to the call's metadata; nothing when `token` is empty.
// Plain metadata rather than call credentials: gRPC sends those only over TLS, and a server
// behind a mesh that encrypts for it may take tokens on a plaintext port. Call before the call
// starts.
void AddBearerToken(absl::string_view token, grpc::ClientContext* context);

// A channel to the server, a stub on it, and the token its calls carry.
//
// Immutable after Create, so thread-safe: the stub may start calls from any thread (gRPC stubs
// are thread-safe). Calls made through stub() must not outlive the Connection.
class Connection {
 public:
  // Reads the TLS files and the token (errors as LoadTlsFiles and LoadBearerToken), and creates
  // the channel; INVALID_ARGUMENT when `options.server` is empty. The channel connects lazily, at
  // its first call (or at channel()->WaitForConnected).
  static absl::StatusOr<Connection> Create(const ConnectionOptions& options);

  Connection(Connection&&) = default;
  Connection& operator=(Connection&&) = default;

  // Adds the bearer token, if any, to a call's metadata (AddBearerToken).
  void Authorize(grpc::ClientContext* context) const { AddBearerToken(token_, context); }

  imagegen::v1::ImageGenerator::Stub* stub() const { return stub_.get(); }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const std::string& server() const { return server_; }
  bool has_token() const { return !token_.empty(); }

 private:
  Connection(std::string server, std::shared_ptr<grpc::Channel> channel, std::string token);

  std::string server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<imagegen::v1::ImageGenerator::Stub> stub_;
  std::string token_;  // empty: no authorization metadata
};

}  // namespace imagegen::client

#endif  // IMAGEGEN_CLIENT_CONNECTION_H_
