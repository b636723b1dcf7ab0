//! The training loop, which owns the run's I/O: burn-train's `Learner` stepped through the epochs
//! by a [`SupervisedLearningStrategy`] of this crate (burn-train's extension point for the loop).
//!
//! burn-train's built-in strategies give no hook between steps, where this loop needs one: it
//! stops on a non-finite loss before the step is applied (on every device's share), counts the
//! steps and epoch averages ([`Journal`], `metrics.jsonl`), writes the resumable checkpoints
//! ([`CheckpointSaver`]) at epoch ends and when the user stops the run (Ctrl-C), and stops on a
//! data error. Metrics and the progress display still go through burn-train's event processor.
//!
//! A data-parallel step runs its device shares one after another on the loop's thread, each on a
//! fork of the model on its device, rather than through burn-train's `MultiDevicesTrainStep`,
//! which runs them on a thread each: burn-autodiff 0.21 can free the graph one thread is still
//! building when another finishes its backward pass, and silently lose gradients
//! (tracel-ai/burn#5573). The devices' kernels still run asynchronously; only the host side of the
//! shares is serial, and the gradients are summed in device order (deterministic).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use burn::data::dataloader::split::split_dataloader;
use burn::data::dataloader::{DataLoaderIterator, Progress};
use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::store::EventStoreClient;
use burn::train::{
    EventProcessorTraining, InferenceStep, Interrupter, Learner, LearnerEvent,
    LearningComponentsMarker, SupervisedLearningStrategy, SupervisedTrainingEventProcessor,
    TrainLoader, TrainOutput, TrainStep, TrainingComponents, TrainingItem, ValidLoader,
};

use mocoop_data::ImageBatch;

use crate::data::DataErrors;
use crate::journal::{self, Journal, NonFinite};
use crate::learner::PromptLearner;
use crate::model::StepState;
use crate::saver::{self, CheckpointSaver};
use crate::step::StepOutput;

/// The learning components of a run.
type Components<B, LR, M, O> = LearningComponentsMarker<B, LR, M, O>;
/// The event processor of a run.
type Processor<B, LR, M, O> = SupervisedTrainingEventProcessor<Components<B, LR, M, O>>;

/// How a run's loop ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every epoch was trained.
    Finished,
    /// A step's loss was not finite; it was not applied.
    NonFinite(NonFinite),
    /// The user stopped the run after `step` steps; `checkpoint` continues it.
    Interrupted {
        /// Steps taken.
        step: usize,
        /// The checkpoint written after the last step (none when nothing was saved).
        checkpoint: Option<PathBuf>,
    },
    /// Saving, logging or the data failed.
    Failed(String),
}

/// What the loop keeps and hands back: the journal, the checkpoints and how it ended.
#[derive(Debug)]
pub struct RunState {
    /// Steps and epoch records.
    pub journal: Journal,
    /// The run's checkpoints.
    pub saver: CheckpointSaver,
    /// How the loop ended.
    pub outcome: Outcome,
    /// Where the model's training stood when the loop ended (the f16 loss scale's skipped steps).
    pub model: StepState,
}

impl RunState {
    /// The outcome of a run the user stopped here: its steps and its last checkpoint.
    fn interrupted(&self) -> Outcome {
        Outcome::Interrupted {
            step: self.journal.step,
            checkpoint: self.saver.last().map(PathBuf::from),
        }
    }
}

/// The loop of one run (a burn-train strategy); [`RunLoop::finish`] hands its state back.
pub struct RunLoop<B: AutodiffBackend> {
    devices: Vec<B::Device>,
    stop: Option<Arc<AtomicBool>>,
    data_errors: DataErrors,
    state: Mutex<Option<RunState>>,
}

impl<B: AutodiffBackend> RunLoop<B> {
    /// A loop over `devices` (data parallel when several; the first holds the model) continuing
    /// `journal`, saving through `saver`, stopping cleanly once `stop` is set and at the first
    /// error in `data_errors`; `model` is where the model's training stands at the start.
    pub fn new(
        devices: Vec<B::Device>,
        journal: Journal,
        saver: CheckpointSaver,
        stop: Option<Arc<AtomicBool>>,
        data_errors: DataErrors,
        model: StepState,
    ) -> Self {
        let state = RunState {
            journal,
            saver,
            outcome: Outcome::Finished,
            model,
        };
        Self {
            devices,
            stop,
            data_errors,
            state: Mutex::new(Some(state)),
        }
    }

    /// The loop's state once it has run.
    pub fn finish(&self) -> RunState {
        self.lock()
            .take()
            .expect("the loop's state is handed back once")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<RunState>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
    }
}

/// The training steps of one epoch: one device's batches, or every device's part of each batch.
enum EpochSteps<'a, B: AutodiffBackend> {
    One(Box<dyn DataLoaderIterator<ImageBatch<B>> + 'a>),
    Many {
        iterators: Vec<Box<dyn DataLoaderIterator<ImageBatch<B>> + 'a>>,
        devices: &'a [B::Device],
    },
}

