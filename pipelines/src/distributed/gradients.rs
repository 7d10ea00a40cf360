//! What data-parallel training exchanges: the gradients, averaged over the ranks before the
//! optimizer step (and before clipping, so the global norm is the global batch's), and the
//! initial weights, rank 0's on every rank. Both as flat f32 buffers in the model's parameter
//! order, which is the same on every rank; between CUDA GPUs that average themselves (NCCL), each
//! gradient where it is, in that order too.

use anyhow::Result;
use gpt::burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use gpt::burn::optim::GradientsParams;
use gpt::burn::prelude::*;

use super::Collective;

/// Values per all-reduce call: MPI counts are 32-bit, and smaller buckets keep the copies small
/// (PyTorch DDP's default bucket is 25 MB).
const BUCKET: usize = 1 << 23;

/// The buffers [`average_gradients`] fills, kept from one optimizer step to the next: fresh
/// ones page-fault in the gradients' size every step (0.5 GB for GPT-2 124M, which took 0.4-1.1 s
/// a step with two ranks in one process faulting at once, against 0.03 s to fill warm buffers).
#[derive(Default)]
pub struct GradientBuffers {
    /// Every gradient, in the model's parameter order.
    sent: Vec<f32>,
    /// One bucket's means.
    means: Vec<f32>,
}

/// `grads` averaged over the ranks: every rank gets the same mean gradient.
///
/// Each gradient is taken out of `grads` (then it is this function's alone, and the CPU backend
/// hands its buffer over without a copy) and copied into one buffer in the model's parameter
/// order; each bucket of that is all-reduced into a scratch bucket, whose means go back into the
/// taken gradients' own buffers: two passes over the gradients besides MPI's, and no new memory.
///
/// Where the backend averages between the ranks' devices itself ([`Collective::device_group`]:
/// NCCL between CUDA GPUs), each gradient is averaged there instead, and never leaves its GPU.
pub fn average_gradients<M: Module>(model: &M, grads: GradientsParams, world: &dyn Collective, buffers: &mut GradientBuffers) -> Result<GradientsParams> {
    if let Some(devices) = world.device_group() {
        // A rank that failed stops the others here: inside NCCL they would wait for it forever.
        world.barrier()?;
        let averaged = average_each(model, grads, &OnDevices(devices))?;
        // NCCL's work is only queued: waiting for it under the timeout stops a run whose group
        // never forms, or whose other rank hangs inside NCCL, instead of hanging it. (One wait a
        // step, which the step's loss would soon make anyway.)
        if let Some(device) = model.devices().into_iter().next() {
            world.wait_timed("NCCL's all-reduce of the gradients", &mut || device.sync().map_err(|e| anyhow::anyhow!("the device failed: {e}")))?;
        }
        return Ok(averaged);
    }
    average_in_buckets(model, grads, world, buffers, BUCKET)
}

/// One gradient's mean over the ranks.
trait GradientMean {
    fn mean<const D: usize>(&self, gradient: Tensor<D>) -> Result<Tensor<D>>;
}

/// The backend's all-reduce between the ranks' devices (NCCL on CUDA).
struct OnDevices<'a>(&'a [Device]);

impl GradientMean for OnDevices<'_> {
    fn mean<const D: usize>(&self, gradient: Tensor<D>) -> Result<Tensor<D>> {
        Ok(gpt::backend::collective::all_reduce_mean(gradient, self.0))
    }
}

/// `grads` with each gradient replaced by its mean over the ranks, one gradient at a time in the
/// model's parameter order (the same on every rank, as the collectives need).
fn average_each<M: Module>(model: &M, grads: GradientsParams, mean: &impl GradientMean) -> Result<GradientsParams> {
    struct Average<'a, R> {
        grads: GradientsParams,
        mean: &'a R,
        error: Option<anyhow::Error>,
    }
    impl<R: GradientMean> ModuleVisitor for Average<'_, R> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.error.is_some() {
                return;
            }
            if let Some(gradient) = self.grads.remove::<D>(param.id) {
                match self.mean.mean(gradient) {
                    Ok(mean) => self.grads.register(param.id, mean),
                    Err(error) => self.error = Some(error),
                }
            }
        }
    }
    let mut average = Average { grads, mean, error: None };
    model.visit(&mut average);
    match average.error {
        Some(error) => Err(error),
        None => Ok(average.grads),
    }
}

