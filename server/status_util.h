// The one place where engine statuses become gRPC statuses.
#ifndef IMAGEGEN_SERVER_STATUS_UTIL_H_
#define IMAGEGEN_SERVER_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace imagegen {

// Same code, same message (absl and gRPC share the canonical code numbers).
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace imagegen

#endif  // IMAGEGEN_SERVER_STATUS_UTIL_H_
