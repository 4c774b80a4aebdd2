// Where the tests that load a model run: the CPU by default, a GPU when the environment says so
// (IMAGEGEN_TEST_DEVICE=cuda:0 IMAGEGEN_TEST_DTYPE=float16 ctest ...), so that the same tests
// check a GPU host.
#ifndef IMAGEGEN_TESTS_SUPPORT_TEST_DEVICE_H_
#define IMAGEGEN_TESTS_SUPPORT_TEST_DEVICE_H_

#include <string>

#include "core/model/precision.h"

namespace imagegen::test {

// $IMAGEGEN_TEST_DEVICE, or "cpu" when it is unset or empty.
std::string TestDevice();

// $IMAGEGEN_TEST_DTYPE parsed by ParsePrecision, or float32 when it is unset or empty. A value
// ParsePrecision refuses fails the calling test (and gives float32).
Precision TestPrecision();

// Whether TestDevice() is the CPU, where the reference comparisons keep their tightest bounds.
bool TestDeviceIsCpu();

}  // namespace imagegen::test

#endif  // IMAGEGEN_TESTS_SUPPORT_TEST_DEVICE_H_
