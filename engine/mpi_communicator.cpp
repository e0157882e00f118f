// The communicator over MPI_COMM_WORLD: rank and size from MPI, host collectives through MPI,
// device gradient buckets through NCCL (bootstrapped over MPI, made on first use).
#include <mpi.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "engine/mpi_communicator.h"
#include "engine/nccl_reducer.h"
#include "runtime/error.h"

namespace mb {
namespace {

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
    return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(length));
}

// Every MPI call returns its code (MPI_ERRORS_RETURN on the communicators): a failure is an
// mb::Error naming the call.
void check(int code, const char* call) {
  if (code != MPI_SUCCESS) MB_THROW(Error, call, " failed: ", mpi_error_text(code));
}

int checked_count(std::int64_t count) {
  MB_CHECK(count >= 0 && count <= (std::int64_t{1} << 31) - 1, "an MPI collective of ", count,
           " values (at most 2^31 - 1 per call)");
  return static_cast<int>(count);
}

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

class HostReduce final : public PendingReduce {
 public:
  explicit HostReduce(MPI_Request request) : request_(request) {}
  ~HostReduce() override {
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }
  void wait() override { check(MPI_Wait(&request_, MPI_STATUS_IGNORE), "MPI_Wait"); }

 private:
  MPI_Request request_;
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    int initialized = 0;
    check(MPI_Initialized(&initialized), "MPI_Initialized");
    if (!initialized) {
      int provided = 0;
      // FUNNELED: only the thread that trains calls MPI (the loader's thread never does).
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      std::atexit(finalize_at_exit);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
    MPI_Comm local = MPI_COMM_NULL;
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local),
          "MPI_Comm_split_type");
    check(MPI_Comm_rank(local, &local_rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(local, &local_size_), "MPI_Comm_size");
    MPI_Comm_free(&local);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  std::string backend() const override { return device_reducer_ ? "mpi+nccl" : "mpi"; }

  void all_reduce_sum(double* values, std::int64_t count) override {
    check(MPI_Allreduce(MPI_IN_PLACE, values, checked_count(count), MPI_DOUBLE, MPI_SUM,
                        MPI_COMM_WORLD),
          "MPI_Allreduce");
  }
  void all_reduce_sum(std::int64_t* values, std::int64_t count) override {
    check(MPI_Allreduce(MPI_IN_PLACE, values, checked_count(count), MPI_INT64_T, MPI_SUM,
                        MPI_COMM_WORLD),
          "MPI_Allreduce");
  }
  void all_reduce_min(std::uint64_t* values, std::int64_t count) override {
    check(MPI_Allreduce(MPI_IN_PLACE, values, checked_count(count), MPI_UINT64_T, MPI_MIN,
                        MPI_COMM_WORLD),
          "MPI_Allreduce");
  }
  void all_reduce_max(std::uint64_t* values, std::int64_t count) override {
    check(MPI_Allreduce(MPI_IN_PLACE, values, checked_count(count), MPI_UINT64_T, MPI_MAX,
                        MPI_COMM_WORLD),
          "MPI_Allreduce");
  }

  std::unique_ptr<PendingReduce> start_all_reduce_sum(float* data, std::int64_t count,
                                                      const Stream& stream) override {
    if (stream.is_cuda()) {
      if (!device_reducer_) device_reducer_ = make_nccl_reducer(*this, stream.device());
      return device_reducer_->start(data, count, stream);
    }
    MPI_Request request = MPI_REQUEST_NULL;
    check(MPI_Iallreduce(MPI_IN_PLACE, data, checked_count(count), MPI_FLOAT, MPI_SUM,
                         MPI_COMM_WORLD, &request),
          "MPI_Iallreduce");
    return std::make_unique<HostReduce>(request);
  }

  void broadcast(void* data, std::size_t bytes, int root) override {
    check(MPI_Bcast(data, checked_count(static_cast<std::int64_t>(bytes)), MPI_BYTE, root,
                    MPI_COMM_WORLD),
          "MPI_Bcast");
  }
  void barrier() override { check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  std::unique_ptr<DeviceReducer> device_reducer_;
};

}  // namespace

bool mpi_available() {
  return true;
}

std::shared_ptr<Communicator> make_mpi_communicator() {
  return std::make_shared<MpiCommunicator>();
}

}  // namespace mb
