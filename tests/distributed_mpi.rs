//! Data-parallel training over MPI (feature `mpi`): `mpirun -np 2` and
//! `-np 4` on this machine, each rank on its shard, end where one process
//! on the whole batch does. The test starts `mpirun` on this test binary,
//! which then runs the same test as one rank of the job; it is skipped,
//! saying why, where `mpirun` is missing.

#![cfg(feature = "mpi")]

#[path = "common/ddp_case.rs"]
mod ddp_case;

use ddp_case::{max_diff, one_rank, single_process, Opt};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tapegrad::distributed::{MpiGroup, ProcessGroup};

const TEST: &str = "mpi_ranks_end_where_one_process_on_the_whole_batch_does";

/// Whether this process is a rank started by mpirun (Open MPI and MPICH
/// set these).
fn under_mpirun() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .any(|v| std::env::var(v).is_ok())
}

#[test]
fn mpi_ranks_end_where_one_process_on_the_whole_batch_does() {
    if under_mpirun() {
        let group = Arc::new(MpiGroup::world());
        for opt in [Opt::SgdMomentum, Opt::Adam] {
            let got = one_rank(group.clone(), opt);
            let d = max_diff(&got, &single_process(opt));
            assert!(
                d < 1e-10,
                "{opt:?}: rank {} of {} differs by {d:e}",
                group.rank(),
                group.world_size()
            );
            println!(
                "rank {} of {}: {opt:?} within {d:e}",
                group.rank(),
                group.world_size()
            );
        }
        return;
    }
    if Command::new("mpirun").arg("--version").output().is_err() {
        eprintln!("skipped: mpirun is not installed (Debian: openmpi-bin)");
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    for np in ["2", "4"] {
        let log = std::env::temp_dir().join(format!("tapegrad-mpi-{}-{np}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("log");
        let mut child = Command::new("mpirun")
            .args(["--allow-run-as-root", "--oversubscribe", "-np", np])
            .arg(&exe)
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start mpirun");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for mpirun") {
                break Some(s);
            }
            if start.elapsed() > Duration::from_secs(300) {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        assert!(
            status.is_some_and(|s| s.success()),
            "mpirun -np {np} failed ({status:?}):\n{out}"
        );
        let n: usize = np.parse().unwrap();
        assert_eq!(
            out.matches("within").count(),
            2 * n,
            "every rank reports both optimizers:\n{out}"
        );
    }
}
