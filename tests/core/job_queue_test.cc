// The admission queue alone: capacity, its size reports, and the rule that no listener is called
// under the queue's lock (job.h states the lock order).
#include "core/engine/job_queue.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/match.h"

#include "tests/support/fake_job_listener.h"
#include "tests/support/fake_pipeline.h"

namespace imagegen {
namespace {

using test::FakeClock;
using test::FakeJobListener;

class JobQueueTest : public ::testing::Test {
 protected:
  std::shared_ptr<Job> Make(const std::string& id, std::shared_ptr<JobListener> listener = nullptr,
                            absl::Time deadline = absl::InfiniteFuture(), const std::string& principal = "",
                            int priority = 0) {
    auto job = std::make_shared<Job>(listener ? std::move(listener) : std::make_shared<FakeJobListener>());
    job->sequence = sequence_++;  // admission order: the queue's tie-break
    job->request.principal = principal;
    job->request.priority = priority;
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
  JobQueue queue(1, 0, absl::Seconds(10), &clock_);
  EXPECT_TRUE(queue.Push(Make("a")).ok());
  EXPECT_EQ(queue.Push(Make("b")).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(queue.Close().size(), 1u);
  EXPECT_EQ(queue.Push(Make("c")).code(), absl::StatusCode::kUnavailable);
}

// The queue-depth gauge is fed from the queue's own lock, so concurrent changes report in order
// and the last report is the size the queue has.
TEST_F(JobQueueTest, ReportsItsSizeAfterEveryChange) {
  std::vector<int> sizes;
  JobQueue queue(4, 0, absl::Seconds(10), &clock_, [&](int size) { sizes.push_back(size); });
  ASSERT_TRUE(queue.Push(Make("a")).ok());
  ASSERT_TRUE(queue.Push(Make("b", nullptr, clock_.Now() + absl::Seconds(1))).ok());
  ASSERT_TRUE(queue.Push(Make("c")).ok());
  ASSERT_TRUE(queue.Push(Make("d")).ok());
  EXPECT_EQ(queue.Push(Make("refused")).code(), absl::StatusCode::kResourceExhausted);  // no change
  EXPECT_EQ(queue.PopWhile([](const Job&) { return false; }).size(), 0u);               // no change
  EXPECT_NE(queue.Remove("", "c"), nullptr);
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(queue.RemoveExpired(clock_.Now()).size(), 1u);
  EXPECT_EQ(queue.PopWhile([](const Job& job) { return job.request.job_id == "a"; }).size(), 1u);
  EXPECT_EQ(queue.Close().size(), 1u);
  EXPECT_EQ(sizes, (std::vector<int>{1, 2, 3, 4, 3, 2, 1, 0}));
}

TEST_F(JobQueueTest, AcceptedThenEveryNewPositionInOrder) {
  JobQueue queue(4, 0, absl::Seconds(10), &clock_);
  auto first = std::make_shared<FakeJobListener>();
  auto last = std::make_shared<FakeJobListener>();
  ASSERT_TRUE(queue.Push(Make("a", first)).ok());
  ASSERT_TRUE(queue.Push(Make("b")).ok());
  ASSERT_TRUE(queue.Push(Make("c", last)).ok());
  EXPECT_EQ(first->accepted_position(), 0);
  EXPECT_EQ(last->accepted_position(), 2);
  EXPECT_NE(queue.Remove("", "b"), nullptr);
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
    if (position == 0) removed_behind = queue_->Remove("", "behind") != nullptr;
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
  JobQueue queue(4, 0, absl::Seconds(10), &clock_);
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

// Issue 14: one client cannot take the whole queue.
TEST_F(JobQueueTest, EachPrincipalHasAShareOfTheQueue) {
  JobQueue queue(8, 2, absl::Seconds(10), &clock_);
  const absl::Time never = absl::InfiniteFuture();
  EXPECT_TRUE(queue.Push(Make("a1", nullptr, never, "alice")).ok());
  EXPECT_TRUE(queue.Push(Make("a2", nullptr, never, "alice")).ok());
  const absl::Status third = queue.Push(Make("a3", nullptr, never, "alice"));
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(third.message(), "2 jobs waiting")) << third;
  EXPECT_TRUE(queue.Push(Make("b1", nullptr, never, "bob")).ok());
  EXPECT_EQ(queue.size(), 3);
  // Another principal's id is not found, so it cannot be removed (cancelled) by the wrong one.
  EXPECT_EQ(queue.Remove("bob", "a1"), nullptr);
  EXPECT_NE(queue.Remove("alice", "a1"), nullptr);
  EXPECT_TRUE(queue.Push(Make("a3", nullptr, never, "alice")).ok());  // room again
}

// Positions count the jobs ahead when principals take turns; a principal's priority orders only
// its own jobs, and PopWhile takes the head of the principal its caller ranks first.
TEST_F(JobQueueTest, PrincipalsTakeTurns) {
  JobQueue queue(8, 0, absl::Seconds(10), &clock_);
  const absl::Time never = absl::InfiniteFuture();
  auto a2 = std::make_shared<FakeJobListener>();
  auto b1 = std::make_shared<FakeJobListener>();
  ASSERT_TRUE(queue.Push(Make("a1", nullptr, never, "alice", 100)).ok());
  ASSERT_TRUE(queue.Push(Make("a2", a2, never, "alice", 100)).ok());
  ASSERT_TRUE(queue.Push(Make("a3", nullptr, never, "alice", 100)).ok());
  ASSERT_TRUE(queue.Push(Make("b1", b1, never, "bob", -100)).ok());
  EXPECT_EQ(a2->accepted_position(), 1);
  EXPECT_EQ(a2->queue_positions(), (std::vector<int>{2}));  // b1 takes a turn before it
  EXPECT_EQ(b1->accepted_position(), 0);
  std::map<std::string, int> taken;
  std::vector<std::string> order;
  auto jobs = queue.PopWhile(
      [&](const Job& job) {
        ++taken[job.request.principal];
        order.push_back(job.request.job_id);
        return true;
      },
      [&](const std::string& principal) -> int64_t { return taken[principal]; });
  EXPECT_EQ(order, (std::vector<std::string>{"a1", "b1", "a2", "a3"}));
  EXPECT_EQ(jobs.size(), 4u);
}

}  // namespace
}  // namespace imagegen
