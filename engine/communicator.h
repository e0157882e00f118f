// Communicator: the group of processes (ranks) that train one model together, data-parallel.
// Every rank holds the whole model; each step's global batch is split across the ranks; the
// gradients are summed over the ranks once per batch, so every rank applies the same update.
//
// Three implementations, chosen by how the process was started (launched_communicator()):
//  - single process (the default): size 1, every collective is a no-op;
//  - MPI (engine/mpi_communicator.cpp): the process was started by mpirun or srun; MPI gives
//    rank and size, bootstraps, and carries the host collectives;
//  - on CUDA, gradient buckets go through NCCL (engine/nccl_reducer.cpp), whose unique id is
//    broadcast over MPI; libnccl.so.2 is loaded when the first device bucket is reduced, so
//    a CPU run or a single-process run never needs it.
//
// Collectives are called in the same order on every rank (the engine's step is the same
// sequence of calls everywhere); a rank that throws reports its error and calls abort(),
// which ends every rank (MPI_Abort), so no rank waits forever in a collective.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/stream.h"

namespace mb {

// A started all-reduce of a gradient bucket. wait() returns when the sum is in place (on
// CUDA: when work queued on the stream given to start_all_reduce_sum afterwards is ordered
// after it). Destroying a pending reduce that was never waited for waits.
class PendingReduce {
 public:
  virtual ~PendingReduce() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Rank and rank count on this machine (one GPU per local rank).
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;
  // "single", "mpi", or "mpi+nccl" once device buckets went through NCCL.
  virtual std::string backend() const = 0;

  // In-place sums over all ranks of host values (small: counts, losses, BatchNorm sums).
  virtual void all_reduce_sum(double* values, std::int64_t count) = 0;
  virtual void all_reduce_sum(std::int64_t* values, std::int64_t count) = 0;
  // In-place minimum and maximum over all ranks (weight checksums).
  virtual void all_reduce_min(std::uint64_t* values, std::int64_t count) = 0;
  virtual void all_reduce_max(std::uint64_t* values, std::int64_t count) = 0;
  // Starts the in-place sum over all ranks of `count` floats at `data`, memory of
  // stream.device(), ordered after the work queued on `stream`.
  virtual std::unique_ptr<PendingReduce> start_all_reduce_sum(float* data, std::int64_t count,
                                                              const Stream& stream) = 0;
  // `bytes` at `data` on every rank become rank `root`'s.
  virtual void broadcast(void* data, std::size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the group with `code` (the caller has reported why). Never returns.
  [[noreturn]] virtual void abort(int code) = 0;

  bool distributed() const { return size() > 1; }
};

// Size 1: every collective leaves its data as it is.
std::shared_ptr<Communicator> single_process_communicator();

// True when an MPI launcher (mpirun/mpiexec, srun) started this process as one of several
// ranks, read from the launcher's environment (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK
// with its size, SLURM_STEP_NUM_TASKS).
bool launched_as_ranks();
// The launcher's rank count (1 when not launched as ranks) and this process's rank in it
// (0 when not launched as ranks); no MPI call, so error messages can name the rank even
// when MPI failed to start.
int launched_rank_count();
int launched_rank();

// The group this process was started in: MPI when launched_as_ranks(), otherwise the single
// process. The first call initializes MPI (MPI_THREAD_FUNNELED) and later calls return the
// same communicator; MPI is finalized at exit. Throws mb::InvalidArgument naming the fix
// when the process was launched as ranks but this build has no MPI.
std::shared_ptr<Communicator> launched_communicator();

// True when this build was compiled with MPI (libopenmpi-dev found by CMake).
bool mpi_available();

}  // namespace mb
