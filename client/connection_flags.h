// The connection flags shared by `imagegen` and `imagegen-loadgen`: --server, --tls_ca,
// --tls_cert, --tls_key and --token_file, defined once here (Abseil flags are process-wide, and
// each may be defined only once per binary). Link imagegen::cli_flags to get them.
#ifndef IMAGEGEN_CLIENT_CONNECTION_FLAGS_H_
#define IMAGEGEN_CLIENT_CONNECTION_FLAGS_H_

#include "client/connection.h"

namespace imagegen::client {

// The connection flags' values. REQUIRES: the command line is parsed.
ConnectionOptions ConnectionOptionsFromFlags();

}  // namespace imagegen::client

#endif  // IMAGEGEN_CLIENT_CONNECTION_FLAGS_H_
