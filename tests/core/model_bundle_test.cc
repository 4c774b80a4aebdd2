// ModelBundle::Load on the tiny exported bundle, and on copies of it broken one way each: every
// error names the file, and the field or shape, at fault.
#include "core/model/model_bundle.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/math/sampler_registry.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/test_bundle.h"

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
  auto bundle = ModelBundle::Load(TestBundleDir());
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
  EXPECT_TRUE((*bundle)->device().is_cpu());
  EXPECT_EQ((*bundle)->dir(), TestBundleDir());
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
}  // namespace imagegen
