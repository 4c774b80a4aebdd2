// What LibTorch's CUDA caching allocator holds on each device, for the server's memory gauges.
// Torch-free, so that the server's metrics need no LibTorch header.
#ifndef IMAGEGEN_CORE_ENGINE_DEVICE_MEMORY_H_
#define IMAGEGEN_CORE_ENGINE_DEVICE_MEMORY_H_

#include <cstdint>
#include <string>
#include <vector>

namespace imagegen {

struct DeviceMemory {
  std::string device;       // as given: "cuda:0"
  int64_t allocated_bytes;  // held by live tensors
  int64_t reserved_bytes;   // taken from the device by the caching allocator (allocated + cached)
};

// One entry per CUDA device in `devices` ("cpu", "cuda:0", ...), in order; devices that are
// not CUDA, a build without CUDA, and a device whose statistics cannot be read (CUDA not
// initialised yet, a bad index) give no entry. Thread-safe; never throws.
std::vector<DeviceMemory> QueryDeviceMemory(const std::vector<std::string>& devices);

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_ENGINE_DEVICE_MEMORY_H_
