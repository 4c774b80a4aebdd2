# imagegen_check_cxx_runtime(): refuses, at configure time, a C++ toolchain that links the C++
# runtime statically into executables.
#
# Why: LibTorch is a shared library that uses the system's libstdc++.so.6. An executable that
# carries its own static copy of libstdc++ (g++ -static-libstdc++, or a compiler wrapper that adds
# it, such as /opt/gcc/bin/g++ on the GPU hosts) puts two C++ runtimes in one process; a
# std::locale made by one is freed by the other inside torch::jit, and every binary aborts at
# start-up with "free(): invalid pointer" (docs/GPU.md, "Known facts").
#
# How: a small program that needs the C++ runtime (streams, locales) is built with the project's
# compiler, flags and linker flags (try_compile), and its dynamic section (readelf -d, else
# objdump -p) must list libstdc++.so among its NEEDED libraries. The answer is cached per
# compiler and flags, so only the first configure pays for it (about a second).
#
# -DIMAGEGEN_CHECK_CXX_RUNTIME=OFF skips the check (for a fully static toolchain you know to be
# right).
option(IMAGEGEN_CHECK_CXX_RUNTIME "Refuse a compiler that links libstdc++ statically beside a shared LibTorch" ON)

function(imagegen_check_cxx_runtime)
  if(NOT IMAGEGEN_CHECK_CXX_RUNTIME OR NOT CMAKE_SYSTEM_NAME STREQUAL "Linux")
    return()
  endif()
  set(key "${CMAKE_CXX_COMPILER}|${CMAKE_CXX_FLAGS}|${CMAKE_EXE_LINKER_FLAGS}")
  if(DEFINED CACHE{IMAGEGEN_CXX_RUNTIME_OK_FOR} AND "$CACHE{IMAGEGEN_CXX_RUNTIME_OK_FOR}" STREQUAL key)
    return()
  endif()

  set(dir "${CMAKE_BINARY_DIR}/CMakeFiles/imagegen_cxx_runtime")
  file(WRITE "${dir}/probe.cc" [=[
#include <iostream>
#include <locale>
#include <sstream>
#include <string>
int main(int argc, char**) {
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out << "args: " << argc;
  std::cout << out.str() << '\n';
  return out.str().empty() ? 1 : 0;
}
]=])
  try_compile(built "${dir}/build" "${dir}/probe.cc"
    OUTPUT_VARIABLE build_output
    COPY_FILE "${dir}/probe"
    COPY_FILE_ERROR copy_error)
  if(NOT built OR copy_error)
    message(FATAL_ERROR "imagegen: the C++ compiler ${CMAKE_CXX_COMPILER} cannot build and link a "
                        "small test program (cmake/ImagegenCxxRuntime.cmake):\n${build_output}${copy_error}")
  endif()

  set(tool "${CMAKE_READELF}")
  set(tool_args -d)
  if(NOT tool)
    find_program(IMAGEGEN_READELF NAMES readelf)
    set(tool "${IMAGEGEN_READELF}")
  endif()
  if(NOT tool)
    set(tool "${CMAKE_OBJDUMP}")
    set(tool_args -p)
  endif()
  if(NOT tool)
    message(WARNING "imagegen: neither readelf nor objdump found: cannot check that "
                    "${CMAKE_CXX_COMPILER} links libstdc++ dynamically (docs/GPU.md)")
    return()
  endif()
  execute_process(COMMAND "${tool}" ${tool_args} "${dir}/probe"
    OUTPUT_VARIABLE dynamic RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(WARNING "imagegen: ${tool} ${tool_args} on a test program failed (${err}): cannot check "
                    "that ${CMAKE_CXX_COMPILER} links libstdc++ dynamically")
    return()
  endif()
  string(REGEX MATCHALL "NEEDED[^\n]*" needed "${dynamic}")
  if(NOT needed MATCHES "libstdc\\+\\+\\.so")
    string(REPLACE ";" "\n    " needed_lines "${needed}")
    message(FATAL_ERROR
      "imagegen: the C++ compiler ${CMAKE_CXX_COMPILER} links the C++ runtime statically into "
      "executables: a test program built with it does not load libstdc++.so.6 (its NEEDED "
      "libraries:\n    ${needed_lines}\n). LibTorch is a shared library that uses the system's "
      "libstdc++.so.6, and with a second, static copy in the executable every imagegen binary "
      "aborts at start-up (\"free(): invalid pointer\"; the /opt/gcc/bin/g++ wrapper on the GPU "
      "hosts adds -static-libstdc++). Configure a fresh build folder with a compiler that links "
      "libstdc++ dynamically, e.g. -DCMAKE_CXX_COMPILER=/usr/bin/g++ (or CXX=/usr/bin/g++), and "
      "without -static-libstdc++ in CMAKE_CXX_FLAGS or CMAKE_EXE_LINKER_FLAGS. docs/GPU.md "
      "explains; -DIMAGEGEN_CHECK_CXX_RUNTIME=OFF skips this check.")
  endif()
  set(IMAGEGEN_CXX_RUNTIME_OK_FOR "${key}" CACHE INTERNAL "compiler and flags whose executables load libstdc++.so")
  message(STATUS "imagegen: ${CMAKE_CXX_COMPILER} links libstdc++ dynamically (checked with ${tool})")
endfunction()