impl<B: AutodiffBackend> EpochSteps<'_, B> {
    /// The outputs of the next step (one per device share) and the epoch's progress, or `None`
    /// at the epoch's end.
    fn next<LR, M, O>(
        &mut self,
        learner: &Learner<Components<B, LR, M, O>>,
    ) -> Option<(Vec<TrainOutput<StepOutput>>, Progress)>
    where
        LR: LrScheduler + 'static,
        M: PromptLearner<B>,
        O: Optimizer<M, B> + 'static,
    {
        match self {
            Self::One(iterator) => {
                let batch = iterator.next()?;
                Some((vec![learner.train_step(batch)], iterator.progress()))
            }
            Self::Many {
                iterators, devices, ..
            } => {
                let model = learner.model();
                let (mut outputs, mut processed, mut total) = (Vec::new(), 0, 0);
                for (iterator, device) in iterators.iter_mut().zip(devices.iter()) {
                    let Some(batch) = iterator.next() else {
                        continue;
                    };
                    let progress = iterator.progress();
                    processed += progress.items_processed;
                    total += progress.items_total;
                    outputs.push(TrainStep::step(&model.clone().fork(device), batch));
                }
                (!outputs.is_empty()).then(|| (outputs, Progress::new(processed, total)))
            }
        }
    }
}

/// The sum of the device shares' gradients, on the model's device.
fn summed_grads<B: AutodiffBackend, M: PromptLearner<B>>(
    outputs: Vec<TrainOutput<StepOutput>>,
    model: &M,
    device: &B::Device,
) -> GradientsParams {
    if outputs.len() == 1 {
        return outputs.into_iter().next().expect("one output").grads;
    }
    let mut accumulator = GradientsAccumulator::new();
    for output in outputs {
        accumulator.accumulate(model, output.grads.to_device(device, model));
    }
    accumulator.grads()
}

impl<B, LR, M, O> SupervisedLearningStrategy<Components<B, LR, M, O>> for RunLoop<B>
where
    B: AutodiffBackend,
    LR: LrScheduler + 'static,
    M: PromptLearner<B>,
    O: Optimizer<M, B> + 'static,
{
    fn fit(
        &self,
        components: TrainingComponents<Components<B, LR, M, O>>,
        mut learner: Learner<Components<B, LR, M, O>>,
        train: TrainLoader<Components<B, LR, M, O>>,
        valid: ValidLoader<Components<B, LR, M, O>>,
        starting_epoch: usize,
    ) -> (M, Processor<B, LR, M, O>) {
        let main = self.devices[0].clone();
        learner.fork(&main);
        let loaders = if self.devices.len() > 1 {
            split_dataloader(train, &self.devices)
        } else {
            vec![train.to_device(&main)]
        };
        let valid = valid.to_device(&main);
        let mut processor = components.event_processor;
        let mut state = self.finish();
        let epochs = components.num_epochs;
        for epoch in starting_epoch..=epochs {
            let global = Progress {
                items_processed: epoch,
                items_total: epochs,
            };
            let steps = if self.devices.len() > 1 {
                EpochSteps::Many {
                    iterators: loaders.iter().map(|l| l.iter()).collect(),
                    devices: &self.devices,
                }
            } else {
                EpochSteps::One(loaders[0].iter())
            };
            let context = EpochContext {
                global: &global,
                interrupter: &components.interrupter,
                store: &components.event_store,
                device: &main,
            };
            let trained =
                self.train_epoch(&mut learner, steps, &mut processor, &mut state, &context);
            if !trained {
                break;
            }
            validate(&learner, &valid, &mut processor, &context);
            if let Some(error) = self.data_errors.first() {
                state.outcome = Outcome::Failed(error);
                break;
            }
        }
        let model = learner.model();
        state.model = model.state();
        *self.lock() = Some(state);
        (model, processor)
    }
}