/// [`average_gradients`] in buckets of `bucket` values.
fn average_in_buckets<M: Module>(model: &M, mut grads: GradientsParams, world: &dyn Collective, buffers: &mut GradientBuffers, bucket: usize) -> Result<GradientsParams> {
    if world.world_size() == 1 {
        return Ok(grads);
    }
    // The gradients' size, reserved once (124M parameters' are 0.5 GB: growing the buffer by
    // doubling would copy them again).
    struct Count<'a>(&'a GradientsParams, usize);
    impl ModuleVisitor for Count<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.1 += self.0.get::<D>(param.id).map_or(0, |g| g.shape().num_elements());
        }
    }
    let mut count = Count(&grads, 0);
    model.visit(&mut count);

    /// A gradient taken out: its parameter, device and values (f32).
    type Taken = (ParamId, Device, TensorData);
    struct Take<'a> {
        grads: &'a mut GradientsParams,
        values: &'a mut Vec<f32>,
        taken: Vec<Taken>,
    }
    impl ModuleVisitor for Take<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                let device = g.device();
                let mut data = g.into_data();
                if data.as_slice::<f32>().is_err() {
                    data = TensorData::new(data.iter::<f32>().collect(), data.shape().clone());
                }
                if let Ok(values) = data.as_slice::<f32>() {
                    self.values.extend_from_slice(values);
                }
                self.taken.push((param.id, device, data));
            }
        }
    }
    buffers.sent.clear();
    buffers.sent.reserve_exact(count.1);
    let mut take = Take { grads: &mut grads, values: &mut buffers.sent, taken: Vec::new() };
    model.visit(&mut take);
    let mut taken = take.taken;
    let sent = &buffers.sent;

    // The means, bucket by bucket, into each taken gradient's buffer in turn.
    let mut outs: Vec<&mut [f32]> = taken.iter_mut().map(|(_, _, data)| data.as_mut_slice::<f32>()).collect::<Result<_, _>>().map_err(|e| anyhow::anyhow!("a gradient's values: {e:?}"))?;
    buffers.means.resize(bucket.min(sent.len()), 0.0);
    let (mut filling, mut filled) = (0, 0);
    for values in sent.chunks(bucket) {
        let mean = &mut buffers.means[..values.len()];
        world.all_reduce_mean(values, mean)?;
        let mut rest: &[f32] = mean;
        while !rest.is_empty() {
            let out = &mut outs[filling][filled..];
            let (now, later) = rest.split_at(out.len().min(rest.len()));
            out[..now.len()].copy_from_slice(now);
            rest = later;
            filled += now.len();
            if filled == outs[filling].len() {
                (filling, filled) = (filling + 1, 0);
            }
        }
    }
    drop(outs);

    // Back in place, in the same order (the rank of each is the visitor's).
    struct Give<I: Iterator<Item = Taken>> {
        grads: GradientsParams,
        next: std::iter::Peekable<I>,
    }
    impl<I: Iterator<Item = Taken>> ModuleVisitor for Give<I> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some((_, device, mean)) = self.next.next_if(|(id, _, _)| *id == param.id) {
                self.grads.register(param.id, Tensor::<D>::from_data(mean, &device));
            }
        }
    }
    let mut give = Give { grads, next: taken.into_iter().peekable() };
    model.visit(&mut give);
    Ok(give.grads)
}

