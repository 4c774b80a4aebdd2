// imagegen-tokenize: prompts to token ids through a model's own tokenizer, to compare with a
// reference implementation (tests/core/clip_tokenize_tool_test.py) or to inspect a prompt.
//
//   imagegen-tokenize BUNDLE_DIR
//   imagegen-tokenize --tokenizer_dir DIR --max_length N [--type clip_bpe] [--vocab_file NAME]
//
// The first form reads BUNDLE_DIR/model.json (its "tokenizer" and "text_encoder.max_length") and
// takes the tokenizer CreateTokenizer makes of it, so it works for every tokenizer type; the
// second names the type and length for a bare tokenizer folder that has no model.json.
// Reads one JSON string per line on stdin, writes one JSON array of max_length ids per line on
// stdout. Exit status: 0; 1 when the tokenizer cannot be loaded; 2 for a usage error or an input
// line that is not a JSON string (stderr names the line).
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/model/model_config.h"
#include "core/model/tokenizer.h"

namespace imagegen {
namespace {

using json = nlohmann::json;

constexpr char kUsage[] =
    "usage: imagegen-tokenize BUNDLE_DIR\n"
    "       imagegen-tokenize --tokenizer_dir DIR --max_length N [--type clip_bpe] [--vocab_file NAME]\n"
    "Reads one JSON string per line on stdin; writes one JSON array of token ids per line.\n";

int Usage(const std::string& problem) {
  std::cerr << "imagegen-tokenize: " << problem << "\n" << kUsage;
  return 2;
}

int Run(int argc, char** argv) {
  std::string bundle_dir, tokenizer_dir, max_length_text;
  ModelConfig config;
  config.tokenizer_type = "clip_bpe";
  config.vocab_file = "vocab.txt";
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      return 0;
    }
    if (arg.rfind("--", 0) != 0) {
      if (!bundle_dir.empty()) return Usage("more than one BUNDLE_DIR");
      bundle_dir = arg;
      continue;
    }
    std::string name = arg.substr(2), value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return Usage(absl::StrCat(arg, " needs a value"));
    }
    if (name == "tokenizer_dir") {
      tokenizer_dir = value;
    } else if (name == "max_length") {
      max_length_text = value;
    } else if (name == "type") {
      config.tokenizer_type = value;
    } else if (name == "vocab_file") {
      config.vocab_file = value;
    } else {
      return Usage(absl::StrCat("unknown flag --", name));
    }
  }

  std::string dir;
  if (!bundle_dir.empty()) {
    if (!tokenizer_dir.empty() || !max_length_text.empty()) {
      return Usage("give either BUNDLE_DIR or --tokenizer_dir with --max_length, not both");
    }
    const std::filesystem::path path = std::filesystem::path(bundle_dir) / "model.json";
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::cerr << "imagegen-tokenize: " << path.string() << ": missing or unreadable\n";
      return 1;
    }
    std::stringstream text;
    text << in.rdbuf();
    auto parsed = ModelConfig::FromJson(text.str(), path.string());
    if (!parsed.ok()) {
      std::cerr << "imagegen-tokenize: " << parsed.status().message() << "\n";
      return 1;
    }
    config = *std::move(parsed);
    dir = bundle_dir;
  } else if (!tokenizer_dir.empty()) {
    if (!absl::SimpleAtoi(max_length_text, &config.max_length) || config.max_length < 2) {
      return Usage(absl::StrCat("--max_length must be an integer of at least 2, got \"", max_length_text, "\""));
    }
    dir = tokenizer_dir;
  } else {
    return Usage("no BUNDLE_DIR or --tokenizer_dir");
  }

  auto tokenizer = CreateTokenizer(config, dir);
  if (!tokenizer.ok()) {
    std::cerr << "imagegen-tokenize: " << tokenizer.status().message() << "\n";
    return 1;
  }

  std::string line;
  for (long line_number = 1; std::getline(std::cin, line); ++line_number) {
    json prompt = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!prompt.is_string()) {
      std::cerr << "imagegen-tokenize: stdin line " << line_number << " is not a JSON string\n";
      return 2;
    }
    std::cout << json((*tokenizer)->Encode(prompt.get<std::string>())).dump() << "\n" << std::flush;
  }
  return 0;
}

}  // namespace
}  // namespace imagegen

int main(int argc, char** argv) { return imagegen::Run(argc, argv); }
