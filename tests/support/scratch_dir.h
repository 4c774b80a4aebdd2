// A fresh temporary folder for one test, removed with everything in it when the object dies.
#ifndef IMAGEGEN_TESTS_SUPPORT_SCRATCH_DIR_H_
#define IMAGEGEN_TESTS_SUPPORT_SCRATCH_DIR_H_

#include <filesystem>

namespace imagegen::test {

// Not thread-safe; owned by one test. The name is unique (mkdtemp), so tests that run in
// parallel processes never share a folder.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace imagegen::test

#endif  // IMAGEGEN_TESTS_SUPPORT_SCRATCH_DIR_H_
