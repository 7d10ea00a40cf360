//! `mpirun -np N llmfs … --device cuda` on one node: the ranks' GPUs average their gradients
//! between themselves with NCCL, as `--devices` does between the threads of one process, instead
//! of copying them through host memory for MPI.
//!
//! Burn's all-reduce (CubeCL's NCCL) forms a group from a list of devices, each member ranked by
//! its GPU's number, and joins NCCL with an id it mints in its own process. So the processes
//! agree here, over MPI, on what makes one group of them: every rank on a CUDA GPU with NCCL, all
//! on one node, no two on the same GPU number (each process sees the node's GPUs, as `mpirun`
//! leaves them), and one address to meet on (`NCCL_COMM_ID`, from which NCCL makes the same id in
//! every process). Where they do not, the run says why and MPI carries the gradients.

use anyhow::Result;
use gpt::DeviceSpec;
use gpt::burn::prelude::Device;

use super::Collective;

/// The ranks' devices, in rank order, where they average their gradients with NCCL (every rank
/// gets the same answer), else None. `device`: the `--device` every rank was given; `node`: the
/// name of the machine this rank runs on. Rank 0 says which way the gradients go.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(super) fn nccl_between_processes(world: &dyn Collective, device: DeviceSpec, node: &str) -> Result<Option<Vec<Device>>> {
    // The same on every rank (same build, same flag), so either all ranks take part or none.
    if !cfg!(feature = "cuda") || !matches!(device, DeviceSpec::Cuda(_) | DeviceSpec::Auto) {
        return Ok(None);
    }
    let say = |message: &str| {
        if world.rank() == 0 {
            eprintln!("{message}");
        }
    };
    // The address first: setting the environment is safe only while no other thread reads it, so
    // before anything (`auto`'s probe) starts a device's threads. Unused where no group forms.
    // Rank 0 picks a free port of this node; 0 says it found none. A port below 2^24 is exact in f32.
    let mut port = [if world.rank() == 0 { free_port().map_or(0.0, f32::from) } else { 0.0 }];
    world.broadcast(&mut port, 0)?;
    if port[0] == 0.0 {
        say("gradients averaged through host memory (MPI): no free port on this node for NCCL's processes to meet on");
        return Ok(None);
    }
    // SAFETY: no device, rayon or CubeCL thread has started in this process yet, and llmfs's one
    // other thread (the collective watchdog) does not read the environment.
    unsafe { gpt::backend::collective::meet_on_port(port[0] as u16) };

    use gpt::backend::collective::{cuda_number, device_group};
    let number = cuda_number(device, super::gpu_shift_of(world));
    // A rank off CUDA has nothing to say (`auto` on a machine without GPUs); one on CUDA says why not NCCL.
    let own = number.ok_or(None).and_then(|n| device_group(&[DeviceSpec::Cuda(n)]).map(|_| n).map_err(Some));
    let numbers = match agree(world, own, node)? {
        Ok(numbers) => numbers,
        Err(why) => {
            if device != DeviceSpec::Auto || number.is_some() {
                say(&format!("gradients averaged through host memory (MPI): {why}"));
            }
            return Ok(None);
        }
    };
    let devices = numbers.iter().map(|&number| DeviceSpec::Cuda(number).resolve()).collect::<Result<Vec<_>, _>>()?;
    say(&format!("gradients averaged on the GPUs by NCCL, between the {} processes of this node", world.world_size()));
    Ok(Some(devices))
}

/// A free TCP port on the loopback interface, for NCCL's first rank to listen on.
fn free_port() -> Option<u16> {
    std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok().map(|address| address.port())
}

/// Every rank's CUDA device number (in rank order) where all of them can form one NCCL group,
/// else why not: each rank gives its own (`own`: its number, or why it has none, where it has
/// something to say) and its node's name, and all get everyone's. A rank says its own why.
fn agree(world: &dyn Collective, own: Result<usize, Option<String>>, node: &str) -> Result<Result<Vec<usize>, String>> {
    let (rank, size) = (world.rank(), world.world_size());
    if let Err(Some(why)) = &own {
        eprintln!("rank {rank}: no NCCL on this rank's device: {why}");
    }
    // Two values a rank, summed over the ranks: its GPU's number + 1 (0: none) and its node's
    // hash, both integers below 2^53, so exact in the f64 sum.
    let mut slots = vec![0.0f64; 2 * size];
    slots[2 * rank] = own.map_or(0.0, |number| number as f64 + 1.0);
    slots[2 * rank + 1] = node_hash(node) as f64;
    world.all_reduce_sum(&mut slots)?;
    let ranks: Vec<RankGpu> = slots.chunks_exact(2).map(|s| RankGpu { number: (s[0] > 0.0).then(|| s[0] as usize - 1), node: s[1] as u64 }).collect();
    Ok(one_group(&ranks))
}

