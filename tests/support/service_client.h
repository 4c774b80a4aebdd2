// Client-side helpers of the loopback gRPC tests (tests/server/): requests that fit the tiny
// bundle, and reading a Generate stream to its end. Compiled into server_test (it needs the
// generated gRPC code, which imagegen_test_support does not link).
#ifndef IMAGEGEN_TESTS_SUPPORT_SERVICE_CLIENT_H_
#define IMAGEGEN_TESTS_SUPPORT_SERVICE_CLIENT_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>
#include <grpcpp/support/sync_stream.h>

#include "imagegen/v1/imagegen.grpc.pb.h"

namespace imagegen::test {

// The deadline of every call a test makes (a working server answers far sooner).
inline constexpr auto kCallTimeout = std::chrono::seconds(60);

// A context whose deadline is kCallTimeout from now, with "authorization: Bearer TOKEN" metadata
// when `token` is not empty.
std::unique_ptr<grpc::ClientContext> NewCallContext(const std::string& token = "");

// A small valid request: 3 steps of one 32x32 image with the model's default guidance.
v1::GenerateRequest SmallRequest();

// A request that keeps the worker busy for hundreds of UNet calls of 16 rows: long enough that
// a client always gets to act on its first progress event before the job could end.
v1::GenerateRequest LongRequest(const std::string& job_id);

struct StreamOutcome {
  std::vector<v1::GenerateEvent> events;
  grpc::Status status;
};

// Reads the rest of a Generate stream and finishes it. Blocks until the server ends the call.
StreamOutcome ReadToEnd(grpc::ClientReader<v1::GenerateEvent>& reader);

// grpc.health.v1.Health/Check for the whole server (service ""), without a token, by raw bytes
// (the health proto is not compiled here): `reply` is the serialized HealthCheckResponse, and
// SERVING is field 1 = varint 1, bytes 08 01.
struct HealthOutcome {
  grpc::Status status;
  std::string reply;
};
HealthOutcome CheckHealth(const std::shared_ptr<grpc::Channel>& channel);
inline const std::string kServingReply("\x08\x01", 2);

}  // namespace imagegen::test

#endif  // IMAGEGEN_TESTS_SUPPORT_SERVICE_CLIENT_H_
