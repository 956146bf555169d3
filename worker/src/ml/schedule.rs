//! Learning-rate schedules, as a pure function of the optimizer step.
//!
//! With `W` warm-up steps (`warmupEpochs * stepsPerEpoch`, rounded), step `s` (0-based) gets
//! `lr * (s + 1) / W` while `s < W`, then the schedule proper on `t = s - W` of `T = total - W`:
//! - constant: `lr`;
//! - step: `lr * gamma^floor(epoch / stepEpochs)`, with the epoch counted from the start;
//! - cosine: `min + (lr - min) * (1 + cos(pi * t / T)) / 2`.
//!
//! The rate is recomputed from the step every time, so a resumed run continues on the curve.

use super::config::{ScheduleConfig, ScheduleKind};

#[derive(Debug, Clone)]
pub struct Schedule {
    config: ScheduleConfig,
    base: f64,
    steps_per_epoch: u64,
    total_steps: u64,
    warmup_steps: u64,
}

impl Schedule {
    pub fn new(config: &ScheduleConfig, base: f64, steps_per_epoch: u64, epochs: u32) -> Self {
        let total_steps = steps_per_epoch * u64::from(epochs);
        let warmup_steps = ((config.warmup_epochs * steps_per_epoch as f64).round() as u64)
            .min(total_steps.saturating_sub(1));
        Schedule {
            config: config.clone(),
            base,
            steps_per_epoch: steps_per_epoch.max(1),
            total_steps,
            warmup_steps,
        }
    }

    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.config.kind {
            ScheduleKind::Constant => self.base,
            ScheduleKind::Step => {
                let epoch = step / self.steps_per_epoch;
                let drops = epoch / u64::from(self.config.step_epochs.max(1));
                self.base * self.config.gamma.powi(drops.min(i32::MAX as u64) as i32)
            }
            ScheduleKind::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let t = (step - self.warmup_steps).min(span) as f64 / span as f64;
                let min = self.config.min_learning_rate;
                min + (self.base - min) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: ScheduleKind, warmup_epochs: f64) -> ScheduleConfig {
        ScheduleConfig {
            kind,
            warmup_epochs,
            step_epochs: 2,
            gamma: 0.5,
            min_learning_rate: 0.0,
        }
    }

    #[test]
    fn warm_up_rises_linearly_to_the_base_rate() {
        let s = Schedule::new(&config(ScheduleKind::Constant, 1.0), 0.1, 10, 5);
        assert!((s.lr(0) - 0.01).abs() < 1e-12);
        assert!((s.lr(4) - 0.05).abs() < 1e-12);
        assert!((s.lr(9) - 0.1).abs() < 1e-12);
        assert_eq!(s.lr(10), 0.1);
        assert_eq!(s.lr(49), 0.1);
    }

    #[test]
    fn step_decay_drops_every_step_epochs() {
        let s = Schedule::new(&config(ScheduleKind::Step, 0.0), 0.1, 10, 6);
        assert_eq!(s.lr(0), 0.1);
        assert_eq!(s.lr(19), 0.1);
        assert!((s.lr(20) - 0.05).abs() < 1e-12);
        assert!((s.lr(59) - 0.025).abs() < 1e-12);
    }

    #[test]
    fn cosine_goes_from_base_to_min_after_warm_up() {
        let mut c = config(ScheduleKind::Cosine, 1.0);
        c.min_learning_rate = 0.001;
        let s = Schedule::new(&c, 0.1, 10, 5);
        assert!((s.lr(10) - 0.1).abs() < 1e-12);
        // Half-way through the 40 cosine steps.
        assert!((s.lr(30) - (0.001 + 0.099 / 2.0)).abs() < 1e-12);
        assert!(s.lr(49) > 0.001 && s.lr(49) < 0.0012);
        let rates: Vec<f64> = (10..50).map(|i| s.lr(i)).collect();
        assert!(rates.windows(2).all(|w| w[1] <= w[0]));
    }
}
