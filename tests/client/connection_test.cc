#include "client/connection.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>

#include <grpcpp/test/client_context_test_peer.h>

#include "absl/strings/str_cat.h"

namespace imagegen::client {
namespace {

// Sets IMAGEGEN_TOKEN (or unsets it, for nullopt) for one test and restores it after.
class ScopedTokenVariable {
 public:
  explicit ScopedTokenVariable(const std::optional<std::string>& value) {
    if (const char* old = std::getenv(kTokenEnvironmentVariable)) saved_ = old;
    Set(value);
  }
  ~ScopedTokenVariable() { Set(saved_); }

 private:
  static void Set(const std::optional<std::string>& value) {
    if (value) {
      setenv(kTokenEnvironmentVariable, value->c_str(), /*overwrite=*/1);
    } else {
      unsetenv(kTokenEnvironmentVariable);
    }
  }
  std::optional<std::string> saved_;
};

class ConnectionTest : public ::testing::Test {
 protected:
  // Writes `contents` to a file of the test's own in the test temporary folder.
  std::string WriteTempFile(const std::string& name, const std::string& contents) {
    const std::string path = absl::StrCat(
        ::testing::TempDir(), "connection_test_",
        ::testing::UnitTest::GetInstance()->current_test_info()->name(), "_", name);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << contents;
    return path;
  }

  std::string Missing() const { return ::testing::TempDir() + "connection_test_no_such_file"; }

