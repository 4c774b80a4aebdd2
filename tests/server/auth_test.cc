// Access control of the gRPC port (issue 8): bearer tokens, TLS and mutual TLS on a real
// ImageGenServer over loopback, the flags' errors, model names as lookups, and the metrics
// endpoint on an address of its own.
//
// The certificates are made at test time with the openssl command line (Debian's `openssl`,
// scripts/setup.sh): a CA, a server certificate for localhost and 127.0.0.1, a client
// certificate from that CA, and one from a second (rogue) CA.
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "imagegen/v1/imagegen.grpc.pb.h"
#include "server/auth.h"
#include "server/server.h"
#include "tests/support/http_get.h"
#include "tests/support/service_client.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/test_bundle.h"
#include "tests/support/test_device.h"

namespace imagegen {
namespace {

constexpr char kToken[] = "s3cret-Token_0123456789abcdef";
constexpr char kOtherToken[] = "another-token-for-the-batch-service";

std::string ReadAll(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

void WriteAll(const std::filesystem::path& path, const std::string& contents) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << contents;
}

// The metadata a server sees, for BearerTokenChecker::Check without a server. The strings must
// outlive the map (string_ref points into them).
std::multimap<grpc::string_ref, grpc::string_ref> Metadata(const std::vector<std::pair<std::string, std::string>>& kv) {
  std::multimap<grpc::string_ref, grpc::string_ref> out;
  for (const auto& [k, v] : kv) out.emplace(grpc::string_ref(k), grpc::string_ref(v));
  return out;
}

// ---- The token file and the checker, without a server ----

std::unique_ptr<BearerTokenChecker> Checker(const std::string& contents) {
  auto checker = BearerTokenChecker::FromContents(contents, "tokens.txt");
  EXPECT_TRUE(checker.ok()) << checker.status();
  return checker.ok() ? *std::move(checker) : nullptr;
}

TEST(AuthTokenFile, SkipsBlankAndCommentLinesAndTrims) {
  auto checker = Checker(absl::StrCat("# the web front end\n\n  ", kToken, "  \r\n\t# retired: old-token\n",
                                      kOtherToken, "\n"));
  ASSERT_NE(checker, nullptr);
  EXPECT_EQ(checker->num_tokens(), 2);
  const std::string right = absl::StrCat("Bearer ", kToken), other = absl::StrCat("Bearer ", kOtherToken);
  EXPECT_TRUE(checker->Check(Metadata({{"authorization", right}})).ok());
  EXPECT_TRUE(checker->Check(Metadata({{"authorization", other}})).ok());
  EXPECT_EQ(checker->Check(Metadata({{"authorization", "Bearer old-token"}})).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(AuthTokenFile, NoTokenIsAnErrorNamingTheFlagAndThePath) {
  auto checker = BearerTokenChecker::FromContents("# nothing yet\n\n   \n", "/etc/imagegen/tokens");
  ASSERT_FALSE(checker.ok());
  EXPECT_EQ(checker.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(checker.status().message(), "--auth_tokens_file /etc/imagegen/tokens"))
      << checker.status();
}

TEST(AuthTokenFile, UnreadableFileIsAnErrorNamingTheFlagAndThePath) {
  test::ScratchDir dir;
  const std::string path = (dir.path() / "missing.txt").string();
  auto checker = BearerTokenChecker::FromFile(path);
  ASSERT_FALSE(checker.ok());
  EXPECT_TRUE(absl::StrContains(checker.status().message(), absl::StrCat("--auth_tokens_file ", path)))
      << checker.status();
}

TEST(AuthTokenFile, ABadTokenIsNamedByItsLineNeverShown) {
  auto checker = BearerTokenChecker::FromContents("good-token\nhalf secret\n", "tokens.txt");
  ASSERT_FALSE(checker.ok());
  EXPECT_TRUE(absl::StrContains(checker.status().message(), "line 2")) << checker.status();
  EXPECT_FALSE(absl::StrContains(checker.status().message(), "secret")) << checker.status();
}

TEST(AuthTokenChecker, AnswersMissingOrInvalidWithoutEchoingTheToken) {
  auto checker = Checker(absl::StrCat(kToken, "\n", kOtherToken, "\n"));
  ASSERT_NE(checker, nullptr);
  const std::string token = kToken;
  // Missing: no header, another scheme, an empty bearer value, another header.
  const std::vector<std::vector<std::pair<std::string, std::string>>> missing = {
      {}, {{"authorization", absl::StrCat("Basic ", token)}}, {{"authorization", "Bearer   "}}, {{"x-token", token}}};
  for (const auto& headers : missing) {
    const absl::Status status = checker->Check(Metadata(headers)).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
    EXPECT_TRUE(absl::StrContains(status.message(), "missing bearer token")) << status;
    EXPECT_FALSE(absl::StrContains(status.message(), token)) << status;
  }
  // Wrong: other bytes, a prefix, the token with more after it, one byte changed at the end.
  std::string last_changed = token;
  last_changed.back() ^= 1;
  for (const std::string& wrong : {std::string("nope"), token.substr(0, token.size() - 1), token + "x", last_changed,
                                   token + token}) {
    const absl::Status status = checker->Check(Metadata({{"authorization", absl::StrCat("Bearer ", wrong)}})).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << wrong;
    EXPECT_TRUE(absl::StrContains(status.message(), "not valid")) << status;
    EXPECT_FALSE(absl::StrContains(status.message(), wrong)) << status;
  }
  // The scheme in any case, and spaces around the token.
  for (const std::string& value : {absl::StrCat("bearer ", token), absl::StrCat("BEARER\t", token),
                                   absl::StrCat("  Bearer   ", token, "  ")}) {
    EXPECT_TRUE(checker->Check(Metadata({{"authorization", value}})).ok()) << value;
  }
}

// Issue 14: a line may name its principal and its highest priority; plain tokens are principals
// of their own; several tokens may share a name (rotation).
TEST(AuthTokenFile, NamesPrincipalsAndTheirMaxPriority) {
  auto checker = BearerTokenChecker::FromContents(
      "alice:tok-a max_priority=5\nbob:tok-b\nplain:token:with:colons\n  tok-c  \nalice:tok-a2\n", "tokens.txt",
      /*default_max_priority=*/-3);
  ASSERT_TRUE(checker.ok()) << checker.status();
  auto who = [&](const std::string& token) {
    absl::StatusOr<Principal> p = (*checker)->Check(Metadata({{"authorization", "Bearer " + token}}));
    EXPECT_TRUE(p.ok()) << token << ": " << p.status();
    return p.ok() ? *p : Principal{};
  };
  EXPECT_EQ(who("tok-a").name, "alice");
  EXPECT_EQ(who("tok-a").max_priority, 5);
  EXPECT_EQ(who("tok-a2").name, "alice");
  EXPECT_EQ(who("tok-a2").max_priority, -3);
  EXPECT_EQ(who("tok-b").name, "bob");
  EXPECT_EQ(who("token:with:colons").name, "plain");
  EXPECT_EQ(who("tok-c").name, "token-L4");
  EXPECT_TRUE(who("tok-b").from_tokens_file);
  EXPECT_EQ((*checker)->principal_names(), (std::vector<std::string>{"alice", "bob", "plain", "token-L4"}));
  // A token whose part before ':' is no name is a plain token.
  auto odd = BearerTokenChecker::FromContents("=x:secret\n", "tokens.txt");
  ASSERT_TRUE(odd.ok()) << odd.status();
  EXPECT_TRUE((*odd)->Check(Metadata({{"authorization", "Bearer =x:secret"}})).ok());
}

TEST(AuthTokenFile, BadFieldsAndRepeatedTokensAreRefusedByLine) {
  for (const std::string& contents :
       {std::string("alice:tok-a max_priority=101\n"), std::string("ok\nalice:tok-a max_prio=1\n"),
        std::string("alice:tok-a max_priority=1 more\n"), std::string("alice:same\nbob:same\n")}) {
    auto checker = BearerTokenChecker::FromContents(contents, "tokens.txt");
    ASSERT_FALSE(checker.ok()) << contents;
    EXPECT_EQ(checker.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(checker.status().message(), "line ")) << checker.status();
    EXPECT_FALSE(absl::StrContains(checker.status().message(), "tok-a")) << checker.status();
    EXPECT_FALSE(absl::StrContains(checker.status().message(), "same")) << checker.status();
  }
}

// ---- Certificates ----

// A CA, a server certificate for localhost / 127.0.0.1 and two client certificates: one signed
// by the CA, one by a rogue CA. EC P-256 keys: quick to make.
class TestCertificates {
 public:
  TestCertificates() {
    WriteAll(path("openssl.cnf"), R"([req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
[client_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
)");
    MakeCa("ca");
    MakeCa("rogue-ca");
    MakeLeaf("server", "ca", "server_ext", 2);
    MakeLeaf("client", "ca", "client_ext", 3);
    MakeLeaf("rogue-client", "rogue-ca", "client_ext", 4);
  }

  // NAME.pem (certificate) or NAME.key (private key).
  std::string path(const std::string& name) const { return (dir_.path() / name).string(); }
  std::string pem(const std::string& name) const { return ReadAll(dir_.path() / name); }
  const std::filesystem::path& dir() const { return dir_.path(); }

 private:
  void Run(const std::string& args) {
    if (::testing::Test::HasFatalFailure()) return;  // one report is enough
    const std::string log = path("openssl.log");
    const std::string command = absl::StrCat("openssl ", args, " >", log, " 2>&1");
    const int rc = std::system(command.c_str());
    ASSERT_EQ(rc, 0) << command << " failed (is Debian's openssl installed? scripts/setup.sh):\n" << ReadAll(log);
  }
  static constexpr char kNewKey[] = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

  void MakeCa(const std::string& name) {
    Run(absl::StrCat("req -x509 ", kNewKey, " -days 2 -subj /CN=imagegen-test-", name, " -config ", path("openssl.cnf"),
                     " -extensions ca_ext -keyout ", path(name + ".key"), " -out ", path(name + ".pem")));
  }
  void MakeLeaf(const std::string& name, const std::string& ca, const std::string& extensions, int serial) {
    Run(absl::StrCat("req -new ", kNewKey, " -subj /CN=", name == "server" ? "localhost" : name, " -config ",
                     path("openssl.cnf"), " -keyout ", path(name + ".key"), " -out ", path(name + ".csr")));
    Run(absl::StrCat("x509 -req -days 2 -set_serial ", serial, " -in ", path(name + ".csr"), " -CA ",
                     path(ca + ".pem"), " -CAkey ", path(ca + ".key"), " -extfile ", path("openssl.cnf"),
                     " -extensions ", extensions, " -out ", path(name + ".pem")));
  }

  test::ScratchDir dir_;
};

// ---- A real server ----

v1::GenerateRequest SmallRequest() {
  v1::GenerateRequest r;
  r.set_prompt("a photo of a dress");
  r.set_steps(2);
  r.set_seed(5);
  return r;
}


class AuthServerTest : public ::testing::Test {
 protected:
  ServerOptions Options() {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "";  // no ~2 s exposer shutdown
    options.model_dir = test::TestBundleDir();
    options.engine.devices = {test::TestDevice()};  // IMAGEGEN_TEST_DEVICE (scripts/gpu_check.sh)
    options.engine.intra_op_threads = 1;
    return options;
  }

  void Start(const ServerOptions& options) {
    auto server = ImageGenServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // A server that wants kToken (or kOtherToken) on a plaintext port; `metrics_listen` as in
  // ServerOptions (Options() turns the endpoint off).
  void StartWithTokens(const std::string& metrics_listen = "") {
    WriteAll(scratch_.path() / "tokens.txt", absl::StrCat("# test tokens\n", kToken, "\n", kOtherToken, "\n"));
    ServerOptions options = Options();
    options.metrics_listen = metrics_listen;
    options.auth_tokens_file = (scratch_.path() / "tokens.txt").string();
    Start(options);
  }

  std::unique_ptr<v1::ImageGenerator::Stub> Stub(std::shared_ptr<grpc::ChannelCredentials> credentials) {
    return v1::ImageGenerator::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()), std::move(credentials)));
  }

  static grpc::SslCredentialsOptions Trusting(const TestCertificates& certs, const std::string& ca) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = certs.pem(ca + ".pem");
    return ssl;
  }

  static grpc::Status ListModels(v1::ImageGenerator::Stub& stub, const std::string& token = "",
                                 v1::ListModelsResponse* response = nullptr) {
    v1::ListModelsResponse unused;
    return stub.ListModels(test::NewCallContext(token).get(), v1::ListModelsRequest(), response ? response : &unused);
  }

  static grpc::Status Generate(v1::ImageGenerator::Stub& stub, const v1::GenerateRequest& request,
                               const std::string& token = "", int* results = nullptr) {
    auto context = test::NewCallContext(token);
    auto reader = stub.Generate(context.get(), request);
    v1::GenerateEvent event;
    int n = 0;
    while (reader->Read(&event)) n += event.has_result() ? 1 : 0;
    if (results) *results = n;
    return reader->Finish();
  }

  test::ScratchDir scratch_;
  std::unique_ptr<ImageGenServer> server_;
};

TEST_F(AuthServerTest, TlsServerRefusesAPlaintextClient) {
  TestCertificates certs;
  ServerOptions options = Options();
  options.tls_cert = certs.path("server.pem");
  options.tls_key = certs.path("server.key");
  Start(options);
  auto stub = Stub(grpc::InsecureChannelCredentials());
  EXPECT_EQ(ListModels(*stub).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(AuthServerTest, TlsClientTrustingTheCaIsServed) {
  TestCertificates certs;
  ServerOptions options = Options();
  options.tls_cert = certs.path("server.pem");
  options.tls_key = certs.path("server.key");
  Start(options);
  auto stub = Stub(grpc::SslCredentials(Trusting(certs, "ca")));
  v1::ListModelsResponse models;
  const grpc::Status listed = ListModels(*stub, "", &models);
  ASSERT_TRUE(listed.ok()) << listed.error_message();
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).name(), test::kTinyModel);
  int results = 0;
  const grpc::Status generated = Generate(*stub, SmallRequest(), "", &results);
  EXPECT_TRUE(generated.ok()) << generated.error_message();
  EXPECT_EQ(results, 1);

  // A client that trusts another CA does not take the server's certificate.
  auto doubting = Stub(grpc::SslCredentials(Trusting(certs, "rogue-ca")));
  EXPECT_EQ(ListModels(*doubting).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(AuthServerTest, MutualTlsServesOnlyClientsWithACertificateFromTheCa) {
  TestCertificates certs;
  ServerOptions options = Options();
  options.tls_cert = certs.path("server.pem");
  options.tls_key = certs.path("server.key");
  options.tls_client_ca = certs.path("ca.pem");
  Start(options);

  auto anonymous = Stub(grpc::SslCredentials(Trusting(certs, "ca")));
  EXPECT_FALSE(ListModels(*anonymous).ok()) << "a client without a certificate was served";

  grpc::SslCredentialsOptions rogue = Trusting(certs, "ca");
  rogue.pem_cert_chain = certs.pem("rogue-client.pem");
  rogue.pem_private_key = certs.pem("rogue-client.key");
  auto impostor = Stub(grpc::SslCredentials(rogue));
  EXPECT_FALSE(ListModels(*impostor).ok()) << "a client certificate from another CA was accepted";

  grpc::SslCredentialsOptions good = Trusting(certs, "ca");
  good.pem_cert_chain = certs.pem("client.pem");
  good.pem_private_key = certs.pem("client.key");
  auto client = Stub(grpc::SslCredentials(good));
  const grpc::Status status = ListModels(*client);
  EXPECT_TRUE(status.ok()) << status.error_message();
  int results = 0;
  const grpc::Status generated = Generate(*client, SmallRequest(), "", &results);
  EXPECT_TRUE(generated.ok()) << generated.error_message();
  EXPECT_EQ(results, 1);
}

TEST_F(AuthServerTest, EveryMethodWantsTheToken) {
  StartWithTokens("127.0.0.1:0");
  auto stub = Stub(grpc::InsecureChannelCredentials());

  grpc::Status status = ListModels(*stub);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "missing bearer token")) << status.error_message();

  int results = 0;
  status = Generate(*stub, SmallRequest(), "", &results);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  EXPECT_EQ(results, 0);

  v1::GenerateResponse response;
  status = stub->GenerateImages(test::NewCallContext().get(), SmallRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();

  // Even a job id that does not exist: the token comes before anything about the request.
  v1::CancelJobRequest cancel;
  cancel.set_job_id("no-such-job");
  v1::CancelJobResponse cancelled;
  status = stub->CancelJob(test::NewCallContext().get(), cancel, &cancelled);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  status = stub->CancelJob(test::NewCallContext(kToken).get(), cancel, &cancelled);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();

  // The four refusals are counted, under the model "unknown" whatever the request named.
  auto metrics = test::HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_TRUE(absl::StrContains(*metrics, R"(imagegen_requests_total{model="unknown",outcome="unauthenticated"} 4)"))
      << *metrics;
}

TEST_F(AuthServerTest, OnlyAListedTokenIsServed) {
  StartWithTokens();
  auto stub = Stub(grpc::InsecureChannelCredentials());
  const std::string token = kToken;
  for (const std::string& wrong : {std::string("wrong"), token.substr(0, 8), token + "0", std::string(kToken).substr(1)}) {
    const grpc::Status status = ListModels(*stub, wrong);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << wrong;
    EXPECT_TRUE(absl::StrContains(status.error_message(), "not valid")) << status.error_message();
    EXPECT_FALSE(absl::StrContains(status.error_message(), wrong)) << status.error_message();
  }
  EXPECT_TRUE(ListModels(*stub, kToken).ok());
  EXPECT_TRUE(ListModels(*stub, kOtherToken).ok());
  int results = 0;
  const grpc::Status generated = Generate(*stub, SmallRequest(), kToken, &results);
  EXPECT_TRUE(generated.ok()) << generated.error_message();
  EXPECT_EQ(results, 1);
  v1::GenerateResponse response;
  EXPECT_TRUE(stub->GenerateImages(test::NewCallContext(kOtherToken).get(), SmallRequest(), &response).ok());
  EXPECT_EQ(response.images_size(), 1);
}

TEST_F(AuthServerTest, TokensAndMutualTlsTogether) {
  TestCertificates certs;
  WriteAll(scratch_.path() / "tokens.txt", absl::StrCat(kToken, "\n"));
  ServerOptions options = Options();
  options.tls_cert = certs.path("server.pem");
  options.tls_key = certs.path("server.key");
  options.tls_client_ca = certs.path("ca.pem");
  options.auth_tokens_file = (scratch_.path() / "tokens.txt").string();
  Start(options);
  grpc::SslCredentialsOptions good = Trusting(certs, "ca");
  good.pem_cert_chain = certs.pem("client.pem");
  good.pem_private_key = certs.pem("client.key");
  auto stub = Stub(grpc::SslCredentials(good));
  EXPECT_EQ(ListModels(*stub).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(ListModels(*stub, kToken).ok());
}

// Issue 14: priorities are bounded per principal, and a cancel names only the caller's own jobs
// (with the client's id cut to 128 bytes in the answer).
TEST_F(AuthServerTest, PriorityIsBoundedAndCancelReachesOnlyOwnJobs) {
  StartWithTokens();
  auto stub = Stub(grpc::InsecureChannelCredentials());
  v1::GenerateRequest request = SmallRequest();
  request.set_priority(1);
  grpc::Status status = Generate(*stub, request, kToken);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), "priority is 1")) << status.error_message();
  request.set_priority(-7);
  EXPECT_TRUE(Generate(*stub, request, kToken).ok());

