//! SGD (momentum, Nesterov), Adam and AdamW, written over tch tensors so that their state can
//! be checkpointed and every parameter can have its own learning-rate scale (differential
//! learning rates for fine-tuning). The update rules are the usual ones (as in PyTorch's
//! `torch.optim`, single-tensor variant):
//!
//! - L1/L2 regularization adds `l1 * sign(w) + l2 * w` to the gradient of weight matrices and
//!   kernels (parameters named `*.weight` with two or more dimensions), not biases or
//!   batch-norm scales.
//! - SGD: `b = momentum * b + g` (`b = g` on the first step); the step is `b`, or
//!   `g + momentum * b` with Nesterov; `w -= lr * step`.
//! - Adam: `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g²`,
//!   `w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
//! - AdamW: Adam preceded by the decoupled decay `w *= 1 - lr * weightDecay` (all parameters
//!   that are trained, as PyTorch does).
//!
//! State (`exp_avg`, `exp_avg_sq`, `momentum` buffers and the step count) is saved next to the
//! weights in a checkpoint ([`Optimizer::state_tensors`], [`Optimizer::load_state`]).

use std::collections::HashMap;

use tch::{Kind, Tensor};

use super::MlError;
use super::config::{OptimizerConfig, OptimizerKind, Regularization};

/// One trained tensor.
#[derive(Debug)]
struct Param {
    name: String,
    var: Tensor,
    lr_scale: f64,
    /// Whether L1/L2 apply (weight matrices and kernels).
    regularized: bool,
    /// SGD: [momentum]; Adam/AdamW: [exp_avg, exp_avg_sq]. Created on the first step.
    state: Vec<Tensor>,
}

#[derive(Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    regularization: Regularization,
    params: Vec<Param>,
    /// Steps taken so far (Adam's `t` after the next step is `steps + 1`).
    steps: u64,
}

impl Optimizer {
    /// `params` are (name, variable, learning-rate scale); variables that do not require a
    /// gradient (frozen) are left out.
    pub fn new(
        config: &OptimizerConfig,
        regularization: &Regularization,
        params: Vec<(String, Tensor, f64)>,
    ) -> Optimizer {
        let mut params: Vec<Param> = params
            .into_iter()
            .filter(|(_, var, _)| var.requires_grad())
            .map(|(name, var, lr_scale)| Param {
                regularized: name.ends_with(".weight") && var.dim() >= 2,
                name,
                var,
                lr_scale,
                state: Vec::new(),
            })
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Optimizer {
            config: config.clone(),
            regularization: regularization.clone(),
            params,
            steps: 0,
        }
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn trained_parameters(&self) -> usize {
        self.params.len()
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.var.zero_grad();
        }
    }

    /// Applies one update with base learning rate `lr` from the gradients in place.
    pub fn step(&mut self, lr: f64) {
        let _guard = tch::no_grad_guard();
        let c = &self.config;
        let reg = &self.regularization;
        let t = (self.steps + 1) as i32;
        for p in &mut self.params {
            let grad = p.var.grad();
            if !grad.defined() {
                continue;
            }
            let lr = lr * p.lr_scale;
            let mut g = grad;
            if p.regularized && (reg.l1 > 0.0 || reg.l2 > 0.0) {
                g = &g + p.var.sign() * reg.l1 + &p.var * reg.l2;
            }
            match c.kind {
                OptimizerKind::Sgd => {
                    let update = if c.momentum > 0.0 {
                        if p.state.is_empty() {
                            p.state.push(g.copy());
                        } else {
                            let mut buf = p.state[0].shallow_clone();
                            let _ = buf.g_mul_scalar_(c.momentum).g_add_(&g);
                        }
                        if c.nesterov {
                            &g + &p.state[0] * c.momentum
                        } else {
                            p.state[0].shallow_clone()
                        }
                    } else {
                        g
                    };
                    let _ = p.var.g_add_(&(update * -lr));
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    if c.kind == OptimizerKind::Adamw && c.weight_decay > 0.0 {
                        let _ = p.var.g_mul_scalar_(1.0 - lr * c.weight_decay);
                    }
                    if p.state.is_empty() {
                        p.state.push(p.var.zeros_like());
                        p.state.push(p.var.zeros_like());
                    }
                    let mut m = p.state[0].shallow_clone();
                    let mut v = p.state[1].shallow_clone();
                    let _ = m.g_mul_scalar_(c.beta1).g_add_(&(&g * (1.0 - c.beta1)));
                    let _ = v
                        .g_mul_scalar_(c.beta2)
                        .g_add_(&(&g * &g * (1.0 - c.beta2)));
                    let bias1 = 1.0 - c.beta1.powi(t);
                    let bias2 = 1.0 - c.beta2.powi(t);
                    let denom = v.sqrt() / bias2.sqrt() + c.eps;
                    let _ = p.var.g_add_(&(&m / denom * (-lr / bias1)));
                }
            }
        }
        self.steps += 1;
    }

