//! CUDA graph capture of an update's device work (experimental: opt-in with
//! `REFLEX_CUDA_GRAPH=1`, for DQN, TD3 and DRQN learners and populations, and not
//! yet run on a GPU).
//!
//! Eagerly, each candle op is a kernel launch that costs the host several
//! microseconds, and a small network's update is a few hundred of them. A
//! graph records that sequence once and replays it with one launch. What a
//! replay needs, and the learner provides:
//!
//! - fixed buffers: the batch is copied into the same device buffer before
//!   every replay; parameters and Adam moments are updated in place by the
//!   fused kernels; the step size and bias correction live in a device
//!   buffer refreshed per step (a graph replays kernel arguments as captured);
//! - no host traffic inside: no value is read back during the capture, and
//!   candle's small constant uploads are served from its capture cache, which
//!   warm-up updates fill;
//! - outputs at fixed addresses: tensors allocated inside the capture and
//!   still held after it (the stats) belong to the graph; it is instantiated
//!   to free them itself before each relaunch, and they are read between
//!   replays.

use candle_core::{Device, Result, Tensor};

/// A captured update: replay it with [`launch`](Self::launch), then read
/// [`outputs`](Self::outputs).
pub struct Graph {
    #[cfg(feature = "cuda")]
    graph: candle_core::cuda_backend::cudarc::driver::CudaGraph,
    /// The stream it replays on (for errors cudarc could only record).
    #[cfg(feature = "cuda")]
    stream: std::sync::Arc<candle_core::cuda_backend::cudarc::driver::CudaStream>,
    // Declared after the graph, so dropped after it: memory a graph allocated
    // may be freed once its executable is gone.
    outputs: Vec<Tensor>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Graph({} outputs)", self.outputs.len())
    }
}

/// Whether `REFLEX_CUDA_GRAPH=1` asks for captured updates.
pub fn requested() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("REFLEX_CUDA_GRAPH").is_ok_and(|v| v == "1"))
}

impl Graph {
    /// Records what `body` launches on `device`'s stream (nothing runs) and
    /// instantiates it. `body` must only launch work: no reads to the host,
    /// no uploads beyond candle's cached constants.
    pub fn capture(device: &Device, body: impl FnOnce() -> Result<Vec<Tensor>>) -> Result<Self> {
        #[cfg(feature = "cuda")]
        {
            use candle_core::cuda_backend::cudarc::driver::sys;
            let Device::Cuda(cuda) = device else {
                candle_core::bail!("CUDA graphs need a CUDA device");
            };
            let stream = cuda.cuda_stream();
            if !stream.context().has_async_alloc() {
                // Without stream-ordered allocation cudarc frees with a
                // synchronization, which a capture cannot contain.
                candle_core::bail!("CUDA graphs need a device with memory pools");
            }
            let _cache = cuda.enable_cuda_graph_htod_cache();
            let fail = |e: candle_core::cuda_backend::cudarc::driver::DriverError| {
                candle_core::Error::Msg(format!("CUDA graph capture: {e}"))
            };
            stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                .map_err(fail)?;
            let outputs = body();
            // End the capture whatever the body did, so the stream is usable.
            let graph = stream.end_capture(
                sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH,
            );
            // Errors of calls made while capturing that cudarc could only
            // record (frees in drops) surface here.
            let recorded = stream.context().check_err();
            match (outputs, graph, recorded) {
                (Ok(outputs), Ok(Some(graph)), Ok(())) => {
                    graph.upload().map_err(fail)?;
                    Ok(Self {
                        graph,
                        stream,
                        outputs,
                    })
                }
                (outputs, graph, recorded) => {
                    let reason = match (&outputs, &graph, &recorded) {
                        (Err(e), _, _) => e.to_string(),
                        (_, Err(e), _) | (_, _, Err(e)) => e.to_string(),
                        _ => "nothing was recorded".to_string(),
                    };
                    // The outputs' memory belongs to a capture that did not
                    // become a running graph: leak them (a few bytes) rather
                    // than free addresses that were never allocated.
                    if let Ok(outputs) = outputs {
                        std::mem::forget(outputs);
                    }
                    drop(graph);
                    // Clear what the drops may have recorded, so that it is
                    // not reported against later work.
                    let _ = stream.context().check_err();
                    candle_core::bail!("CUDA graph capture: {reason}")
                }
            }
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (device, body);
            candle_core::bail!("CUDA graphs need a build with the `cuda` feature")
        }
    }

