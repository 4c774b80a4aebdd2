#include "client/connection_flags.h"

#include <string>

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, server, "localhost:50051", "host:port of the imagegen server");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA certificate(s) that signed the server's certificate; set: TLS");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate for mutual TLS (with --tls_key and --tls_ca)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, token_file, "",
          "file with the bearer token to send; empty: the environment variable IMAGEGEN_TOKEN");

namespace imagegen::client {

ConnectionOptions ConnectionOptionsFromFlags() {
  ConnectionOptions options;
  options.server = absl::GetFlag(FLAGS_server);
  options.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.token_file = absl::GetFlag(FLAGS_token_file);
  return options;
}

}  // namespace imagegen::client
