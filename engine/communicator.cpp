// The single-process communicator and the launcher detection.
#include "engine/communicator.h"

#include <cstdlib>
#include <mutex>
#include <string>

#include "engine/mpi_communicator.h"
#include "runtime/error.h"

namespace mb {
namespace {

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  std::string backend() const override { return "single"; }
  void all_reduce_sum(double*, std::int64_t) override {}
  void all_reduce_sum(std::int64_t*, std::int64_t) override {}
  void all_reduce_min(std::uint64_t*, std::int64_t) override {}
  void all_reduce_max(std::uint64_t*, std::int64_t) override {}
  std::unique_ptr<PendingReduce> start_all_reduce_sum(float*, std::int64_t,
                                                      const Stream&) override {
    struct Done final : PendingReduce {
      void wait() override {}
    };
    return std::make_unique<Done>();
  }
  void broadcast(void*, std::size_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::_Exit(code); }
};

// A positive whole number from the environment variable `name`, or 0.
int environment_count(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return 0;
  char* end = nullptr;
  const long parsed = std::strtol(value, &end, 10);
  return (*end == '\0' && parsed > 0 && parsed < (1L << 24)) ? static_cast<int>(parsed) : 0;
}

}  // namespace

std::shared_ptr<Communicator> single_process_communicator() {
  static const std::shared_ptr<Communicator> single = std::make_shared<SingleProcess>();
  return single;
}

int launched_rank_count() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS",
                           "MPI_LOCALNRANKS"}) {
    const int count = environment_count(name);
    if (count > 0) return count;
  }
  return 1;
}

int launched_rank() {
  if (!launched_as_ranks()) return 0;
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') continue;
    char* end = nullptr;
    const long parsed = std::strtol(value, &end, 10);
    if (*end == '\0' && parsed >= 0 && parsed < (1L << 24)) return static_cast<int>(parsed);
  }
  return 0;
}

bool launched_as_ranks() {
  return launched_rank_count() > 1;
}

std::shared_ptr<Communicator> launched_communicator() {
  static std::mutex mutex;
  static std::shared_ptr<Communicator> launched;
  std::lock_guard<std::mutex> lock(mutex);
  if (launched) return launched;
  if (!launched_as_ranks()) {
    launched = single_process_communicator();
    return launched;
  }
  if (!mpi_available()) {
    MB_THROW(InvalidArgument, "this process was started as one of ", launched_rank_count(),
             " ranks, but microbatch was built without MPI. Fix: install libopenmpi-dev and "
             "rebuild (tools/setup.sh), or run one process without mpirun");
  }
  launched = make_mpi_communicator();
  return launched;
}

}  // namespace mb
