// ModelBundle::Load on the tiny exported bundle, and on copies of it broken one way each: every
// error names the file, and the field or shape, at fault.
#include "core/model/model_bundle.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#include "core/math/sampler_registry.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/test_bundle.h"
#include "tests/support/test_device.h"

namespace imagegen {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::ScratchDir;
using test::TestBundleDir;

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

TEST(ModelBundle, LoadsTheTinyBundle) {
  // float32 whatever IMAGEGEN_TEST_DTYPE says: tiny-random's modules (models/train/ldm.py)
  // compute in float32 whatever their input.
  auto bundle = ModelBundle::Load(TestBundleDir(), test::TestDevice());
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  const ModelConfig& c = (*bundle)->config();
  EXPECT_EQ(c.name, test::kTinyModel);
  EXPECT_EQ(c.image_channels, test::kTinyImageChannels);
  EXPECT_EQ(c.default_width, test::kTinySide);
  EXPECT_EQ(c.default_height, test::kTinySide);
  EXPECT_EQ(c.max_length, test::kTinyMaxLength);
  EXPECT_EQ(c.size_multiple % c.downsampling_factor, 0);
  EXPECT_GT(c.scaling_factor, 0);
  EXPECT_EQ(c.latent_rgb_matrix.size(), 3u * c.latent_channels);
  EXPECT_EQ(c.latent_rgb_bias.size(), 3u);
  EXPECT_EQ((*bundle)->tokenizer().max_length(), c.max_length);
  EXPECT_EQ((*bundle)->tokenizer().Encode("").front(), WordTokenizer::kBosId);
  EXPECT_EQ((*bundle)->schedule().num_train_timesteps(), 1000);
  EXPECT_TRUE((*bundle)->has_vae_encoder());
  EXPECT_EQ((*bundle)->device(), torch::Device(test::TestDevice()));
  EXPECT_EQ((*bundle)->precision(), Precision::kFloat32);
  EXPECT_EQ((*bundle)->dtype(), torch::kFloat);
  EXPECT_EQ((*bundle)->vae_decoder_float32(), nullptr);
  EXPECT_EQ((*bundle)->dir(), TestBundleDir());
}

TEST(Precision, ParsesItsNamesAndRefusesOthersNamingTheAllowed) {
  for (Precision p : {Precision::kFloat32, Precision::kFloat16, Precision::kBfloat16}) {
    auto parsed = ParsePrecision(PrecisionName(p));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, p);
  }
  EXPECT_STREQ(PrecisionName(Precision::kFloat16), "float16");
  for (const char* bad : {"fp16", "half", "Float32", ""}) {
    auto parsed = ParsePrecision(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(parsed.status().message());
    EXPECT_NE(message.find(absl::StrCat("\"", bad, "\"")), std::string::npos) << message;
    EXPECT_NE(message.find("float32, float16, bfloat16"), std::string::npos) << message;
  }
}

TEST(ModelBundle, ReducedPrecisionOnTheCpuIsRefusedSayingWhatIsAllowed) {
  for (Precision p : {Precision::kFloat16, Precision::kBfloat16}) {
    auto bundle = ModelBundle::Load(TestBundleDir(), "cpu", p);
    ASSERT_FALSE(bundle.ok());
    EXPECT_EQ(bundle.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(bundle.status().message());
    EXPECT_NE(message.find(absl::StrCat("--dtype ", PrecisionName(p), " needs a CUDA device")), std::string::npos)
        << message;
    EXPECT_NE(message.find("allowed on cpu: float32"), std::string::npos) << message;
  }
  // A bad device is still named as one.
  auto bundle = ModelBundle::Load(TestBundleDir(), "tpu:7", Precision::kFloat16);
  ASSERT_FALSE(bundle.ok());
  EXPECT_NE(bundle.status().message().find("tpu:7"), absl::string_view::npos) << bundle.status();
}

// The SD reference bundle on the test device in the test precision (IMAGEGEN_TEST_DTYPE):
// the probes ran in it, and a float32 decoder is kept for the decodes that overflow.
TEST(ModelBundle, LoadsAnSdBundleInTheTestPrecision) {
  auto bundle = ModelBundle::Load(test::SdBundlesDir() + "/sd1-tiny", test::TestDevice(), test::TestPrecision());
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ((*bundle)->precision(), test::TestPrecision());
  EXPECT_EQ((*bundle)->vae_decoder_float32() != nullptr, test::TestPrecision() != Precision::kFloat32);
}

// Casting reaches the weights a frozen module keeps as graph constants: in float64 the outputs
// are float64 and within float32 rounding of the float32 modules'.
TEST(ModelBundle, CastsFrozenModulesToTheirDtype) {
  const std::string dir = test::SdBundlesDir() + "/sd1-tiny";
  auto float32 = ModelBundle::Load(dir);
  ASSERT_TRUE(float32.ok()) << float32.status();
  auto float64 = ModelBundle::LoadForTest(dir, torch::kDouble);
  ASSERT_TRUE(float64.ok()) << float64.status();
  EXPECT_EQ((*float64)->dtype(), torch::kDouble);
  EXPECT_EQ((*float64)->precision(), Precision::kFloat32);
  c10::InferenceMode guard;
  at::Tensor z = at::randn({1, 4, 8, 8});
  at::Tensor a = (*float32)->vae_decoder().forward({z}).toTensor();
  at::Tensor b = (*float64)->vae_decoder().forward({z.to(torch::kDouble)}).toTensor();
  EXPECT_EQ(b.scalar_type(), torch::kDouble);
  EXPECT_TRUE(at::allclose(a, b.to(torch::kFloat), 1e-4, 1e-4)) << (a - b).abs().max();
}

// A module that computes in float32 whatever its input fails the probe in another precision,
// naming its file and saying why.
TEST(ModelBundle, ModulesThatComputeInFloat32AloneFailTheProbeInAnotherPrecision) {
  auto bundle = ModelBundle::LoadForTest(TestBundleDir(), torch::kDouble);
  ASSERT_FALSE(bundle.ok());
  EXPECT_EQ(bundle.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(bundle.status().message());
  EXPECT_NE(message.find(".pt: "), std::string::npos) << message;
  EXPECT_NE(message.find("float32"), std::string::npos) << message;
}

TEST(ModelBundle, UnknownDeviceIsAnError) {
  auto bundle = ModelBundle::Load(TestBundleDir(), "tpu:7");
  ASSERT_FALSE(bundle.ok());
  EXPECT_EQ(bundle.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bundle.status().message().find("tpu:7"), absl::string_view::npos) << bundle.status();
}

// A copy of the tiny bundle in a scratch folder, for a test to break.
class BrokenBundleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(scratch_.path().empty());
    dir_ = scratch_.path() / "bundle";
    fs::copy(TestBundleDir(), dir_, fs::copy_options::recursive);
    model_json_ = json::parse(ReadText(dir_ / "model.json"));
    scheduler_json_ = json::parse(ReadText(dir_ / "scheduler_config.json"));
  }

  void SaveModelJson() { WriteText(dir_ / "model.json", model_json_.dump(2)); }
  void SaveSchedulerJson() { WriteText(dir_ / "scheduler_config.json", scheduler_json_.dump(2)); }

  // Loads the broken copy and checks that it fails with `code` and a message holding `file`
  // (a path inside the bundle) and every fragment.
  void ExpectLoadError(absl::StatusCode code, const std::string& file,
                       const std::vector<std::string>& fragments) {
    auto bundle = ModelBundle::Load(dir_.string());
    ASSERT_FALSE(bundle.ok()) << "the broken bundle loaded";
    EXPECT_EQ(bundle.status().code(), code) << bundle.status();
    const std::string message(bundle.status().message());
    const std::string path = (dir_ / file).string();
    EXPECT_NE(message.find(path), std::string::npos) << "no \"" << path << "\" in: " << message;
    for (const std::string& f : fragments) {
      EXPECT_NE(message.find(f), std::string::npos) << "no \"" << f << "\" in: " << message;
    }
  }

  ScratchDir scratch_;
  fs::path dir_;
  json model_json_;
  json scheduler_json_;
};

TEST_F(BrokenBundleTest, UnchangedCopyLoads) {
  auto bundle = ModelBundle::Load(dir_.string());
  EXPECT_TRUE(bundle.ok()) << bundle.status();
}

TEST_F(BrokenBundleTest, MissingModuleNamesTheFile) {
  fs::remove(dir_ / "unet.pt");
  ExpectLoadError(absl::StatusCode::kNotFound, "unet.pt", {"missing"});
}

TEST_F(BrokenBundleTest, MissingModelJsonNamesTheFile) {
  fs::remove(dir_ / "model.json");
  ExpectLoadError(absl::StatusCode::kNotFound, "model.json", {});
}

TEST_F(BrokenBundleTest, MissingVocabularyNamesTheFile) {
  fs::remove(dir_ / "vocab.txt");
  ExpectLoadError(absl::StatusCode::kNotFound, "vocab.txt", {});
}

TEST_F(BrokenBundleTest, ModuleThatIsNotTorchScriptNamesTheFile) {
  WriteText(dir_ / "vae_decoder.pt", "these bytes are not a zip archive");
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "vae_decoder.pt", {"TorchScript"});
}

