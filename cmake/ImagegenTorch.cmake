# imagegen_setup_torch(): what the project needs from the LibTorch that find_package(Torch) found,
# Debian's CPU LibTorch 1.13 (CI, the Docker image) or the CUDA LibTorch 2.x inside a pip torch
# package (GPU hosts, Dockerfile.cuda; -DCMAKE_PREFIX_PATH=$(python3 -c 'import
# torch.utils; print(torch.utils.cmake_prefix_path)')). Call it after find_package(Protobuf) and
# find_package(Torch). It sets, in the caller's scope:
#
#   IMAGEGEN_TORCH_HAS_CUDA  ON when this LibTorch has CUDA: core/ and bench/ then define
#                            IMAGEGEN_WITH_CUDA, and the GPU-only code compiles.
#
# and puts protobuf's headers before Torch's (below). docs/GPU.md explains both.
#
# The protobuf header clash. The pip package's torch/include holds google/protobuf/ (an older
# protobuf that Torch was built with), and Torch's imported targets name torch/include as an
# include directory. A translation unit that sees both Torch's and Debian's protobuf 3.21
# include directories (server/, the tests: they link imagegen::engine and imagegen::proto) then
# gets whichever comes first on its include path, and when that is torch/include, the generated
# imagegen.pb.h fails to compile (PROTOBUF_LONGLONG, EnsureSpace errors). Both are -isystem
# directories (imported targets), searched in command-line order, which follows link order:
# the engine (Torch) comes before the proto library. So when a Torch include directory other
# than protobuf's own holds google/protobuf, the protobuf include directories are prepended to
# the INTERFACE_INCLUDE_DIRECTORIES of each Torch target that names that directory: wherever
# Torch's headers are on the path, protobuf's come first. Nothing in the torch installation is
# renamed or changed. With Debian's LibTorch the headers of both live in /usr/include and nothing
# is done.
#
# Why find_package(Protobuf) must come before find_package(Torch): the pip package's
# Caffe2Config.cmake is built with CAFFE2_LINK_LOCAL_PROTOBUF and, when no protobuf::libprotobuf
# target exists yet, defines one as an alias of an empty INTERFACE library; FindProtobuf keeps
# an existing target, so imagegen::proto and gRPC's targets would then link no libprotobuf.
function(imagegen_setup_torch)
  if(NOT TARGET torch)
    message(FATAL_ERROR "imagegen_setup_torch: call find_package(Torch) first")
  endif()
  if(NOT Protobuf_FOUND AND NOT PROTOBUF_FOUND)
    message(FATAL_ERROR "imagegen_setup_torch: call find_package(Protobuf) first")
  endif()
  if(NOT TARGET protobuf::libprotobuf)
    message(FATAL_ERROR "imagegen_setup_torch: no protobuf::libprotobuf target")
  endif()
  get_target_property(protobuf_type protobuf::libprotobuf TYPE)
  if(protobuf_type STREQUAL "INTERFACE_LIBRARY")
    message(FATAL_ERROR "imagegen: protobuf::libprotobuf is an empty INTERFACE library: Torch's "
                        "config defined it before FindProtobuf ran; find_package(Protobuf) must "
                        "come before find_package(Torch)")
  endif()

  # --- protobuf's headers before Torch's
  set(protobuf_dirs ${Protobuf_INCLUDE_DIRS})
  if(NOT protobuf_dirs)
    set(protobuf_dirs ${Protobuf_INCLUDE_DIR})
  endif()
  foreach(dir IN LISTS protobuf_dirs)
    get_filename_component(dir "${dir}" REALPATH)
    list(APPEND protobuf_real "${dir}")
  endforeach()
  set(shadowing "")
  set(fixed "")
  foreach(target torch torch_library torch_cpu torch_cuda c10 c10_cuda)
    if(NOT TARGET ${target})
      continue()
    endif()
    get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT dirs)
      continue()
    endif()
    set(clash FALSE)
    foreach(dir IN LISTS dirs)
      if(dir MATCHES "^\\$<" OR NOT EXISTS "${dir}/google/protobuf")
        continue()
      endif()
      get_filename_component(real "${dir}" REALPATH)
      if(NOT real IN_LIST protobuf_real)
        set(clash TRUE)
        list(APPEND shadowing "${dir}")
      endif()
    endforeach()
    if(clash)
      set_property(TARGET ${target} PROPERTY INTERFACE_INCLUDE_DIRECTORIES ${protobuf_dirs} ${dirs})
      list(APPEND fixed ${target})
    endif()
  endforeach()
  if(fixed)
    list(REMOVE_DUPLICATES shadowing)
    message(STATUS "imagegen: ${shadowing} holds google/protobuf; protobuf's ${protobuf_dirs} put "
                   "first on the interface include path of ${fixed}")
  endif()

  # --- CUDA: torch_cuda exists only in a LibTorch built with CUDA (2.x: Caffe2Targets.cmake);
  # TorchConfig.cmake fills TORCH_CUDA_LIBRARIES and Caffe2Config.cmake sets CAFFE2_USE_CUDA then.
  if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES OR CAFFE2_USE_CUDA)
    set(has_cuda ON)
  else()
    set(has_cuda OFF)
  endif()
  set(IMAGEGEN_TORCH_HAS_CUDA ${has_cuda} PARENT_SCOPE)
  message(STATUS "imagegen: LibTorch ${Torch_VERSION} from ${Torch_DIR}; CUDA: ${has_cuda}")
endfunction()
