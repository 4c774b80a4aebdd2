// How an exception from a model call becomes the status of the jobs in that call: the one
// boundary where LibTorch exceptions are caught (RunModelCall).
#ifndef IMAGEGEN_CORE_ENGINE_MODEL_FAILURE_H_
#define IMAGEGEN_CORE_ENGINE_MODEL_FAILURE_H_

#include <exception>
#include <functional>
#include <string>

#include "absl/status/status.h"

namespace imagegen {

// RESOURCE_EXHAUSTED when the call could not allocate memory (c10::OutOfMemoryError, or the
// CPU and CUDA allocators' messages), INTERNAL otherwise. The message names `model` and keeps
// one line of the exception: the error itself, without LibTorch's backtrace or the TorchScript
// interpreter's preamble and traceback, which a client cannot use.
absl::Status ModelFailure(const std::string& model, const std::exception& e);

// Runs `call`, one call of `model`'s modules (and the tensor work around it). OK when it
// returns; the ModelFailure of anything it throws (c10::Error and every std::exception).
// GenerationPipeline runs each model call through this, so nothing thrown reaches the worker.
absl::Status RunModelCall(const std::string& model, const std::function<void()>& call);

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_ENGINE_MODEL_FAILURE_H_
