#include "core/engine/device_memory.h"

#ifdef IMAGEGEN_WITH_CUDA
#include <exception>

#include <c10/core/Device.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace imagegen {

std::vector<DeviceMemory> QueryDeviceMemory(const std::vector<std::string>& devices) {
  std::vector<DeviceMemory> out;
#ifdef IMAGEGEN_WITH_CUDA
  for (const std::string& name : devices) {
    try {
      const c10::Device device(name);
      if (!device.is_cuda()) continue;
      // The statistics' type moved between LibTorch 2.x releases (CUDACachingAllocator::
      // DeviceStats, then c10::CachingDeviceAllocator::DeviceStats); its fields did not. Index 0
      // of each StatArray is StatType::AGGREGATE (both pools).
      const auto stats = c10::cuda::CUDACachingAllocator::get()->getDeviceStats(
          static_cast<c10::DeviceIndex>(device.has_index() ? device.index() : 0));
      out.push_back({name, static_cast<int64_t>(stats.allocated_bytes[0].current),
                     static_cast<int64_t>(stats.reserved_bytes[0].current)});
    } catch (const std::exception&) {
      // No entry: the allocator is not initialised for this device, or the name is not a device.
    }
  }
#else
  (void)devices;
#endif
  return out;
}

}  // namespace imagegen
