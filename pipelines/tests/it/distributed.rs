//! The MPI transport with real ranks: a test here runs this test binary again under
//! `mpirun -np 2`, where `rank_body` does the collectives on each rank (skipped with a note when
//! there is no `mpirun`; scripts/setup-mpi.sh installs Open MPI).
#![cfg(feature = "mpi")]

use std::process::Command;
use std::time::Duration;

use pipelines::distributed;

const SCENARIO: &str = "LLMFS_MPI_TEST_SCENARIO";

/// What each rank runs; a no-op outside `mpirun`.
#[test]
fn rank_body() {
    let Ok(scenario) = std::env::var(SCENARIO) else { return };
    let world = distributed::world(Duration::from_secs(if scenario == "hang" { 2 } else { 60 }), gpt::DeviceSpec::Cpu).unwrap();
    let (rank, size) = (world.rank(), world.world_size());
    assert_eq!(size, 2);
    if scenario == "hang" {
        // Rank 1 is late: rank 0's watchdog stops the run.
        if rank == 1 {
            std::thread::sleep(Duration::from_secs(30));
        }
        world.barrier().unwrap();
        return;
    }
    let gradients = vec![(rank + 1) as f32, 10.0 * (rank + 1) as f32, -1.0];
    let mut mean = vec![0.0; 3];
    world.all_reduce_mean(&gradients, &mut mean).unwrap();
    assert_eq!(mean, [1.5, 15.0, -1.0]);
    let mut metrics = [rank as f64 + 0.25, 1.0];
    world.all_reduce_sum(&mut metrics).unwrap();
    assert_eq!(metrics, [1.5, 2.0]);
    let mut weights = if rank == 0 { vec![0.5f32; 5] } else { vec![9.0; 5] };
    world.broadcast(&mut weights, 0).unwrap();
    assert_eq!(weights, [0.5; 5]);
    world.barrier().unwrap();
    println!("rank {rank} of {size}: collectives ok");
}

/// `mpirun -np 2` of this binary's `rank_body` with `scenario`; `None` without an `mpirun`.
fn mpirun(scenario: &str) -> Option<std::process::Output> {
    if Command::new("mpirun").arg("--version").output().is_err() {
        eprintln!("note: no mpirun (bash scripts/setup-mpi.sh installs Open MPI); the MPI test skips");
        return None;
    }
    let test_binary = std::env::current_exe().unwrap();
    let output = Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe", "-x", SCENARIO])
        .arg(test_binary)
        .args(["distributed::rank_body", "--exact", "--nocapture", "--test-threads", "1"])
        .env(SCENARIO, scenario)
        // Open MPI refuses root unless told (CI containers run as root).
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    Some(output)
}

#[test]
fn two_ranks_average_sum_and_broadcast_over_mpi() {
    let Some(out) = mpirun("collectives") else { return };
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for rank in 0..2 {
        assert!(stdout.contains(&format!("rank {rank} of 2: collectives ok")), "{stdout}\n{stderr}");
    }
}

#[test]
fn a_rank_that_hangs_stops_the_others_within_the_timeout() {
    let start = std::time::Instant::now();
    let Some(out) = mpirun("hang") else { return };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("rank 0: waited 2s for the other ranks in a barrier (--collective-timeout)"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(25), "stopped after {:?}, before the late rank woke", start.elapsed());
}
