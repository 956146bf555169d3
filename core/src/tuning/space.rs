//! The validated search space and the coordinates samplers work in.
//!
//! Samplers never see parameter values: each parameter is a coordinate. A numeric parameter's
//! coordinate is its position in `[0, 1]` (on the log of the range for `scale: log`; a
//! `discrete` list by rank, so `[32, 64, 128, 256]` are evenly spaced); a categorical
//! parameter's coordinate is the index of its choice. A point of the space is one
//! `Option<f64>` per parameter, `None` where a `when` condition leaves the parameter out.
//! [`SearchSpace::decode`] turns a point into the values a trial receives, snapping it to the
//! parameter's grid, and [`SearchSpace::encode`] turns recorded values back into a point.

use std::collections::BTreeMap;

use super::condition::Condition;
use super::value::ParamValue;

/// Two numbers closer than this (relative to the range) are the same grid value.
const SAME_VALUE: f64 = 1e-9;

/// The values one parameter can take.
#[derive(Clone, Debug, PartialEq)]
pub enum Domain {
    /// A real number in `[min, max]`, on a grid from `min` when `step` is set.
    Double {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
        /// Searched on the logarithm of the range.
        log: bool,
        /// Grid spacing.
        step: Option<f64>,
    },
    /// A whole number in `[min, max]` on a grid of `step` from `min`.
    Int {
        /// Lower bound.
        min: i64,
        /// Upper bound.
        max: i64,
        /// Grid spacing, at least 1.
        step: i64,
        /// Searched on the logarithm of the range.
        log: bool,
    },
    /// One of these numbers, ascending and distinct.
    Discrete {
        /// The choices.
        values: Vec<f64>,
    },
    /// One of these strings, in the user's order.
    Categorical {
        /// The choices.
        values: Vec<String>,
    },
}

impl Domain {
    /// Whether the coordinate is a choice index rather than a position in `[0, 1]`.
    pub fn is_categorical(&self) -> bool {
        matches!(self, Domain::Categorical { .. })
    }

    /// How many values the parameter can take; `None` for a continuous range.
    pub fn choices(&self) -> Option<u64> {
        match self {
            Domain::Double { step: None, .. } => None,
            Domain::Double {
                min,
                max,
                step: Some(step),
                ..
            } => Some(((max - min) / step).round() as u64 + 1),
            Domain::Int { min, max, step, .. } => Some(((max - min) / step) as u64 + 1),
            Domain::Discrete { values } => Some(values.len() as u64),
            Domain::Categorical { values } => Some(values.len() as u64),
        }
    }

    /// The coordinate of choice `index` (grid order: ascending, or the user's order).
    pub fn choice_coordinate(&self, index: u64) -> f64 {
        match self {
            Domain::Categorical { .. } => index as f64,
            Domain::Double { log: false, .. } | Domain::Int { log: false, .. } => {
                let k = self.choices().unwrap_or(1);
                rank_coordinate(index, k)
            }
            Domain::Double {
                min,
                max,
                step: Some(step),
                log: true,
            } => self.to_unit(min + index as f64 * step, *min, *max, true),
            Domain::Int {
                min,
                max,
                step,
                log: true,
            } => {
                let v = (min + index as i64 * step) as f64;
                self.to_unit(v, *min as f64, *max as f64, true)
            }
            Domain::Discrete { values } => rank_coordinate(index, values.len() as u64),
            Domain::Double { step: None, .. } => 0.0,
        }
    }

    /// A coordinate from a uniform draw `u` in `[0, 1)`: every choice of a finite domain is
    /// equally likely (a log-scaled one is drawn on its log range and snapped).
    pub fn uniform(&self, u: f64) -> f64 {
        match (self, self.choices()) {
            (Domain::Double { log: true, .. } | Domain::Int { log: true, .. }, _) => self.snap(u),
            (_, Some(k)) => {
                let index = ((u * k as f64) as u64).min(k - 1);
                self.choice_coordinate(index)
            }
            (_, None) => u,
        }
    }

    /// The nearest coordinate the parameter can take.
    pub fn snap(&self, coordinate: f64) -> f64 {
        match self {
            Domain::Double { step: None, .. } => coordinate.clamp(0.0, 1.0),
            _ => self.encode(&self.decode(coordinate)).unwrap_or(coordinate),
        }
    }

    /// The value at `coordinate`, snapped to the grid and clamped to the range.
    pub fn decode(&self, coordinate: f64) -> ParamValue {
        let u = coordinate.clamp(0.0, 1.0);
        match self {
            Domain::Double {
                min,
                max,
                log,
                step,
            } => {
                let x = from_unit(u, *min, *max, *log);
                let x = match step {
                    Some(step) => min + ((x - min) / step).round() * step,
                    None => x,
                };
                ParamValue::Float(x.clamp(*min, *max))
            }
            Domain::Int {
                min,
                max,
                step,
                log,
            } => {
                let x = from_unit(u, *min as f64, *max as f64, *log);
                let steps = ((x - *min as f64) / *step as f64).round() as i64;
                ParamValue::Int((min + steps * step).clamp(*min, *max))
            }
            Domain::Discrete { values } => {
                let index = rank_index(u, values.len());
                ParamValue::number(values.get(index).copied().unwrap_or(0.0))
            }
            Domain::Categorical { values } => {
                let last = values.len().saturating_sub(1);
                let index = (coordinate.round().max(0.0) as usize).min(last);
                ParamValue::Text(values.get(index).cloned().unwrap_or_default())
            }
        }
    }

