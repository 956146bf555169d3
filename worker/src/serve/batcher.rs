//! Dynamic batching: every request's instances wait in one bounded queue, and one inference
//! thread — a std thread that owns the libtorch model — runs them together.
//!
//! A request is admitted only when its instances fit the queue (`--queue`, counted in
//! instances); otherwise it is refused at once (HTTP 429, gRPC RESOURCE_EXHAUSTED), so the
//! queue never grows past its bound. The thread takes the first waiting request, then others
//! until the batch holds `--max-batch-size` instances or `--max-delay-ms` has passed since it
//! took the first, runs one forward pass (a request larger than a batch runs in several), and
//! answers each request on its own channel. A request whose client has gone is answered into
//! the void.
//!
//! Inputs are checked before they are queued, and the forward pass runs behind
//! `catch_unwind`, so a libtorch error fails the batch's requests (HTTP 500) and the thread
//! goes on serving.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};
use tokio::sync::oneshot;

use super::error::RequestError;
use super::metrics::Metrics;
use crate::ml::MlError;
use crate::ml::infer::LoadedModel;
use crate::ml::train::ModelCard;

/// How the thread batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max_batch_size: usize,
    pub max_delay: Duration,
    /// The most instances waiting.
    pub queue: usize,
}

/// The model's answer for one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub label: i64,
    pub class: String,
    pub probabilities: Vec<f32>,
    /// The image as the model took it (HWC pixel values at its input size, before
    /// normalization), when it was asked for.
    pub input: Option<Vec<f32>>,
    /// The model's embedding of the input, when it was asked for.
    pub embedding: Option<Vec<f32>>,
}

/// What a request wants beside the predictions, for the payload sample it records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    /// The images as the model took them.
    pub inputs: bool,
    /// The model's embeddings of the inputs.
    pub embeddings: bool,
}

/// One request's instances on their way to the model.
struct Job {
    /// `count` images, HWC pixel values in `[0, 255]`, one after the other.
    pixels: Vec<f32>,
    count: usize,
    keep: Keep,
    reply: oneshot::Sender<Result<Vec<Prediction>, RequestError>>,
}

/// The handle that requests use to reach the inference thread; cheap to clone. The thread
/// ends once every handle is dropped and the queue is empty.
#[derive(Debug, Clone)]
pub struct Batcher {
    jobs: SyncSender<Job>,
    /// Instances admitted and not yet taken into a batch.
    depth: Arc<AtomicUsize>,
    policy: BatchPolicy,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("count", &self.count).finish()
    }
}

/// Starts the inference thread, which loads the model from `path` on `device`; returns once
/// the model is loaded (or failed to load), with its card.
pub fn start(
    path: PathBuf,
    device: Device,
    policy: BatchPolicy,
    metrics: Arc<Metrics>,
) -> Result<(Batcher, ModelCard, JoinHandle<()>), MlError> {
    let (jobs, queue) = mpsc::sync_channel::<Job>(policy.queue);
    let (loaded_tx, loaded_rx) = mpsc::channel::<Result<ModelCard, MlError>>();
    let depth = Arc::new(AtomicUsize::new(0));
    let thread_depth = Arc::clone(&depth);
    let thread_metrics = Arc::clone(&metrics);
    let thread = std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || {
            let model = match LoadedModel::open(&path, device) {
                Ok(model) => {
                    let _ = loaded_tx.send(Ok(model.card.clone()));
                    model
                }
                Err(e) => {
                    let _ = loaded_tx.send(Err(e));
                    return;
                }
            };
            let runner = Runner {
                model,
                policy,
                depth: thread_depth,
                metrics: thread_metrics,
            };
            runner.serve(&queue);
        })
        .map_err(|e| MlError::InvalidArgument(format!("starting the inference thread: {e}")))?;
    let card = loaded_rx.recv().map_err(|_| {
        MlError::InvalidArgument("the inference thread ended while loading the model".into())
    })??;
    let batcher = Batcher {
        jobs,
        depth,
        policy,
        metrics,
    };
    Ok((batcher, card, thread))
}

impl Batcher {
    /// Queues `pixels` (`count` images) and waits for the model's answer.
    pub async fn infer(
        &self,
        pixels: Vec<f32>,
        count: usize,
        keep: Keep,
    ) -> Result<Vec<Prediction>, RequestError> {
        self.admit(count)?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            pixels,
            count,
            keep,
            reply,
        };
        if let Err(e) = self.jobs.try_send(job) {
            self.release(count);
            return Err(match e {
                TrySendError::Full(_) => self.full(count),
                TrySendError::Disconnected(_) => {
                    RequestError::unavailable("the model is no longer being served")
                }
            });
        }
        answer.await.unwrap_or_else(|_| {
            Err(RequestError::internal(
                "the inference thread ended before answering",
            ))
        })
    }

    /// Counts `count` instances into the queue, if they fit.
    fn admit(&self, count: usize) -> Result<(), RequestError> {
        let queue = self.policy.queue;
        if count > queue {
            return Err(RequestError::too_large(format!(
                "{count} instances in one request, more than the server queues at once \
                 ({queue}, --queue)"
            )));
        }
        let admitted = self
            .depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |depth| {
                (depth + count <= queue).then_some(depth + count)
            });
        match admitted {
            Ok(_) => {
                self.metrics.queue_depth.inc_by(count as i64);
                Ok(())
            }
            Err(_) => Err(self.full(count)),
        }
    }

    fn release(&self, count: usize) {
        self.depth.fetch_sub(count, Ordering::AcqRel);
        self.metrics.queue_depth.dec_by(count as i64);
    }

    fn full(&self, count: usize) -> RequestError {
        RequestError::overloaded(format!(
            "the model's queue is full ({} instances, --queue); {count} more do not fit: \
             try again later",
            self.policy.queue
        ))
    }
}

