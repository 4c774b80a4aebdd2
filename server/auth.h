// Access control of the gRPC API: bearer tokens (--auth_tokens_file) and the files TLS reads.
//
// Tokens are checked by ImageGeneratorService at the start of each of its methods; the health
// service and reflection stay open (Kubernetes' native gRPC probes cannot send a token, and the
// schema is public). TLS and mutual TLS are the gRPC port's credentials (server.cc).
#ifndef IMAGEGEN_SERVER_AUTH_H_
#define IMAGEGEN_SERVER_AUTH_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/support/string_ref.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace imagegen {

// The whole of the file at `path`, which the flag `flag` named. NOT_FOUND naming the flag and
// the path when it cannot be read; the contents never appear in an error.
absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag, const std::string& path);

// The set of bearer tokens a call may present. Immutable after construction, so thread-safe.
// Never logs, and no error or status it returns contains a token.
class BearerTokenChecker {
 public:
  // Reads --auth_tokens_file: one token per line; blank lines and lines starting with '#' are
  // skipped, whitespace around a token is trimmed. A token is printable ASCII without spaces
  // (what an HTTP/2 header carries unchanged). Errors name --auth_tokens_file, the path and, for a
  // bad token, its line number: an unreadable file, a bad token, or no token at all.
  static absl::StatusOr<std::unique_ptr<BearerTokenChecker>> FromFile(const std::string& path);
  // The same rules on `contents` already read; `source` names it in errors.
  static absl::StatusOr<std::unique_ptr<BearerTokenChecker>> FromContents(absl::string_view contents,
                                                                          absl::string_view source);

  // OK when the call's metadata has "authorization: Bearer <token>" (scheme in any case) with
  // one of the tokens; otherwise UNAUTHENTICATED saying whether the token is missing or wrong.
  // The presented token is compared with every token in time that depends only on its length
  // and the number of tokens, so a guess learns nothing from how long the answer took.
  absl::Status Check(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const;

  int num_tokens() const { return static_cast<int>(tokens_.size()); }

 private:
  explicit BearerTokenChecker(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {}
  std::vector<std::string> tokens_;  // never empty; each token non-empty
};

}  // namespace imagegen

#endif  // IMAGEGEN_SERVER_AUTH_H_