/// What every step of an epoch needs besides the learner.
struct EpochContext<'a, B: AutodiffBackend> {
    global: &'a Progress,
    interrupter: &'a Interrupter,
    store: &'a EventStoreClient,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> RunLoop<B> {
    /// Trains one epoch; `false` when the run stops (its [`Outcome`] is then set).
    fn train_epoch<LR, M, O>(
        &self,
        learner: &mut Learner<Components<B, LR, M, O>>,
        mut steps: EpochSteps<'_, B>,
        processor: &mut Processor<B, LR, M, O>,
        state: &mut RunState,
        context: &EpochContext<'_, B>,
    ) -> bool
    where
        LR: LrScheduler + 'static,
        M: PromptLearner<B>,
        O: Optimizer<M, B> + 'static,
    {
        let mut iteration = 0;
        while let Some((outputs, progress)) = steps.next(learner) {
            learner.lr_step();
            let items: Vec<StepOutput> = outputs.iter().map(|o| o.item.clone()).collect();
            if let Some(bad) = items.iter().find(|o| !o.loss_is_finite()) {
                state.outcome = Outcome::NonFinite(state.journal.non_finite(bad));
                context.interrupter.stop(Some("non-finite loss"));
                return false;
            }
            let grads = summed_grads(outputs, &learner.model(), context.device);
            learner.optimizer_step(grads);
            state.journal.count_step(&items);
            for item in items {
                iteration += 1;
                let item = TrainingItem::new(
                    item,
                    progress.clone(),
                    context.global.clone(),
                    Some(iteration),
                    Some(learner.lr_current()),
                );
                processor.process_train(LearnerEvent::ProcessedItem(item));
            }
            if let Some(error) = self.data_errors.first() {
                return self.fail(state, error, context);
            }
            if self.stop_requested() && !state.journal.at_epoch_end() {
                let name = format!("step-{:07}.safetensors", state.journal.step);
                return self.interrupt(learner, state, &name, context);
            }
        }
        processor.process_train(LearnerEvent::EndEpoch(context.global.items_processed));
        if let Some(error) = self.data_errors.first() {
            return self.fail(state, error, context);
        }
        if let Err(error) = close_epoch(learner, state, context.store) {
            return self.fail(state, error.to_string(), context);
        }
        if self.stop_requested() {
            state.outcome = state.interrupted();
            return false;
        }
        true
    }

    /// Saves the checkpoint `name` of a run the user stopped mid-epoch.
    fn interrupt<LR, M, O>(
        &self,
        learner: &Learner<Components<B, LR, M, O>>,
        state: &mut RunState,
        name: &str,
        context: &EpochContext<'_, B>,
    ) -> bool
    where
        LR: LrScheduler + 'static,
        M: PromptLearner<B>,
        O: Optimizer<M, B> + 'static,
    {
        if let Err(error) = save_checkpoint(learner, state, name, context.store) {
            return self.fail(state, error.to_string(), context);
        }
        state.outcome = state.interrupted();
        context.interrupter.stop(Some("interrupted"));
        false
    }

    /// Stops the run on `error`.
    fn fail(&self, state: &mut RunState, error: String, context: &EpochContext<'_, B>) -> bool {
        context.interrupter.stop(Some("error"));
        state.outcome = Outcome::Failed(error);
        false
    }
}

/// Ends the epoch the last step finished: its checkpoint and its line in `metrics.jsonl`.
fn close_epoch<B, LR, M, O>(
    learner: &Learner<Components<B, LR, M, O>>,
    state: &mut RunState,
    store: &EventStoreClient,
) -> Result<(), crate::TrainError>
where
    B: AutodiffBackend,
    LR: LrScheduler + 'static,
    M: PromptLearner<B>,
    O: Optimizer<M, B> + 'static,
{
    let mut record = state.journal.close_epoch(learner.lr_current());
    let name = format!("epoch-{:03}.safetensors", record.epoch);
    record.checkpoint = Some(save_checkpoint(learner, state, &name, store)?);
    journal::append_record(state.saver.dir(), &record)?;
    state.journal.epochs.push(record);
    Ok(())
}

/// Writes the checkpoint `name` of the learner's model and optimiser after the journal's steps;
/// returns its path relative to the run directory.
fn save_checkpoint<B, LR, M, O>(
    learner: &Learner<Components<B, LR, M, O>>,
    state: &mut RunState,
    name: &str,
    store: &EventStoreClient,
) -> Result<String, crate::TrainError>
where
    B: AutodiffBackend,
    LR: LrScheduler + 'static,
    M: PromptLearner<B>,
    O: Optimizer<M, B> + 'static,
{
    let optimizer = saver::optimizer_bytes(learner, store)?;
    state
        .saver
        .save(name, &learner.model(), &state.journal, optimizer)
}

/// One validation epoch through burn-train's event processor (its metrics and display).
fn validate<B, LR, M, O>(
    learner: &Learner<Components<B, LR, M, O>>,
    valid: &ValidLoader<Components<B, LR, M, O>>,
    processor: &mut Processor<B, LR, M, O>,
    context: &EpochContext<'_, B>,
) where
    B: AutodiffBackend,
    LR: LrScheduler + 'static,
    M: PromptLearner<B>,
    O: Optimizer<M, B> + 'static,
{
    let model = learner.model().valid();
    let mut iterator = valid.iter();
    let mut iteration = 0;
    while let Some(batch) = iterator.next() {
        iteration += 1;
        let item = TrainingItem::new(
            model.step(batch),
            iterator.progress(),
            context.global.clone(),
            Some(iteration),
            None,
        );
        processor.process_valid(LearnerEvent::ProcessedItem(item));
        if context.interrupter.should_stop() {
            break;
        }
    }
    processor.process_valid(LearnerEvent::EndEpoch(context.global.items_processed));
}