    /// Replays the captured work on the stream it was captured from.
    pub fn launch(&self) -> Result<()> {
        #[cfg(feature = "cuda")]
        {
            let fail = |e: candle_core::cuda_backend::cudarc::driver::DriverError| {
                candle_core::Error::Msg(format!("CUDA graph launch: {e}"))
            };
            self.graph.launch().map_err(fail)?;
            self.stream.context().check_err().map_err(fail)
        }
        #[cfg(not(feature = "cuda"))]
        {
            candle_core::bail!("CUDA graphs need a build with the `cuda` feature")
        }
    }

    /// The tensors the capture returned; they hold the last replay's values.
    pub fn outputs(&self) -> &[Tensor] {
        &self.outputs
    }

    /// Runs `f` with candle's capture cache of small constant uploads on, so
    /// that warm-up updates fill it before a capture.
    pub fn with_upload_cache<R>(device: &Device, f: impl FnOnce() -> R) -> R {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(cuda) = device {
            let _cache = cuda.enable_cuda_graph_htod_cache();
            return f();
        }
        let _ = device;
        f()
    }
}

/// An update run as a CUDA graph: the device buffers it reads (the packed
/// batch, Adam's step size and bias correction) and, once captured, the
/// graph. The first [`WARMUP`](Self::WARMUP) updates run the body eagerly on
/// those buffers (which also fills candle's cache of small uploads the
/// capture needs), the next one captures it, and every later one replays it.
#[derive(Debug)]
pub struct GraphedUpdate {
    graph: Option<Graph>,
    /// The packed batch, copied in before each update.
    input: candle_core::Var,
    /// Adam's step size and second bias correction for the update (a pair
    /// per optimizer the body steps).
    hyper: candle_core::Var,
    /// The optimizer state the buffers were made for.
    generation: u64,
    /// Updates run eagerly so far.
    warmup: u32,
}

/// What [`GraphedUpdate::run`] did.
pub enum Ran {
    /// The body ran (eagerly, or as a replay); its first output's values.
    Values(Vec<f32>),
    /// The capture failed (the reason); the body then ran eagerly and these
    /// are its values. The caller should update eagerly from now on.
    CaptureFailed(String, Vec<f32>),
}

impl Ran {
    /// The body's values. On a failed capture (logged here as a warning) it
    /// turns the learner's graphs off: `on` (its `cuda_graph` switch) goes
    /// false and `clear` drops its graphs, so it updates eagerly from now on.
    pub fn settle(self, on: &mut bool, clear: impl FnOnce()) -> Vec<f32> {
        match self {
            Ran::Values(values) => values,
            Ran::CaptureFailed(e, values) => {
                tracing::warn!("CUDA graph capture failed, updating eagerly: {e}");
                *on = false;
                clear();
                values
            }
        }
    }
}

/// An actor-critic update's two graphs: one for updates that step only the
/// critics, one for those that also step the actor and move the targets
/// (TD3's policy delay alternates them), each fed the critics' and the
/// actor's Adam step sizes through its buffer.
#[derive(Debug, Default)]
pub struct ActorCriticGraphs {
    graphs: [Option<GraphedUpdate>; 2],
}

impl ActorCriticGraphs {
    /// The graph for this update, made (or remade) to fit a batch of `n`
    /// values and the optimizers' state, and its buffer's hyperparameters:
    /// the critics' step, then the actor's when `with_actor` (a placeholder
    /// otherwise, the actor's step count left as it is).
    pub fn prepare(
        &mut self,
        n: usize,
        (critic, actor): (&mut crate::optim::Adam, &mut crate::optim::Adam),
        with_actor: bool,
        device: &Device,
    ) -> Result<(&mut GraphedUpdate, Vec<f32>)> {
        let generation = (critic.generation() << 32) ^ actor.generation();
        let slot = &mut self.graphs[usize::from(with_actor)];
        if !slot.as_ref().is_some_and(|g| g.fits(n, generation)) {
            *slot = Some(GraphedUpdate::new(n, 2, generation, device)?);
        }
        let mut hyper = critic.next_hyper().to_vec();
        hyper.extend(if with_actor {
            actor.next_hyper()
        } else {
            [0.0, 1.0]
        });
        Ok((slot.as_mut().expect("made above"), hyper))
    }

    /// Whether both graphs have been captured.
    pub fn captured(&self) -> bool {
        self.graphs
            .iter()
            .all(|g| g.as_ref().is_some_and(GraphedUpdate::captured))
    }

    /// Drops both graphs (a new optimizer state, or graphs turned off).
    pub fn clear(&mut self) {
        self.graphs = [None, None];
    }
}