TEST_F(BrokenBundleTest, FilesThatAreNotJsonNameTheFile) {
  WriteText(dir_ / "model.json", "{\"name\": \"tiny-random\",");
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "model.json", {"not valid JSON"});
}

TEST_F(BrokenBundleTest, SchedulerConfigThatIsNotJsonNamesTheFile) {
  WriteText(dir_ / "scheduler_config.json", "beta_schedule = linear\n");
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "scheduler_config.json", {"not valid JSON"});
}

TEST_F(BrokenBundleTest, JsonThatIsNotAnObjectNamesTheFile) {
  WriteText(dir_ / "model.json", "[1, 2, 3]");
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "model.json", {"object"});
}

TEST_F(BrokenBundleTest, WrongValueTypeNamesTheField) {
  model_json_["scaling_factor"] = "x";
  SaveModelJson();
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "model.json", {"scaling_factor", "number", "\"x\""});
}

TEST_F(BrokenBundleTest, WrongNestedValueTypeNamesTheDottedField) {
  model_json_["text_encoder"]["max_length"] = 12.5;
  SaveModelJson();
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "model.json", {"text_encoder.max_length", "integer"});
}

TEST_F(BrokenBundleTest, MissingFieldNamesTheField) {
  model_json_.erase("default_width");
  SaveModelJson();
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "model.json", {"default_width", "missing"});
}

