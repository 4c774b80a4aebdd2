// A minimal HTTP/1.0 GET over loopback, enough to scrape a Prometheus endpoint in a test, and a
// reader of the samples it returns.
#ifndef IMAGEGEN_TESTS_SUPPORT_HTTP_GET_H_
#define IMAGEGEN_TESTS_SUPPORT_HTTP_GET_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace imagegen::test {

// The body of GET http://127.0.0.1:`port``path`. UNAVAILABLE when the connection fails,
// INTERNAL for a reply that is not "200". Blocking; thread-safe.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// The sum of the samples of `name` whose labels include every one of `labels` (each written
// `key="value"`), from Prometheus' text format; nullopt when no sample matches.
std::optional<double> SumSamples(const std::string& metrics, const std::string& name,
                                 const std::vector<std::string>& labels);

}  // namespace imagegen::test

#endif  // IMAGEGEN_TESTS_SUPPORT_HTTP_GET_H_