/// A learner's update graph `slot`, made (or remade) to fit a batch of `n`
/// values and the (one) optimizer's state `generation`.
pub fn prepare<'a>(
    slot: &'a mut Option<GraphedUpdate>,
    n: usize,
    generation: u64,
    device: &Device,
) -> Result<&'a mut GraphedUpdate> {
    if !slot.as_ref().is_some_and(|g| g.fits(n, generation)) {
        *slot = Some(GraphedUpdate::new(n, 1, generation, device)?);
    }
    Ok(slot.as_mut().expect("made above"))
}

/// A single learner's graphed read-back, one tensor for one copy: `[loss,
/// mean Q, norm², TD errors…]` (the TD errors when given).
pub fn readback(
    loss: &Tensor,
    q_mean: &Tensor,
    normsq: &Tensor,
    td_error: Option<&Tensor>,
) -> Result<Tensor> {
    let mut pieces = vec![
        loss.detach().reshape(1)?,
        q_mean.reshape(1)?,
        normsq.to_dtype(candle_core::DType::F32)?.reshape(1)?,
    ];
    if let Some(td) = td_error {
        pieces.push(td.flatten_all()?);
    }
    Tensor::cat(&pieces, 0)
}

/// The stats in a [`readback`]'s values, and its TD errors (empty without).
pub fn stats(values: &[f32]) -> (crate::algo::UpdateStats, &[f32]) {
    let stats = crate::algo::UpdateStats {
        loss: values[0],
        q_mean: values[1],
        grad_norm: f64::from(values[2]).sqrt(),
    };
    (stats, &values[3..])
}

impl GraphedUpdate {
    /// Eager updates before the capture.
    pub const WARMUP: u32 = 3;

    /// Buffers for a packed batch of `n` values and `optimizers` pairs of
    /// Adam hyperparameters, for the optimizer state `generation` (see
    /// `Adam::generation`; a body that steps two optimizers combines theirs).
    pub fn new(n: usize, optimizers: usize, generation: u64, device: &Device) -> Result<Self> {
        use candle_core::{DType, Var};
        let pairs: Vec<f32> = (0..optimizers).flat_map(|_| [0f32, 1.0]).collect();
        Ok(Self {
            graph: None,
            input: Var::from_tensor(&Tensor::zeros(n, DType::F32, device)?)?,
            hyper: Var::from_tensor(&Tensor::new(pairs.as_slice(), device)?)?,
            generation,
            warmup: 0,
        })
    }

    /// Whether these buffers serve a batch of `n` values and the optimizer
    /// state `generation` (a checkpoint load replaces the moments a graph
    /// writes by address, so a new state needs a new capture).
    pub fn fits(&self, n: usize, generation: u64) -> bool {
        self.input.elem_count() == n && self.generation == generation
    }

    /// Whether a graph has been captured.
    pub fn captured(&self) -> bool {
        self.graph.is_some()
    }

    /// One update: copies `batch` and `hyper` (a (step size, correction)
    /// pair per optimizer) into the buffers, then runs `body(input, hyper)`
    /// eagerly (warm-up), captures it, or replays it.
    pub fn run(
        &mut self,
        device: &Device,
        batch: &[f32],
        hyper: &[f32],
        mut body: impl FnMut(&Tensor, &Tensor) -> Result<Vec<Tensor>>,
    ) -> Result<Ran> {
        let n = batch.len();
        self.input.set(&Tensor::from_slice(batch, n, device)?)?;
        self.hyper.set(&Tensor::new(hyper, device)?)?;
        let (input, hyper) = (
            self.input.as_tensor().detach(),
            self.hyper.as_tensor().detach(),
        );
        let mut eager = || body(&input, &hyper);
        if self.graph.is_none() && self.warmup < Self::WARMUP {
            self.warmup += 1;
            let out = Graph::with_upload_cache(device, &mut eager)?;
            return Ok(Ran::Values(out[0].to_vec1::<f32>()?));
        }
        if self.graph.is_none() {
            match Graph::capture(device, &mut eager) {
                Ok(graph) => self.graph = Some(graph),
                Err(e) => {
                    let out = eager()?[0].to_vec1::<f32>()?;
                    return Ok(Ran::CaptureFailed(e.to_string(), out));
                }
            }
        }
        let graph = self.graph.as_ref().expect("captured above");
        graph.launch()?;
        Ok(Ran::Values(graph.outputs()[0].to_vec1::<f32>()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_refuses_a_cpu_device_with_a_clear_error() {
        let err = Graph::capture(&Device::Cpu, || Ok(Vec::new())).unwrap_err();
        assert!(err.to_string().contains("CUDA"), "{err}");
        // The upload cache wrapper is a plain call on CPU.
        assert_eq!(Graph::with_upload_cache(&Device::Cpu, || 7), 7);
    }
}