    /// The state as named tensors for a checkpoint: `<param>/<buffer>`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let names: &[&str] = match self.config.kind {
            OptimizerKind::Sgd => &["momentum"],
            OptimizerKind::Adam | OptimizerKind::Adamw => &["exp_avg", "exp_avg_sq"],
        };
        let mut out = Vec::new();
        for p in &self.params {
            for (buffer, tensor) in names.iter().zip(&p.state) {
                out.push((format!("{}/{buffer}", p.name), tensor.shallow_clone()));
            }
        }
        out
    }

    /// Restores [`Optimizer::state_tensors`] and the step count. Parameters without saved
    /// state (none had been taken yet) start fresh.
    pub fn load_state(
        &mut self,
        steps: u64,
        tensors: Vec<(String, Tensor)>,
    ) -> Result<(), MlError> {
        let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
        let names: &[&str] = match self.config.kind {
            OptimizerKind::Sgd => &["momentum"],
            OptimizerKind::Adam | OptimizerKind::Adamw => &["exp_avg", "exp_avg_sq"],
        };
        for p in &mut self.params {
            p.state.clear();
            for buffer in names {
                let key = format!("{}/{buffer}", p.name);
                match by_name.remove(&key) {
                    Some(t) if t.size() == p.var.size() => {
                        p.state
                            .push(t.to_kind(Kind::Float).to_device(p.var.device()));
                    }
                    Some(t) => {
                        return Err(MlError::InvalidArgument(format!(
                            "checkpoint optimizer state {key} has shape {:?}, the parameter {:?}",
                            t.size(),
                            p.var.size()
                        )));
                    }
                    None => break,
                }
            }
            if p.state.len() != names.len() {
                p.state.clear();
            }
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Minimizes (w - 3)² from w = 0 and returns w after `n` steps.
    fn descend(config: OptimizerConfig, n: usize, lr: f64) -> f64 {
        let w = Tensor::from_slice(&[0f32]).set_requires_grad(true);
        let mut opt = Optimizer::new(
            &config,
            &Regularization::default(),
            vec![("w.bias".into(), w.shallow_clone(), 1.0)],
        );
        for _ in 0..n {
            opt.zero_grad();
            let loss = (&w - 3.0).square().sum(Kind::Float);
            loss.backward();
            opt.step(lr);
        }
        f64::try_from(&w).unwrap()
    }

    #[test]
    fn every_optimizer_minimizes_a_quadratic() {
        for kind in [
            OptimizerKind::Sgd,
            OptimizerKind::Adam,
            OptimizerKind::Adamw,
        ] {
            let config = OptimizerConfig {
                kind,
                weight_decay: 0.0,
                ..OptimizerConfig::default()
            };
            let w = descend(config, 300, 0.05);
            assert!((w - 3.0).abs() < 0.05, "{kind:?} ended at {w}");
        }
    }

    #[test]
    fn the_first_adam_step_moves_by_the_learning_rate() {
        // With bias correction, |m̂ / sqrt(v̂)| = 1 on the first step.
        let w = descend(OptimizerConfig::default(), 1, 0.01);
        assert!((w - 0.01).abs() < 1e-6, "{w}");
    }

    #[test]
    fn sgd_without_momentum_is_plain_gradient_descent() {
        let config = OptimizerConfig {
            kind: OptimizerKind::Sgd,
            momentum: 0.0,
            ..OptimizerConfig::default()
        };
        // Gradient at 0 is -6; one step of lr 0.1 lands on 0.6.
        assert!((descend(config, 1, 0.1) - 0.6).abs() < 1e-6);
    }

    #[test]
    fn state_round_trips_and_frozen_parameters_are_left_out() {
        let w = Tensor::from_slice(&[1f32, 2.0])
            .view([1, 2])
            .set_requires_grad(true);
        let frozen = Tensor::from_slice(&[1f32]);
        let config = OptimizerConfig::default();
        let params = || {
            vec![
                ("fc.weight".to_string(), w.shallow_clone(), 1.0),
                ("frozen.bias".to_string(), frozen.shallow_clone(), 1.0),
            ]
        };
        let mut opt = Optimizer::new(&config, &Regularization::default(), params());
        assert_eq!(opt.trained_parameters(), 1);
        (&w * 2.0).sum(Kind::Float).backward();
        opt.step(0.1);
        let saved = opt.state_tensors();
        assert_eq!(saved.len(), 2);
        let mut again = Optimizer::new(&config, &Regularization::default(), params());
        again.load_state(opt.steps(), saved).unwrap();
        assert_eq!(again.steps(), 1);
        assert_eq!(again.state_tensors().len(), 2);
    }
}
