// The admission queue alone: capacity, its size reports, and the rule that no listener is called
// under the queue's lock (job.h states the lock order).
#include "core/engine/job_queue.h"

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/fake_job_listener.h"
#include "tests/support/fake_pipeline.h"

namespace imagegen {
namespace {

using test::FakeClock;
using test::FakeJobListener;

class JobQueueTest : public ::testing::Test {
 protected:
  std::shared_ptr<Job> Make(const std::string& id, std::shared_ptr<JobListener> listener = nullptr,
                            absl::Time deadline = absl::InfiniteFuture()) {
    auto job = std::make_shared<Job>(listener ? std::move(listener) : std::make_shared<FakeJobListener>());
    job->sequence = sequence_++;  // admission order: the queue's tie-break
    job->request.job_id = id;
    job->request.num_images = 1;
    job->request.deadline = deadline;
    job->accepted_at = clock_.Now();
    return job;
  }

  FakeClock clock_;
  uint64_t sequence_ = 0;
};

TEST_F(JobQueueTest, FullQueueIsRefusedAtOnceAndClosedQueueIsUnavailable) {
  JobQueue queue(1, absl::Seconds(10), &clock_);
  EXPECT_TRUE(queue.Push(Make("a")).ok());
  EXPECT_EQ(queue.Push(Make("b")).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(queue.Close().size(), 1u);
  EXPECT_EQ(queue.Push(Make("c")).code(), absl::StatusCode::kUnavailable);
}

// The queue-depth gauge is fed from the queue's own lock, so concurrent changes report in order
// and the last report is the size the queue has.
TEST_F(JobQueueTest, ReportsItsSizeAfterEveryChange) {
  std::vector<int> sizes;
  JobQueue queue(4, absl::Seconds(10), &clock_, [&](int size) { sizes.push_back(size); });
  ASSERT_TRUE(queue.Push(Make("a")).ok());
  ASSERT_TRUE(queue.Push(Make("b", nullptr, clock_.Now() + absl::Seconds(1))).ok());
  ASSERT_TRUE(queue.Push(Make("c")).ok());
  ASSERT_TRUE(queue.Push(Make("d")).ok());
  EXPECT_EQ(queue.Push(Make("refused")).code(), absl::StatusCode::kResourceExhausted);  // no change
  EXPECT_EQ(queue.PopWhile([](const Job&) { return false; }).size(), 0u);               // no change
  EXPECT_NE(queue.Remove("c"), nullptr);
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(queue.RemoveExpired(clock_.Now()).size(), 1u);
  EXPECT_EQ(queue.PopWhile([](const Job& job) { return job.request.job_id == "a"; }).size(), 1u);
  EXPECT_EQ(queue.Close().size(), 1u);
  EXPECT_EQ(sizes, (std::vector<int>{1, 2, 3, 4, 3, 2, 1, 0}));
}

TEST_F(JobQueueTest, AcceptedThenEveryNewPositionInOrder) {
  JobQueue queue(4, absl::Seconds(10), &clock_);
  auto first = std::make_shared<FakeJobListener>();
  auto last = std::make_shared<FakeJobListener>();
  ASSERT_TRUE(queue.Push(Make("a", first)).ok());
  ASSERT_TRUE(queue.Push(Make("b")).ok());
  ASSERT_TRUE(queue.Push(Make("c", last)).ok());
  EXPECT_EQ(first->accepted_position(), 0);
  EXPECT_EQ(last->accepted_position(), 2);
  EXPECT_NE(queue.Remove("b"), nullptr);
  EXPECT_EQ(queue.PopWhile([](const Job& job) { return job.request.job_id == "a"; }).size(), 1u);
  EXPECT_EQ(last->queue_positions(), (std::vector<int>{1, 0}));
  EXPECT_EQ(queue.PopWhile([](const Job&) { return true; }).size(), 1u);
  EXPECT_EQ(last->queue_positions(), (std::vector<int>{1, 0}));  // nothing once it left
  EXPECT_TRUE(first->queue_positions().empty());  // it was always at the head
}

// A listener that calls back into the queue from its callbacks, as a gRPC reaction running
// inline could: with a listener called under the queue's lock this would deadlock.
class ReentrantListener : public JobListener {
 public:
  explicit ReentrantListener(JobQueue* queue) : queue_(queue) {}
  void OnAccepted(const std::string&, int) override { sizes_seen.push_back(queue_->size()); }
  void OnQueuePosition(int position) override {
    sizes_seen.push_back(queue_->size());
    if (position == 0) removed_behind = queue_->Remove("behind") != nullptr;
  }
  void OnProgress(ProgressUpdate) override {}
  void OnResult(JobResult) override {}
  void OnError(absl::Status) override {}

  std::vector<int> sizes_seen;
  bool removed_behind = false;

 private:
  JobQueue* queue_;
};

TEST_F(JobQueueTest, ListenersMayCallBackIntoTheQueue) {
  JobQueue queue(4, absl::Seconds(10), &clock_);
  auto reentrant = std::make_shared<ReentrantListener>(&queue);
  ASSERT_TRUE(queue.Push(Make("head")).ok());
  ASSERT_TRUE(queue.Push(Make("mine", reentrant)).ok());  // OnAccepted reads the size: 2
  ASSERT_TRUE(queue.Push(Make("behind")).ok());
  // The head leaves: "mine" moves to position 0 and, from that callback, removes "behind".
  EXPECT_EQ(queue.PopWhile([](const Job& job) { return job.request.job_id == "head"; }).size(), 1u);
  EXPECT_EQ(reentrant->sizes_seen, (std::vector<int>{2, 2}));
  EXPECT_TRUE(reentrant->removed_behind);
  EXPECT_EQ(queue.size(), 1);
}

}  // namespace
}  // namespace imagegen