/// `model` with rank `root`'s parameter values on every rank (ids and gradient flags kept).
pub fn broadcast_parameters<M: Module>(model: M, world: &dyn Collective, root: usize) -> Result<M> {
    if world.world_size() == 1 {
        return Ok(model);
    }
    struct Gather(Vec<f32>);
    impl ModuleVisitor for Gather {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let mut gather = Gather(Vec::new());
    model.visit(&mut gather);
    let mut values = gather.0;
    for bucket in values.chunks_mut(BUCKET) {
        world.broadcast(bucket, root)?;
    }

    struct Scatter<'a>(&'a [f32]);
    impl ModuleMapper for Scatter<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|tensor| {
                let (n, shape, device) = (tensor.shape().num_elements(), tensor.shape(), tensor.device());
                let (mine, rest) = self.0.split_at(n);
                self.0 = rest;
                let value = Tensor::<D>::from_data(TensorData::new(mine.to_vec(), shape), &device);
                if tensor.is_require_grad() { value.require_grad() } else { value }
            })
        }
    }
    Ok(model.map(&mut Scatter(&values)))
}

#[cfg(test)]
mod tests {
    use gpt::burn::nn::{Linear, LinearConfig};

    use super::*;

    /// Two ranks as one process sees them: the other rank's values are `other(i)`.
    struct Pretend(fn(usize) -> f32);

    impl Collective for Pretend {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn all_reduce_mean(&self, sent: &[f32], mean: &mut [f32]) -> Result<()> {
            mean.iter_mut().zip(sent).enumerate().for_each(|(i, (m, v))| *m = (v + (self.0)(i)) / 2.0);
            Ok(())
        }
        fn all_reduce_sum(&self, _values: &mut [f64]) -> Result<()> {
            unreachable!()
        }
        fn broadcast(&self, values: &mut [f32], _root: usize) -> Result<()> {
            values.iter_mut().enumerate().for_each(|(i, v)| *v = (self.0)(i));
            Ok(())
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
        fn abort(&self) -> ! {
            unreachable!()
        }
    }

    fn linear(device: &Device) -> Linear {
        LinearConfig::new(3, 2).init(device)
    }

    #[test]
    fn gradients_are_averaged_in_place_of_each_parameter() {
        let device = Device::flex().autodiff();
        let model = linear(&device);
        let x = Tensor::<2>::from_data([[1.0, 2.0, 3.0]], &device);
        let grads = GradientsParams::from_grads(model.forward(x).sum().backward(), &model);
        // The other rank's gradients are all zero: the mean halves ours.
        let averaged = average_gradients(&model, grads, &Pretend(|_| 0.0), &mut GradientBuffers::default()).unwrap();
        let weight: Vec<f32> = averaged.get::<2>(model.weight.id).unwrap().into_data().iter().collect();
        let bias: Vec<f32> = averaged.get::<1>(model.bias.as_ref().unwrap().id).unwrap().into_data().iter().collect();
        // d(sum(x·W + b))/dW[i][j] = x[i], /db = 1; Burn's Linear weight is [in, out].
        assert_eq!(weight, [0.5, 0.5, 1.0, 1.0, 1.5, 1.5]);
        assert_eq!(bias, [0.5, 0.5]);
    }

    /// Buckets that end inside a gradient: each mean lands in its own gradient, in order.
    #[test]
    fn buckets_across_gradients_keep_each_value_in_place() {
        let device = Device::flex().autodiff();
        let model = linear(&device);
        let x = Tensor::<2>::from_data([[1.0, 2.0, 3.0]], &device);
        // The same buffers throughout, as a run keeps them: nothing of one call's left in the next.
        let mut buffers = GradientBuffers::default();
        for bucket in [1, 3, 4, 5, 8, 100, 2] {
            let grads = GradientsParams::from_grads(model.forward(x.clone()).sum().backward(), &model);
            let averaged = average_in_buckets(&model, grads, &Pretend(|_| 0.0), &mut buffers, bucket).unwrap();
            let weight: Vec<f32> = averaged.get::<2>(model.weight.id).unwrap().into_data().iter().collect();
            let bias: Vec<f32> = averaged.get::<1>(model.bias.as_ref().unwrap().id).unwrap().into_data().iter().collect();
            assert_eq!((weight, bias), (vec![0.5, 0.5, 1.0, 1.0, 1.5, 1.5], vec![0.5, 0.5]), "buckets of {bucket}");
        }
    }

