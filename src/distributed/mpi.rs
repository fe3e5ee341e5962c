//! [`MpiGroup`]: one process per rank, started by `mpirun` (on one machine
//! or many), with the collectives of the system's MPI (the `mpi` crate).

use super::{CommError, Elements, ProcessGroup};
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};
use mpi::Threading;

/// The processes of an MPI job (`MPI_COMM_WORLD`): this process's rank and
/// the job's size are MPI's. Start the program with `mpirun -np N`
/// (add `--hostfile` for several machines; see `docs/distributed.md`).
///
/// MPI's errors are fatal: a failed transport ends the job. A rank that
/// panics calls `MPI_Abort` through [`fail`](ProcessGroup::fail), and
/// `mpirun` then ends every rank of the job, which exits with an error,
/// instead of leaving the others waiting.
pub struct MpiGroup {
    universe: Universe,
    rank: usize,
    size: usize,
}

impl MpiGroup {
    /// Initializes MPI for this process (MPI is finalized when the group
    /// is dropped). Started without `mpirun`, it is a job of one rank.
    ///
    /// **Panics** if MPI was initialized already, or if it cannot give the
    /// thread support DDP needs (collectives from a communication thread,
    /// `MPI_THREAD_SERIALIZED`).
    pub fn world() -> MpiGroup {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Multiple)
            .expect("MpiGroup::world: MPI is initialized already (call MpiGroup::world once per process)");
        assert!(
            matches!(threading, Threading::Serialized | Threading::Multiple),
            "MpiGroup::world: this MPI gives thread support {threading:?}; DistributedDataParallel calls \
             MPI from a communication thread and needs at least Serialized"
        );
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        MpiGroup { universe, rank, size }
    }
}

impl ProcessGroup for MpiGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, buf: Elements<'_>) -> Result<(), CommError> {
        let world = self.universe.world();
        match buf {
            Elements::F32(b) => {
                let send = b.to_vec();
                world.all_reduce_into(&send[..], b, SystemOperation::sum());
            }
            Elements::F64(b) => {
                let send = b.to_vec();
                world.all_reduce_into(&send[..], b, SystemOperation::sum());
            }
        }
        Ok(())
    }

    fn broadcast(&self, buf: Elements<'_>, root: usize) -> Result<(), CommError> {
        assert!(
            root < self.size,
            "broadcast: root rank {root} is not in a job of {}",
            self.size
        );
        let world = self.universe.world();
        let root = world.process_at_rank(root as i32);
        match buf {
            Elements::F32(b) => root.broadcast_into(b),
            Elements::F64(b) => root.broadcast_into(b),
        }
        Ok(())
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CommError> {
        let world = self.universe.world();
        let mut counts = vec![0i32; self.size];
        world.all_gather_into(&(bytes.len() as i32), &mut counts[..]);
        let displs: Vec<i32> = counts
            .iter()
            .scan(0, |at, &n| {
                let start = *at;
                *at += n;
                Some(start)
            })
            .collect();
        let mut all = vec![0u8; counts.iter().map(|&n| n as usize).sum()];
        world.all_gather_varcount_into(
            bytes,
            &mut PartitionMut::new(&mut all[..], &counts[..], &displs[..]),
        );
        Ok(counts
            .iter()
            .zip(&displs)
            .map(|(&n, &at)| all[at as usize..(at + n) as usize].to_vec())
            .collect())
    }

    fn fail(&self, reason: &str) {
        eprintln!(
            "tapegrad: rank {} failed ({reason}); aborting the MPI job",
            self.rank
        );
        self.universe.world().abort(1);
    }
}
