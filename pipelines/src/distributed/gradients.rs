//! What data-parallel training exchanges: the gradients, averaged over the ranks before the
//! optimizer step (and before clipping, so the global norm is the global batch's), and the
//! initial weights, rank 0's on every rank. Both as flat f32 buffers in the model's parameter
//! order, which is the same on every rank.

use anyhow::Result;
use gpt::burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use gpt::burn::optim::GradientsParams;
use gpt::burn::prelude::*;

use super::Collective;

/// Values per all-reduce call: MPI counts are 32-bit, and smaller buckets keep the copies small
/// (PyTorch DDP's default bucket is 25 MB).
const BUCKET: usize = 1 << 23;

/// `grads` averaged over the ranks: every rank gets the same mean gradient.
pub fn average_gradients<M: Module>(model: &M, mut grads: GradientsParams, world: &dyn Collective) -> Result<GradientsParams> {
    if world.world_size() == 1 {
        return Ok(grads);
    }
    struct Gather<'a> {
        grads: &'a GradientsParams,
        values: Vec<f32>,
    }
    impl ModuleVisitor for Gather<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let data = g.into_data();
                match data.as_slice::<f32>() {
                    Ok(values) => self.values.extend_from_slice(values),
                    Err(_) => self.values.extend(data.iter::<f32>()),
                }
            }
        }
    }
    // One buffer of the gradients' size (124M parameters' are 0.5 GB: growing it by doubling
    // would copy them again).
    struct Count<'a>(&'a GradientsParams, usize);
    impl ModuleVisitor for Count<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.1 += self.0.get::<D>(param.id).map_or(0, |g| g.shape().num_elements());
        }
    }
    let mut count = Count(&grads, 0);
    model.visit(&mut count);
    let mut gather = Gather { grads: &grads, values: Vec::with_capacity(count.1) };
    model.visit(&mut gather);
    let mut values = gather.values;
    for bucket in values.chunks_mut(BUCKET) {
        world.all_reduce_mean(bucket)?;
    }

    struct Scatter<'a> {
        grads: &'a mut GradientsParams,
        values: &'a [f32],
    }
    impl ModuleVisitor for Scatter<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                let (n, shape, device) = (g.shape().num_elements(), g.shape(), g.device());
                let (mine, rest) = self.values.split_at(n);
                self.values = rest;
                self.grads.register(param.id, Tensor::<D>::from_data(TensorData::new(mine.to_vec(), shape), &device));
            }
        }
    }
    model.visit(&mut Scatter { grads: &mut grads, values: &values });
    Ok(grads)
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
        fn all_reduce_mean(&self, values: &mut [f32]) -> Result<()> {
            values.iter_mut().enumerate().for_each(|(i, v)| *v = (*v + (self.0)(i)) / 2.0);
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
        let averaged = average_gradients(&model, grads, &Pretend(|_| 0.0)).unwrap();
        let weight: Vec<f32> = averaged.get::<2>(model.weight.id).unwrap().into_data().iter().collect();
        let bias: Vec<f32> = averaged.get::<1>(model.bias.as_ref().unwrap().id).unwrap().into_data().iter().collect();
        // d(sum(x·W + b))/dW[i][j] = x[i], /db = 1; Burn's Linear weight is [in, out].
        assert_eq!(weight, [0.5, 0.5, 1.0, 1.0, 1.5, 1.5]);
        assert_eq!(bias, [0.5, 0.5]);
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