TEST_F(BrokenBundleTest, OutOfRangeFieldNamesTheFieldAndRange) {
  model_json_["image_channels"] = 0;
  SaveModelJson();
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "model.json", {"image_channels", "is 0", "1..4"});
}

TEST_F(BrokenBundleTest, UnknownDefaultSamplerNamesTheField) {
  model_json_["defaults"]["sampler"] = "no-such-sampler";
  SaveModelJson();
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "model.json", {"defaults.sampler", "no-such-sampler"});
}

// TorchScript from a newer torch than the server's LibTorch is refused at load, saying so.
TEST_F(BrokenBundleTest, ModulesFromANewerTorchAreRefusedSayingSo) {
  model_json_["exported_with"]["torch"] = "99.1.0";
  SaveModelJson();
  ExpectLoadError(absl::StatusCode::kFailedPrecondition, "model.json",
                  {"written by torch 99.1.0", "newer than this server's LibTorch"});
  model_json_["exported_with"]["torch"] = "1.13.1";  // the same minor version loads
  SaveModelJson();
  EXPECT_TRUE(ModelBundle::Load(dir_.string()).ok());
  model_json_["exported_with"]["torch"] = "nightly";
  SaveModelJson();
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "model.json", {"exported_with.torch", "nightly"});
}

// What the loader derives from scheduler_config.json: the samplers it supports, from how many
// steps, and num_train_timesteps; a default the config refuses fails the load.
TEST_F(BrokenBundleTest, LoadRecordsWhatEachSamplerAcceptsAndRefusesADefaultItCannotRun) {
  auto bundle = ModelBundle::Load(dir_.string());
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  const ModelConfig& c = (*bundle)->config();
  EXPECT_EQ(c.num_train_timesteps, 1000);
  ASSERT_EQ(c.samplers.size(), SamplerNames().size());
  for (const auto& s : c.samplers) EXPECT_TRUE(s.refusal.empty()) << s.name << ": " << s.refusal;
  std::ifstream in(dir_ / "scheduler_config.json");
  nlohmann::json scheduler = nlohmann::json::parse(in);
  scheduler["prediction_type"] = "sample";
  WriteText(dir_ / "scheduler_config.json", scheduler.dump());
  model_json_["defaults"]["sampler"] = "euler_a";
  SaveModelJson();
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "model.json", {"defaults.sampler", "euler_a", "prediction_type"});
  model_json_["defaults"]["sampler"] = "ddim";
  SaveModelJson();
  auto loaded = ModelBundle::Load(dir_.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE((*loaded)->config().FindSampler("euler_a")->refusal.empty());
  const std::vector<std::string> supported = (*loaded)->config().SupportedSamplers();
  EXPECT_EQ(std::find(supported.begin(), supported.end(), "euler_a"), supported.end());
}

