# cmake -DPROTOC=... -DPROTO_DIR=... -DIN=seed.txtpb -DOUT=file -P encode_seed.cmake
# Encodes one text-format GenerateRequest into the binary form the fuzzer reads.
execute_process(
  COMMAND "${PROTOC}" --encode=imagegen.v1.GenerateRequest -I "${PROTO_DIR}" imagegen/v1/imagegen.proto
  INPUT_FILE "${IN}" OUTPUT_FILE "${OUT}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "protoc --encode failed on ${IN}")
endif()