    /// A gradient's mean as the devices' path asks for it, here through a world's host memory.
    struct ThroughHost<'a>(&'a dyn Collective);

    impl GradientMean for ThroughHost<'_> {
        fn mean<const D: usize>(&self, gradient: Tensor<D>) -> Result<Tensor<D>> {
            let (shape, device) = (gradient.shape(), gradient.device());
            let sent: Vec<f32> = gradient.into_data().iter().collect();
            let mut mean = vec![0.0; sent.len()];
            self.0.all_reduce_mean(&sent, &mut mean)?;
            Ok(Tensor::from_data(TensorData::new(mean, shape), &device))
        }
    }

    /// The devices' path (one all-reduce per gradient, on two ranks with different batches) gives
    /// every rank what the host path's buckets give, each mean in its own parameter's place.
    #[test]
    fn gradient_by_gradient_the_ranks_get_what_the_buckets_give() {
        let both = crate::distributed::run_ranks(2, std::time::Duration::from_secs(60), |rank| {
            let world = crate::distributed::current();
            let device = Device::flex().autodiff();
            // The same initial model on both ranks, as after broadcast_parameters.
            let model = broadcast_parameters(linear(&device), world.as_ref(), 0)?;
            let x = Tensor::<2>::from_data([[1.0 + rank as f32, -2.0, 0.5 * rank as f32]], &device);
            let grads = || GradientsParams::from_grads(model.forward(x.clone()).powf_scalar(2.0).sum().backward(), &model);
            let each = average_each(&model, grads(), &ThroughHost(world.as_ref()))?;
            let buckets = average_in_buckets(&model, grads(), world.as_ref(), &mut GradientBuffers::default(), 4)?;
            let values = |g: &GradientsParams| -> (Vec<f32>, Vec<f32>) {
                (g.get::<2>(model.weight.id).unwrap().into_data().iter().collect(), g.get::<1>(model.bias.as_ref().unwrap().id).unwrap().into_data().iter().collect())
            };
            Ok((values(&each), values(&buckets)))
        });
        let (each, buckets) = both.unwrap();
        assert_eq!(each, buckets);
        assert_eq!((each.0.len(), each.1.len()), (6, 2));
    }

    #[test]
    fn a_gradient_that_cannot_be_averaged_is_an_error() {
        struct Refuses;
        impl GradientMean for Refuses {
            fn mean<const D: usize>(&self, _gradient: Tensor<D>) -> Result<Tensor<D>> {
                anyhow::bail!("NCCL refused")
            }
        }
        let device = Device::flex().autodiff();
        let model = linear(&device);
        let x = Tensor::<2>::from_data([[1.0, 2.0, 3.0]], &device);
        let grads = GradientsParams::from_grads(model.forward(x).sum().backward(), &model);
        assert_eq!(average_each(&model, grads, &Refuses).unwrap_err().to_string(), "NCCL refused");
    }

    #[test]
    fn broadcast_parameters_take_the_roots_values_and_keep_ids_and_flags() {
        let device = Device::flex().autodiff();
        let model = linear(&device);
        let id = model.weight.id;
        let model = broadcast_parameters(model, &Pretend(|i| i as f32), 0).unwrap();
        assert_eq!(model.weight.id, id);
        assert!(model.weight.val().is_require_grad());
        let weight: Vec<f32> = model.weight.val().into_data().iter().collect();
        assert_eq!(weight, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let bias: Vec<f32> = model.bias.as_ref().unwrap().val().into_data().iter().collect();
        assert_eq!(bias, [6.0, 7.0]);
    }
}