TEST_F(BrokenBundleTest, LatentChannelsThatDisagreeWithThePreviewMatrixNameTheMatrix) {
  model_json_["latent_channels"] = 3;
  SaveModelJson();
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "model.json", {"latent_rgb.matrix", "(3)"});
}

TEST_F(BrokenBundleTest, LatentChannelsThatDisagreeWithTheUnetFailTheProbeNamingTheModule) {
  // Consistent inside model.json, wrong for the modules: only the probe call can tell.
  model_json_["latent_channels"] = 3;
  for (json& row : model_json_["latent_rgb"]["matrix"]) row.erase(row.size() - 1);
  SaveModelJson();
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "unet.pt", {"probe"});
}

TEST_F(BrokenBundleTest, ContextDimThatDisagreesWithTheTextEncoderNamesTheModuleAndShape) {
  model_json_["text_encoder"]["context_dim"] = 8;
  SaveModelJson();
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "text_encoder.pt", {"shape", "[1, 12, 8]"});
}

TEST_F(BrokenBundleTest, ImageChannelsThatDisagreeWithTheDecoderNameTheModuleAndShape) {
  model_json_["image_channels"] = 3;
  SaveModelJson();
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "vae_decoder.pt", {"shape", "[1, 3, 32, 32]"});
}

TEST_F(BrokenBundleTest, UnsupportedSchedulerValueNamesTheKey) {
  scheduler_json_["beta_schedule"] = "cosine";
  SaveSchedulerJson();
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "scheduler_config.json", {"beta_schedule", "cosine"});
}

TEST_F(BrokenBundleTest, DefaultStepsBeyondTheScheduleNamesTheField) {
  scheduler_json_["num_train_timesteps"] = 20;
  SaveSchedulerJson();
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "model.json", {"defaults.steps", "30"});
}

TEST_F(BrokenBundleTest, BadVocabularyNamesTheFileAndLine) {
  WriteText(dir_ / "vocab.txt", "<bos>\n<pad>\n<eos>\ndress\n");
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "vocab.txt", {"line 1"});
}

TEST_F(BrokenBundleTest, VocabularyOutsideTheBundleIsRefused) {
  model_json_["tokenizer"]["vocab_file"] = "../vocab.txt";
  SaveModelJson();
  ExpectLoadError(absl::StatusCode::kInvalidArgument, "model.json", {"tokenizer.vocab_file"});
}

TEST(FindBundleDirs, ABundleIsItsOwnOnlyBundle) {
  auto dirs = FindBundleDirs(TestBundleDir());
  ASSERT_TRUE(dirs.ok()) << dirs.status();
  EXPECT_EQ(*dirs, std::vector<std::string>{TestBundleDir()});
}