  v1::CancelJobRequest cancel;
  cancel.set_job_id(std::string(10000, 'x'));
  v1::CancelJobResponse response;
  status = stub->CancelJob(test::NewCallContext(kOtherToken).get(), cancel, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_LT(status.error_message().size(), 250u) << status.error_message();
}

TEST_F(AuthServerTest, HealthAnswersWithoutAToken) {
  StartWithTokens();
  // The probes of Kubernetes cannot send a token.
  const test::HealthOutcome health = test::CheckHealth(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials()));
  ASSERT_TRUE(health.status.ok()) << health.status.error_message();
  EXPECT_EQ(health.reply, test::kServingReply);
}

TEST_F(AuthServerTest, TheRequestLogNeverHoldsAToken) {
  StartWithTokens();  // with the request log on stderr (ServerOptions' default)
  auto stub = Stub(grpc::InsecureChannelCredentials());
  const std::string wrong = "guess-" + std::string(kToken);
  testing::internal::CaptureStderr();
  const grpc::Status refused = ListModels(*stub, wrong);
  v1::GenerateRequest invalid = SmallRequest();
  invalid.set_steps(100000);
  const grpc::Status invalid_status = Generate(*stub, invalid, kToken);
  const grpc::Status ok = Generate(*stub, SmallRequest(), kToken);
  server_.reset();  // every line written
  const std::string log = testing::internal::GetCapturedStderr();

  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(invalid_status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_TRUE(absl::StrContains(log, R"("method":"ListModels","outcome":"refused","code":"UNAUTHENTICATED")")) << log;
  EXPECT_TRUE(absl::StrContains(log, R"("outcome":"ok")")) << log;
  EXPECT_FALSE(absl::StrContains(log, kToken)) << log;
  EXPECT_FALSE(absl::StrContains(log, wrong)) << log;
}

TEST_F(AuthServerTest, ModelNamesAreLookedUpNeverOpened) {
  Start(Options());
  auto stub = Stub(grpc::InsecureChannelCredentials());
  const std::string bundle = test::TestBundleDir();
  for (const std::string& name : {std::string("../../etc/passwd"), std::string("/tmp"), std::string("."),
                                  std::string("tiny-random/../tiny-random"), bundle, bundle + "/"}) {
    v1::GenerateRequest request = SmallRequest();
    request.set_model(name);
    v1::GenerateResponse response;
    const grpc::Status status = stub->GenerateImages(test::NewCallContext().get(), request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << name << ": " << status.error_message();
  }
}

TEST_F(AuthServerTest, MetricsListenOnAnAddressOfTheirOwn) {
  ServerOptions options = Options();
  // All of 127/8 is loopback on Linux: the API on one address, the metrics on another.
  options.listen = "127.0.0.2:0";
  options.metrics_listen = "127.0.0.1:0";
  Start(options);
  ASSERT_GT(server_->metrics_port(), 0);
  auto stub = v1::ImageGenerator::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.2:", server_->port()), grpc::InsecureChannelCredentials()));
  EXPECT_TRUE(ListModels(*stub).ok());
  auto metrics = test::HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_TRUE(absl::StrContains(*metrics, "imagegen_queue_depth"));
}

// ---- Flags that cannot work: errors before any port opens, naming the flag ----

class AuthFlagsTest : public AuthServerTest {
 protected:
  void ExpectError(const ServerOptions& options, const std::vector<std::string>& parts) {
    auto server = ImageGenServer::Start(options);
    ASSERT_FALSE(server.ok());
    for (const std::string& part : parts) {
      EXPECT_TRUE(absl::StrContains(server.status().message(), part)) << server.status() << " lacks " << part;
    }
  }
};

TEST_F(AuthFlagsTest, CertificateAndKeyGoTogether) {
  ServerOptions options = Options();
  options.tls_cert = "/etc/imagegen/tls.crt";
  ExpectError(options, {"--tls_key", "--tls_cert"});
  options.tls_cert = "";
  options.tls_key = "/etc/imagegen/tls.key";
  ExpectError(options, {"--tls_cert", "--tls_key"});
}

TEST_F(AuthFlagsTest, ClientCaNeedsTls) {
  ServerOptions options = Options();
  options.tls_client_ca = "/etc/imagegen/ca.crt";
  ExpectError(options, {"--tls_client_ca", "/etc/imagegen/ca.crt", "--tls_cert"});
}

TEST_F(AuthFlagsTest, MissingOrWrongFilesAreNamed) {
  TestCertificates certs;
  const std::string missing = (scratch_.path() / "nothing-here.pem").string();
  ServerOptions options = Options();
  options.tls_cert = missing;
  options.tls_key = certs.path("server.key");
  ExpectError(options, {"--tls_cert", missing});

  options.tls_cert = certs.path("server.pem");
  options.tls_key = missing;
  ExpectError(options, {"--tls_key", missing});

  // A certificate where the key should be, and the other way round.
  options.tls_key = certs.path("server.pem");
  ExpectError(options, {"--tls_key", certs.path("server.pem"), "PRIVATE KEY"});
  options.tls_key = certs.path("server.key");
  options.tls_client_ca = certs.path("ca.key");
  ExpectError(options, {"--tls_client_ca", certs.path("ca.key"), "CERTIFICATE"});

  // A key that is not the certificate's: gRPC refuses the port.
  options.tls_client_ca = "";
  options.tls_key = certs.path("client.key");
  ExpectError(options, {"--tls_key does not match --tls_cert"});

  options = Options();
  options.auth_tokens_file = missing;
  ExpectError(options, {"--auth_tokens_file", missing});
  WriteAll(scratch_.path() / "empty-tokens.txt", "# to do\n");
  options.auth_tokens_file = (scratch_.path() / "empty-tokens.txt").string();
  ExpectError(options, {"--auth_tokens_file", options.auth_tokens_file, "no token"});
}

}  // namespace
}  // namespace imagegen
