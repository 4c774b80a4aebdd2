#include "tests/support/service_client.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>

#include "absl/synchronization/notification.h"

namespace imagegen::test {

std::unique_ptr<grpc::ClientContext> NewCallContext(const std::string& token) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
  return context;
}

v1::GenerateRequest SmallRequest() {
  v1::GenerateRequest r;
  r.set_prompt("a photo of a dress");
  r.set_steps(3);
  r.set_seed(5);
  return r;
}

v1::GenerateRequest LongRequest(const std::string& job_id) {
  v1::GenerateRequest r = SmallRequest();
  r.set_job_id(job_id);
  r.set_steps(200);
  r.set_num_images(8);
  return r;
}

StreamOutcome ReadToEnd(grpc::ClientReader<v1::GenerateEvent>& reader) {
  StreamOutcome out;
  v1::GenerateEvent event;
  while (reader.Read(&event)) out.events.push_back(event);
  out.status = reader.Finish();
  return out;
}

HealthOutcome CheckHealth(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub generic(channel);
  grpc::Slice empty_slice("");
  grpc::ByteBuffer request(&empty_slice, 1);
  grpc::ByteBuffer response;
  HealthOutcome out;
  auto context = NewCallContext();
  absl::Notification done;
  generic.UnaryCall(context.get(), "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                    [&](grpc::Status s) {
                      out.status = std::move(s);
                      done.Notify();
                    });
  done.WaitForNotification();  // the context's deadline bounds the wait
  grpc::Slice reply;
  if (out.status.ok() && response.DumpToSingleSlice(&reply).ok()) {
    out.reply.assign(reinterpret_cast<const char*>(reply.begin()), reply.size());
  }
  return out;
}

}  // namespace imagegen::test