TEST(FindBundleDirs, FolderOfBundlesListsEachBundleSortedByName) {
  ScratchDir scratch;
  ASSERT_FALSE(scratch.path().empty());
  for (const char* name : {"zeta", "alpha", "mid"}) {
    fs::create_directory(scratch.path() / name);
    WriteText(scratch.path() / name / "model.json", "{}");
  }
  fs::create_directory(scratch.path() / "not-a-bundle");
  WriteText(scratch.path() / "not-a-bundle" / "notes.txt", "hello");
  WriteText(scratch.path() / "model.json.bak", "{}");
  auto dirs = FindBundleDirs(scratch.path().string());
  ASSERT_TRUE(dirs.ok()) << dirs.status();
  EXPECT_EQ(*dirs, (std::vector<std::string>{(scratch.path() / "alpha").string(), (scratch.path() / "mid").string(),
                                            (scratch.path() / "zeta").string()}));
}

TEST(FindBundleDirs, FolderWithoutBundlesIsNotFound) {
  ScratchDir scratch;
  ASSERT_FALSE(scratch.path().empty());
  fs::create_directory(scratch.path() / "empty");
  auto dirs = FindBundleDirs(scratch.path().string());
  ASSERT_FALSE(dirs.ok());
  EXPECT_EQ(dirs.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(dirs.status().message().find(scratch.path().string()), absl::string_view::npos) << dirs.status();
}

TEST(FindBundleDirs, MissingFolderIsNotFound) {
  ScratchDir scratch;
  ASSERT_FALSE(scratch.path().empty());
  const std::string missing = (scratch.path() / "nowhere").string();
  auto dirs = FindBundleDirs(missing);
  ASSERT_FALSE(dirs.ok());
  EXPECT_EQ(dirs.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(dirs.status().message().find(missing), absl::string_view::npos) << dirs.status();
}

}  // namespace
// Issue 14: a bundle file that is a symbolic link out of the bundle's folder is refused, naming
// the file but neither the target nor anything read from it; a link within the folder (as
// Kubernetes mounts ConfigMaps) is followed.
TEST_F(BrokenBundleTest, SymlinksOutOfTheBundleAreRefusedWithoutEchoingTheTarget) {
  fs::path outside = scratch_.path() / "secret.txt";
  {
    std::ofstream out(outside);
    out << "root:x:0:0:top-secret-content\n";
  }
  fs::remove(dir_ / "vocab.txt");
  fs::create_symlink(outside, dir_ / "vocab.txt");
  auto bundle = ModelBundle::Load(dir_.string());
  ASSERT_FALSE(bundle.ok());
  EXPECT_TRUE(absl::StrContains(bundle.status().message(), "vocab.txt: a symbolic link out of its folder"))
      << bundle.status();
  EXPECT_FALSE(absl::StrContains(bundle.status().message(), "secret")) << bundle.status();

  fs::remove(dir_ / "vocab.txt");
  fs::create_directory(dir_ / "..data");
  fs::copy_file(TestBundleDir() + "/vocab.txt", dir_ / "..data" / "vocab.txt");
  fs::create_symlink("..data/vocab.txt", dir_ / "vocab.txt");
  fs::rename(dir_ / "unet.pt", dir_ / "..data" / "unet.pt");
  fs::create_symlink("..data/unet.pt", dir_ / "unet.pt");
  EXPECT_TRUE(ModelBundle::Load(dir_.string()).ok());

  fs::remove(dir_ / "unet.pt");
  fs::create_symlink(fs::absolute(dir_ / ".." / "elsewhere.pt"), dir_ / "unet.pt");
  fs::copy_file(dir_ / "..data" / "unet.pt", dir_ / ".." / "elsewhere.pt");
  bundle = ModelBundle::Load(dir_.string());
  ASSERT_FALSE(bundle.ok());
  EXPECT_TRUE(absl::StrContains(bundle.status().message(), "unet.pt: a symbolic link out of its folder"))
      << bundle.status();
}

}  // namespace imagegen
