// Turns a public-API GenerateRequest into an engine JobRequest: resolves the model and every
// default, and checks what only the API has (enum values, the init image's bytes, job ids).
// Everything else is checked once, by the engine (Engine::Submit, ValidateJobRequest).
#ifndef IMAGEGEN_SERVER_REQUEST_MAPPER_H_
#define IMAGEGEN_SERVER_REQUEST_MAPPER_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/engine/engine.h"
#include "imagegen/v1/imagegen.pb.h"

namespace imagegen {

// The qualities a request's 0 means.
inline constexpr int kDefaultOutputQuality = 90;
inline constexpr int kDefaultPreviewQuality = 75;

// NOT_FOUND for an unknown model; INVALID_ARGUMENT naming an API-only field, its value and what
// is allowed. `default_model` names the model an empty request.model resolves to. Without
// `with_previews` (GenerateImages, which sends none) the job computes no previews.
absl::StatusOr<JobRequest> ToJobRequest(const v1::GenerateRequest& request, const Engine& engine,
                                        const std::string& default_model, absl::Time deadline,
                                        bool with_previews);

// A fresh server-chosen job id ("job-" and 16 hex digits).
std::string NewJobId();

}  // namespace imagegen

#endif  // IMAGEGEN_SERVER_REQUEST_MAPPER_H_