    /// The coordinate of a recorded value; `None` when the value is not one of the domain's
    /// (another type, outside the range, off the grid, an unknown choice).
    pub fn encode(&self, value: &ParamValue) -> Option<f64> {
        match self {
            Domain::Categorical { values } => match value {
                ParamValue::Text(s) => values.iter().position(|v| v == s).map(|i| i as f64),
                _ => None,
            },
            Domain::Discrete { values } => {
                let x = value.as_f64()?;
                let scale = values.iter().fold(1.0_f64, |m, v| m.max(v.abs()));
                let index = values
                    .iter()
                    .position(|v| (v - x).abs() <= SAME_VALUE * scale)?;
                Some(rank_coordinate(index as u64, values.len() as u64))
            }
            Domain::Double {
                min,
                max,
                log,
                step,
            } => {
                let x = value.as_f64()?;
                let tolerance = SAME_VALUE * (max - min).abs().max(1.0);
                if x < min - tolerance || x > max + tolerance {
                    return None;
                }
                if let Some(step) = step {
                    let steps = (x - min) / step;
                    if (steps - steps.round()).abs() > 1e-6 {
                        return None;
                    }
                }
                Some(self.to_unit(x.clamp(*min, *max), *min, *max, *log))
            }
            Domain::Int {
                min,
                max,
                step,
                log,
            } => {
                let x = match value {
                    ParamValue::Int(i) => *i,
                    ParamValue::Float(f) if f.fract() == 0.0 => *f as i64,
                    _ => return None,
                };
                if x < *min || x > *max || (x - min) % step != 0 {
                    return None;
                }
                Some(self.to_unit(x as f64, *min as f64, *max as f64, *log))
            }
        }
    }

    fn to_unit(&self, x: f64, min: f64, max: f64, log: bool) -> f64 {
        let (x, min, max) = if log {
            (x.ln(), min.ln(), max.ln())
        } else {
            (x, min, max)
        };
        if max > min {
            ((x - min) / (max - min)).clamp(0.0, 1.0)
        } else {
            0.5
        }
    }
}

/// Choice `index` of `k` evenly spaced over `[0, 1]` (a single choice sits in the middle).
fn rank_coordinate(index: u64, k: u64) -> f64 {
    if k <= 1 {
        0.5
    } else {
        index as f64 / (k - 1) as f64
    }
}

/// The choice of `k` whose rank coordinate is nearest `u`.
fn rank_index(u: f64, k: usize) -> usize {
    if k <= 1 {
        0
    } else {
        ((u * (k - 1) as f64).round() as usize).min(k - 1)
    }
}

fn from_unit(u: f64, min: f64, max: f64, log: bool) -> f64 {
    if log {
        (min.ln() + u * (max.ln() - min.ln())).exp()
    } else {
        min + u * (max - min)
    }
}

/// One parameter of a validated space.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter {
    /// Its name.
    pub name: String,
    /// Its values.
    pub domain: Domain,
    /// When it exists; always when `None`.
    pub when: Option<Condition>,
}

/// A point of the space: one coordinate per parameter, `None` for a parameter left out.
pub type Point = Vec<Option<f64>>;

/// A validated search space: parameters in the spec's order, and the order in which their
/// conditions are evaluated (every parameter after the one its `when` names).
#[derive(Clone, Debug, PartialEq)]
pub struct SearchSpace {
    parameters: Vec<Parameter>,
    order: Vec<usize>,
}

impl SearchSpace {
    /// A space whose conditions have been checked: `order` lists every parameter once, each
    /// after its `when` parent.
    pub(crate) fn new(parameters: Vec<Parameter>, order: Vec<usize>) -> Self {
        SearchSpace { parameters, order }
    }

    /// The parameters, in the spec's order.
    pub fn parameters(&self) -> &[Parameter] {
        &self.parameters
    }

    /// The number of parameters (coordinates of a point).
    pub fn len(&self) -> usize {
        self.parameters.len()
    }

    /// Whether the space has no parameters.
    pub fn is_empty(&self) -> bool {
        self.parameters.is_empty()
    }

    /// Parameter indices, every one after its `when` parent.
    pub fn condition_order(&self) -> &[usize] {
        &self.order
    }

    /// Whether parameter `index` exists given the coordinates of its ancestors.
    pub fn is_active(&self, index: usize, point: &[Option<f64>]) -> bool {
        match &self.parameters[index].when {
            None => true,
            Some(condition) => match point.get(condition.parent).copied().flatten() {
                None => false,
                Some(coordinate) => {
                    let parent = &self.parameters[condition.parent].domain;
                    condition.holds(&parent.decode(coordinate))
                }
            },
        }
    }

    /// Leaves out (sets to `None`) every parameter whose condition does not hold.
    pub fn deactivate(&self, point: &mut [Option<f64>]) {
        for &i in &self.order {
            if !self.is_active(i, point) {
                point[i] = None;
            }
        }
    }

    /// The values a trial receives for `point` (parameters left out are absent).
    pub fn decode(&self, point: &[Option<f64>]) -> BTreeMap<String, ParamValue> {
        self.parameters
            .iter()
            .zip(point)
            .filter_map(|(p, c)| c.map(|c| (p.name.clone(), p.domain.decode(c))))
            .collect()
    }

    /// The point of recorded values; `None` when a value is outside its domain or the set
    /// of present parameters contradicts the conditions.
    pub fn encode(&self, values: &BTreeMap<String, ParamValue>) -> Option<Point> {
        let mut point: Point = Vec::with_capacity(self.parameters.len());
        for p in &self.parameters {
            match values.get(&p.name) {
                Some(v) => point.push(Some(p.domain.encode(v)?)),
                None => point.push(None),
            }
        }
        for &i in &self.order {
            if self.is_active(i, &point) != point[i].is_some() {
                return None;
            }
        }
        Some(point)
    }
}
