// Turns a public-API GenerateRequest into an engine JobRequest: resolves the model and every
// default, and validates what only the API has (formats, image-to-image, job ids).
#ifndef IMAGEGEN_SERVER_REQUEST_MAPPER_H_
#define IMAGEGEN_SERVER_REQUEST_MAPPER_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/engine/engine.h"
#include "imagegen/v1/imagegen.pb.h"

namespace imagegen {

// NOT_FOUND for an unknown model; INVALID_ARGUMENT naming the field, its value and what is
// allowed. The engine validates the resolved request again on Submit (ValidateJobRequest).
// `default_model` names the model an empty request.model resolves to.
absl::StatusOr<JobRequest> ToJobRequest(const v1::GenerateRequest& request, const Engine& engine,
                                        const std::string& default_model, absl::Time deadline);

// A fresh server-chosen job id ("job-" and 16 hex digits).
std::string NewJobId();

}  // namespace imagegen

#endif  // IMAGEGEN_SERVER_REQUEST_MAPPER_H_