/// What one rank brings to the group.
#[derive(Debug, Clone, Copy)]
struct RankGpu {
    /// Its CUDA device's number, if NCCL can average on it.
    number: Option<usize>,
    /// Its node's [`node_hash`].
    node: u64,
}

/// The ranks' GPU numbers, in rank order, where they make one NCCL group, else why not.
fn one_group(ranks: &[RankGpu]) -> Result<Vec<usize>, String> {
    if let Some(rank) = ranks.iter().position(|r| r.number.is_none()) {
        return Err(format!("rank {rank} is not on a CUDA GPU with NCCL"));
    }
    let mut nodes: Vec<u64> = ranks.iter().map(|r| r.node).collect();
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.len() > 1 {
        return Err(format!(
            "the ranks run on {} nodes, and NCCL between nodes is not built (Burn's all-reduce ranks a group's GPUs by their numbers, which repeat from node to node)",
            nodes.len()
        ));
    }
    let numbers: Vec<usize> = ranks.iter().filter_map(|r| r.number).collect();
    for (second, number) in numbers.iter().enumerate() {
        if let Some(first) = numbers[..second].iter().position(|n| n == number) {
            return Err(format!(
                "ranks {first} and {second} both train on cuda:{number} (a launcher that shows each rank only its own GPU, through \
                 CUDA_VISIBLE_DEVICES, makes it cuda:0 on every rank; NCCL between the processes of a node needs each to see the node's GPUs)"
            ));
        }
    }
    Ok(numbers)
}

/// 48 bits of FNV-1a of a node's name: the same on every rank of one node, and exact in an f64.
fn node_hash(node: &str) -> u64 {
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    hash >> 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::{current, run_ranks};
    use std::time::Duration;

    fn on(node: u64, number: Option<usize>) -> RankGpu {
        RankGpu { number, node }
    }

    #[test]
    fn ranks_on_distinct_gpus_of_one_node_make_one_group() {
        assert_eq!(one_group(&[on(7, Some(0)), on(7, Some(1)), on(7, Some(3))]), Ok(vec![0, 1, 3]));
        assert_eq!(one_group(&[on(7, Some(2))]), Ok(vec![2]));
    }

    #[test]
    fn what_keeps_the_ranks_from_one_group_is_named() {
        let why = one_group(&[on(7, Some(0)), on(7, None)]).unwrap_err();
        assert!(why.contains("rank 1 is not on a CUDA GPU"), "{why}");
        let why = one_group(&[on(7, Some(0)), on(8, Some(1))]).unwrap_err();
        assert!(why.contains("2 nodes") && why.contains("not built"), "{why}");
        let why = one_group(&[on(7, Some(0)), on(7, Some(1)), on(7, Some(0))]).unwrap_err();
        assert!(why.contains("ranks 0 and 2 both train on cuda:0") && why.contains("CUDA_VISIBLE_DEVICES"), "{why}");
    }

    #[test]
    fn a_nodes_hash_is_exact_in_an_f64_and_tells_nodes_apart() {
        for node in ["", "gpu-node-01", "gpu-node-02", "a.very.long.host.name.of.a.cluster.example.org"] {
            let hash = node_hash(node);
            assert!(hash < 1 << 48);
            assert_eq!(hash as f64 as u64, hash);
        }
        assert_ne!(node_hash("gpu-node-01"), node_hash("gpu-node-02"));
        assert_eq!(node_hash("gpu-node-01"), node_hash("gpu-node-01"));
    }

    /// The agreement over real ranks (two threads): every rank gets every rank's number, or the
    /// same refusal.
    #[test]
    fn the_ranks_agree_over_the_collective() {
        let timeout = Duration::from_secs(30);
        let agreed = |own: fn(usize) -> Result<usize, Option<String>>, node: fn(usize) -> &'static str| {
            run_ranks(2, timeout, |rank| agree(current().as_ref(), own(rank), node(rank))).unwrap()
        };
        assert_eq!(agreed(|rank| Ok(1 - rank), |_| "node-a"), Ok(vec![1, 0]));
        let refused = agreed(|rank| if rank == 0 { Ok(0) } else { Err(Some("LLMFS_NCCL=0".into())) }, |_| "node-a");
        assert_eq!(refused, Err("rank 1 is not on a CUDA GPU with NCCL".into()));
        let refused = agreed(Ok, |rank| ["node-a", "node-b"][rank]);
        assert!(refused.unwrap_err().contains("2 nodes"));
    }

    /// CPU ranks take no part (and so exchange nothing).
    #[test]
    fn ranks_off_cuda_are_not_asked() {
        let timeout = Duration::from_secs(30);
        let groups = run_ranks(2, timeout, |_| nccl_between_processes(current().as_ref(), DeviceSpec::Cpu, "node-a")).unwrap();
        assert!(groups.is_none());
    }
}
