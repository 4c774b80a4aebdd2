#include "tests/support/service_client.h"

namespace imagegen::test {

std::unique_ptr<grpc::ClientContext> NewCallContext() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
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

}  // namespace imagegen::test
