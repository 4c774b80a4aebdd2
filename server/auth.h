// Access control of the gRPC API: who a call is (its Principal), from its bearer token
// (--auth_tokens_file) or its client certificate (mutual TLS), and the files TLS reads.
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

// Who made a call. Job ids, CancelJob, the queue quota and the worker's fair share are per
// principal (JobRequest::principal).
struct Principal {
  // A token's name in --auth_tokens_file, "cert:" and the client certificate's subject under
  // mutual TLS without tokens, or empty: the one principal every caller shares when neither is on.
  std::string name;
  // The highest priority its requests may ask (higher is refused PERMISSION_DENIED).
  int max_priority = 0;
  // True for token principals: their names come from the tokens file, so a metric may carry them.
  bool from_tokens_file = false;
};

// The priority bounds of the API (GenerateRequest.priority).
inline constexpr int kMinPriority = -100;
inline constexpr int kMaxPriority = 100;

// The set of bearer tokens a call may present. Immutable after construction, so thread-safe.
// Never logs, and no error or status it returns contains a token.
class BearerTokenChecker {
 public:
  // Reads --auth_tokens_file: one token per line, as `token`, or `name:token` (name: 1 to 64 of
  // A-Z a-z 0-9 . _ -), optionally followed by a space and `max_priority=N` (N in -100..100;
  // default `default_max_priority`). A plain token's principal is named "token-L<line number>".
  // Lines naming the same name are one principal (several tokens, for rotation). Blank lines
  // and lines starting with '#' are skipped, whitespace around a line is trimmed. A token is
  // printable ASCII without spaces (what an HTTP/2 header carries unchanged). Errors name
  // --auth_tokens_file, the path and, for a bad line, its number (never its text): an unreadable
  // file, a bad token or field, or no token at all.
  static absl::StatusOr<std::unique_ptr<BearerTokenChecker>> FromFile(const std::string& path,
                                                                      int default_max_priority = 0);
  // The same rules on `contents` already read; `source` names it in errors.
  static absl::StatusOr<std::unique_ptr<BearerTokenChecker>> FromContents(absl::string_view contents,
                                                                          absl::string_view source,
                                                                          int default_max_priority = 0);

  // The token's principal when the call's metadata has "authorization: Bearer <token>" (scheme
  // in any case) with one of the tokens; otherwise UNAUTHENTICATED saying whether the token is
  // missing or wrong. The presented token is compared with every token in time that depends only
  // on its length and the number of tokens, so a guess learns nothing from how long the answer
  // took.
  absl::StatusOr<Principal> Check(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const;

  int num_tokens() const { return static_cast<int>(tokens_.size()); }
  // Every principal's name, once each, in file order (bounded metric labels).
  std::vector<std::string> principal_names() const;

 private:
  struct Entry {
    std::string token;  // non-empty
    Principal principal;
  };
  explicit BearerTokenChecker(std::vector<Entry> tokens) : tokens_(std::move(tokens)) {}
  std::vector<Entry> tokens_;  // never empty
};

}  // namespace imagegen

#endif  // IMAGEGEN_SERVER_AUTH_H_
