// The tiny random-weight model bundle the tests load, and requests that fit it.
//
// CTest exports the bundle once per run (the export_test_bundle fixture in tests/CMakeLists.txt,
// models/train/export_random.py); every test that loads a model requires that fixture.
#ifndef IMAGEGEN_TESTS_SUPPORT_TEST_BUNDLE_H_
#define IMAGEGEN_TESTS_SUPPORT_TEST_BUNDLE_H_

#include <string>

#include "absl/time/time.h"
#include "core/engine/job.h"
#include "core/model/model_config.h"

namespace imagegen::test {

// The bound on every wait in the tests: long enough never to be reached by a working engine on
// a busy two-core machine, short enough that a broken one fails the test rather than hanging it.
inline constexpr absl::Duration kTestTimeout = absl::Seconds(60);

// What the exported bundle's model.json says (models/train/ldm.py TINY_CONFIG).
inline constexpr char kTinyModel[] = "tiny-random";
inline constexpr int kTinySide = 32;          // default width and height, pixels
inline constexpr int kTinyImageChannels = 1;  // gray
inline constexpr int kTinyMaxLength = 12;     // text encoder length, <bos> and <eos> included

// The folder of the exported bundle.
std::string TestBundleDir();

// "tiny-faulty" (export_random.py --fault, the export_faulty_bundle setup of the same fixture):
// the tiny model with faults a request chooses. The scheduler batches only requests of one model
// and size, so a faulty call never carries a 32x32 request.
inline constexpr char kFaultyModel[] = "tiny-faulty";
inline constexpr int kFaultyThrowWidth = 64;    // the UNet raises
inline constexpr int kFaultyAllocHeight = 64;   // the UNet allocates more than any machine has
inline constexpr int kFaultyVaeWidth = 48;      // the VAE encoder (image to image) and decoder raise
inline constexpr char kFaultyWord[] = "sandal";  // in a prompt: the text encoder raises
std::string FaultyBundleDir();

// The Stable Diffusion reference checkpoints converted to bundles (models/convert/convert_sd.py,
// the convert_sd setup test of the test_bundle fixture): "sd1-tiny", "sd2-tiny" and
// "sd1-tiny-single" (the original single-file layout), under this folder.
std::string SdBundlesDir();
// tests/data/stable-diffusion: what diffusers computed from those checkpoints.
std::string SdReferenceDir();

// A config like the tiny bundle's model.json (name, sizes, latent factor, defaults), for tests
// that run without its weights (fake pipelines, validation).
ModelConfig TinyModelConfig();

// A valid request for the tiny model: `steps` DDIM steps of one 32x32 image with guidance,
// seed 7, a prompt of known words, no previews.
JobRequest TinyJobRequest(const std::string& job_id, int steps = 3);

}  // namespace imagegen::test

#endif  // IMAGEGEN_TESTS_SUPPORT_TEST_BUNDLE_H_
