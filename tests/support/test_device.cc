#include "tests/support/test_device.h"

#include <cstdlib>

#include <gtest/gtest.h>

namespace imagegen::test {

std::string TestDevice() {
  const char* device = std::getenv("IMAGEGEN_TEST_DEVICE");
  return device != nullptr && *device != '\0' ? device : "cpu";
}

Precision TestPrecision() {
  const char* dtype = std::getenv("IMAGEGEN_TEST_DTYPE");
  if (dtype == nullptr || *dtype == '\0') return Precision::kFloat32;
  auto precision = ParsePrecision(dtype);
  EXPECT_TRUE(precision.ok()) << "IMAGEGEN_TEST_DTYPE: " << precision.status();
  return precision.value_or(Precision::kFloat32);
}

bool TestDeviceIsCpu() { return TestDevice().rfind("cpu", 0) == 0; }

}  // namespace imagegen::test