/// What the inference thread owns.
struct Runner {
    model: LoadedModel,
    policy: BatchPolicy,
    depth: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Runner {
    fn serve(&self, queue: &Receiver<Job>) {
        let mut held: Option<Job> = None;
        loop {
            let first = match held.take() {
                Some(job) => job,
                None => match queue.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
            };
            let deadline = Instant::now() + self.policy.max_delay;
            let mut size = first.count;
            let mut batch = vec![first];
            while size < self.policy.max_batch_size {
                let next = match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => queue.recv_timeout(left),
                    _ => queue.try_recv().map_err(|e| match e {
                        mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                        mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                    }),
                };
                match next {
                    // Too many for this batch: it starts the next one.
                    Ok(job) if size + job.count > self.policy.max_batch_size => {
                        held = Some(job);
                        break;
                    }
                    Ok(job) => {
                        size += job.count;
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.depth.fetch_sub(size, Ordering::AcqRel);
            self.metrics.queue_depth.dec_by(size as i64);
            self.run(batch, size);
        }
    }

    /// Runs the batch's instances through the model and answers each job.
    fn run(&self, batch: Vec<Job>, size: usize) {
        let keep = Keep {
            inputs: batch.iter().any(|j| j.keep.inputs),
            embeddings: batch.iter().any(|j| j.keep.embeddings),
        };
        let mut pixels = Vec::with_capacity(batch.iter().map(|j| j.pixels.len()).sum());
        for job in &batch {
            pixels.extend_from_slice(&job.pixels);
        }
        let mut answers = self.forward(&pixels, size, keep).map(Vec::into_iter);
        for job in batch {
            let reply = match &mut answers {
                Ok(all) => {
                    let mut mine: Vec<Prediction> = all.by_ref().take(job.count).collect();
                    for p in &mut mine {
                        if !job.keep.inputs {
                            p.input = None;
                        }
                        if !job.keep.embeddings {
                            p.embedding = None;
                        }
                    }
                    Ok(mine)
                }
                Err(e) => Err(e.clone()),
            };
            // The client may have gone; nobody is left to tell.
            let _ = job.reply.send(reply);
        }
    }

    /// Forward passes over `count` images, `--max-batch-size` at a time.
    fn forward(
        &self,
        pixels: &[f32],
        count: usize,
        keep: Keep,
    ) -> Result<Vec<Prediction>, RequestError> {
        let image = self.model.card.image;
        let per_image = image.pixels();
        let mut out = Vec::with_capacity(count);
        for chunk in pixels.chunks(per_image * self.policy.max_batch_size) {
            let rows = chunk.len() / per_image;
            self.metrics.batch_size.observe(rows as f64);
            let pass =
                std::panic::catch_unwind(AssertUnwindSafe(|| self.forward_pass(chunk, rows, keep)));
            match pass {
                Ok(Ok(predictions)) => out.extend(predictions),
                Ok(Err(e)) => {
                    return Err(RequestError::internal(format!("the model failed: {e}")));
                }
                Err(_) => return Err(RequestError::internal("the model failed (libtorch)")),
            }
        }
        Ok(out)
    }

    fn forward_pass(
        &self,
        chunk: &[f32],
        rows: usize,
        keep: Keep,
    ) -> Result<Vec<Prediction>, tch::TchError> {
        let image = self.model.card.image;
        let nhwc = Tensor::f_from_slice(chunk)?.f_view([
            rows as i64,
            i64::from(image.height),
            i64::from(image.width),
            i64::from(image.channels),
        ])?;
        let inputs = self.model.preprocess(&nhwc);
        let (probabilities, embeddings) = if keep.embeddings {
            let (p, e) = self.model.probabilities_and_embeddings(&inputs);
            (p, Some(e))
        } else {
            (self.model.probabilities(&inputs), None)
        };
        let probabilities = probabilities
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Float)?;
        let embeddings = match embeddings {
            Some(e) => Some(Vec::<f32>::try_from(
                e.f_to_device(Device::Cpu)?
                    .f_contiguous()?
                    .f_flatten(0, -1)?,
            )?),
            None => None,
        };
        let dimensions = toucan_core::monitoring::embedding::DIMENSIONS;
        let classes = self.model.card.classes.len();
        let probabilities = Vec::<f32>::try_from(probabilities.f_flatten(0, -1)?)?;
        let per_input = image.pixels();
        Ok(probabilities
            .chunks(classes.max(1))
            .enumerate()
            .map(|(row, p)| {
                let label = argmax(p);
                Prediction {
                    label: label as i64,
                    class: self
                        .model
                        .card
                        .classes
                        .get(label)
                        .cloned()
                        .unwrap_or_default(),
                    probabilities: p.to_vec(),
                    input: keep
                        .inputs
                        .then(|| chunk.get(row * per_input..(row + 1) * per_input))
                        .flatten()
                        .map(<[f32]>::to_vec),
                    embedding: embeddings
                        .as_ref()
                        .and_then(|e| e.get(row * dimensions..(row + 1) * dimensions))
                        .map(<[f32]>::to_vec),
                }
            })
            .collect())
    }
}

/// The index of the largest value; the first of equals, as `predict`'s top-k lists it.
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_equals() {
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), 1);
        assert_eq!(argmax(&[0.5, 0.5]), 0);
        assert_eq!(argmax(&[]), 0);
    }
}
