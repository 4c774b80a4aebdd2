// A minimal HTTP/1.0 GET over loopback, enough to scrape a Prometheus endpoint in a test.
#ifndef IMAGEGEN_TESTS_SUPPORT_HTTP_GET_H_
#define IMAGEGEN_TESTS_SUPPORT_HTTP_GET_H_

#include <string>

#include "absl/status/statusor.h"

namespace imagegen::test {

// The body of GET http://127.0.0.1:`port``path`. UNAVAILABLE when the connection fails,
// INTERNAL for a reply that is not "200". Blocking; thread-safe.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

}  // namespace imagegen::test

#endif  // IMAGEGEN_TESTS_SUPPORT_HTTP_GET_H_