  ScopedTokenVariable no_token_variable_{std::nullopt};
};

void ExpectMentions(const absl::Status& status, std::initializer_list<std::string> parts) {
  for (const std::string& part : parts) {
    EXPECT_NE(status.message().find(part), absl::string_view::npos) << part << ": " << status;
  }
}

TEST_F(ConnectionTest, NoTlsFlagsMeanPlaintext) {
  absl::StatusOr<std::optional<grpc::SslCredentialsOptions>> tls = LoadTlsFiles({});
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_FALSE(tls->has_value());
}

TEST_F(ConnectionTest, ReadsTheCaAndTheClientPair) {
  ConnectionOptions options;
  options.tls_ca = WriteTempFile("ca.pem", "CA PEM");
  options.tls_cert = WriteTempFile("cert.pem", "CERT PEM");
  options.tls_key = WriteTempFile("key.pem", "KEY PEM");
  absl::StatusOr<std::optional<grpc::SslCredentialsOptions>> tls = LoadTlsFiles(options);
  ASSERT_TRUE(tls.ok()) << tls.status();
  ASSERT_TRUE(tls->has_value());
  EXPECT_EQ((*tls)->pem_root_certs, "CA PEM");
  EXPECT_EQ((*tls)->pem_cert_chain, "CERT PEM");
  EXPECT_EQ((*tls)->pem_private_key, "KEY PEM");
}

TEST_F(ConnectionTest, TheClientPairNeedsBothHalvesAndTheCa) {
  ConnectionOptions only_cert;
  only_cert.tls_ca = WriteTempFile("ca.pem", "CA");
  only_cert.tls_cert = WriteTempFile("cert.pem", "CERT");
  absl::Status status = LoadTlsFiles(only_cert).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  ExpectMentions(status, {"--tls_key", "--tls_cert"});

  ConnectionOptions only_key;
  only_key.tls_key = WriteTempFile("key.pem", "KEY");
  status = LoadTlsFiles(only_key).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  ExpectMentions(status, {"--tls_key is set but --tls_cert is empty"});

  ConnectionOptions no_ca;
  no_ca.tls_cert = WriteTempFile("cert.pem", "CERT");
  no_ca.tls_key = WriteTempFile("key.pem", "KEY");
  status = LoadTlsFiles(no_ca).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  ExpectMentions(status, {"--tls_cert needs --tls_ca"});
}

TEST_F(ConnectionTest, AnUnreadableTlsFileIsNamedWithItsFlag) {
  ConnectionOptions options;
  options.tls_ca = Missing();
  absl::Status status = LoadTlsFiles(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  ExpectMentions(status, {"--tls_ca", Missing()});

  options.tls_ca = WriteTempFile("ca.pem", "CA");
  options.tls_cert = WriteTempFile("cert.pem", "CERT");
  options.tls_key = Missing();
  status = LoadTlsFiles(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  ExpectMentions(status, {"--tls_key", Missing()});

  options.tls_cert = Missing();
  options.tls_key = WriteTempFile("key.pem", "KEY");
  status = LoadTlsFiles(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  ExpectMentions(status, {"--tls_cert", Missing()});
}

TEST_F(ConnectionTest, NoTokenFileAndNoVariableMeanNoToken) {
  absl::StatusOr<std::string> token = LoadBearerToken({});
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "");
}

TEST_F(ConnectionTest, TheTokenFileTakesItsFirstTokenLine) {
  ConnectionOptions options;
  options.token_file = WriteTempFile("token.txt", "# for the web front end\n\n  s3cret-1 \n");
  absl::StatusOr<std::string> token = LoadBearerToken(options);
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "s3cret-1");
}

TEST_F(ConnectionTest, TheTokenFileWinsOverTheVariable) {
  ScopedTokenVariable variable("from-the-environment");
  ConnectionOptions options;
  EXPECT_EQ(*LoadBearerToken(options), "from-the-environment");
  options.token_file = WriteTempFile("token.txt", "from-the-file\n");
  EXPECT_EQ(*LoadBearerToken(options), "from-the-file");
}

TEST_F(ConnectionTest, AnEmptyVariableCountsAsUnset) {
  ScopedTokenVariable variable("");
  absl::StatusOr<std::string> token = LoadBearerToken({});
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "");
}

TEST_F(ConnectionTest, TokenErrorsNameTheSourceButNeverTheToken) {
  ConnectionOptions options;
  options.token_file = Missing();
  absl::Status status = LoadBearerToken(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  ExpectMentions(status, {"--token_file", Missing()});

  options.token_file = WriteTempFile("token.txt", "# only comments\n");
  status = LoadBearerToken(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  ExpectMentions(status, {"--token_file", options.token_file});

  ScopedTokenVariable variable("two words-secret");
  status = LoadBearerToken({}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  ExpectMentions(status, {"IMAGEGEN_TOKEN"});
  EXPECT_EQ(status.message().find("words-secret"), absl::string_view::npos) << status;
}

TEST_F(ConnectionTest, AuthorizeAddsTheBearerHeaderOnlyWithAToken) {
  grpc::ClientContext with;
  AddBearerToken("abc", &with);
  const auto sent = grpc::testing::ClientContextTestPeer(&with).GetSendInitialMetadata();
  ASSERT_EQ(sent.count("authorization"), 1u);
  EXPECT_EQ(sent.find("authorization")->second, "Bearer abc");

  grpc::ClientContext without;
  AddBearerToken("", &without);
  EXPECT_TRUE(grpc::testing::ClientContextTestPeer(&without).GetSendInitialMetadata().empty());
}

TEST_F(ConnectionTest, CreateReadsEverythingBeforeAnyCall) {
  ConnectionOptions options;
  options.server = "127.0.0.1:1";  // nothing listens: Create must not connect
  options.token_file = WriteTempFile("token.txt", "tok\n");
  absl::StatusOr<Connection> connection = Connection::Create(options);
  ASSERT_TRUE(connection.ok()) << connection.status();
  EXPECT_NE(connection->stub(), nullptr);
  EXPECT_TRUE(connection->has_token());
  EXPECT_EQ(connection->server(), "127.0.0.1:1");
  grpc::ClientContext context;
  connection->Authorize(&context);
  const auto sent = grpc::testing::ClientContextTestPeer(&context).GetSendInitialMetadata();
  ASSERT_EQ(sent.count("authorization"), 1u);
  EXPECT_EQ(sent.find("authorization")->second, "Bearer tok");
}

TEST_F(ConnectionTest, CreateFailsOnABadFlagWithItsStatus) {
  ConnectionOptions options;
  options.server = "";
  absl::Status status = Connection::Create(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  ExpectMentions(status, {"--server"});

  options.server = "localhost:50051";
  options.tls_ca = Missing();
  status = Connection::Create(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  ExpectMentions(status, {"--tls_ca", Missing()});

  options.tls_ca = "";
  options.token_file = Missing();
  status = Connection::Create(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  ExpectMentions(status, {"--token_file", Missing()});
}

}  // namespace
}  // namespace imagegen::client
