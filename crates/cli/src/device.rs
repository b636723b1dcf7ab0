//! Choosing the compute backend at run time: `--device cpu | wgpu[:N|:cpu|:integrated] | cuda[:N]`.
//!
//! Commands are written once, generic over an autodiff backend ([`OnBackend`]); [`dispatch`] picks the
//! concrete backend. A backend that was not compiled in, or a device that does not exist, is a
//! one-line error rather than a panic.

use std::fmt;
use std::str::FromStr;

use anyhow::Result;
use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

/// A device named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The pure-Rust CPU backend (always available).
    Cpu,
    /// A WGPU (Vulkan/Metal/DX12) adapter.
    Wgpu(WgpuChoice),
    /// An NVIDIA GPU by index.
    Cuda(usize),
}

/// Which WGPU adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgpuChoice {
    /// The best adapter the driver offers.
    Default,
    /// The N-th discrete GPU.
    Discrete(usize),
    /// The N-th integrated GPU.
    Integrated(usize),
    /// A software adapter (e.g. Mesa's lavapipe).
    Cpu,
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (kind, rest) = lower.split_once(':').unwrap_or((lower.as_str(), ""));
        let index = |text: &str| -> Result<usize, String> {
            text.parse()
                .map_err(|_| format!("invalid device index '{text}' in '{s}'"))
        };
        match (kind, rest) {
            ("cpu", "") => Ok(Self::Cpu),
            ("cuda", "") => Ok(Self::Cuda(0)),
            ("cuda", n) => Ok(Self::Cuda(index(n)?)),
            ("wgpu", "") => Ok(Self::Wgpu(WgpuChoice::Default)),
            ("wgpu", "cpu") => Ok(Self::Wgpu(WgpuChoice::Cpu)),
            ("wgpu", rest) => match rest.split_once(':') {
                Some(("integrated", n)) => Ok(Self::Wgpu(WgpuChoice::Integrated(index(n)?))),
                None if rest == "integrated" => Ok(Self::Wgpu(WgpuChoice::Integrated(0))),
                _ => Ok(Self::Wgpu(WgpuChoice::Discrete(index(rest)?))),
            },
            _ => Err(format!(
                "unknown device '{s}': expected cpu, wgpu, wgpu:N, wgpu:cpu, wgpu:integrated, cuda or cuda:N"
            )),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Wgpu(WgpuChoice::Default) => write!(f, "wgpu"),
            Self::Wgpu(WgpuChoice::Discrete(n)) => write!(f, "wgpu:{n}"),
            Self::Wgpu(WgpuChoice::Integrated(n)) => write!(f, "wgpu:integrated:{n}"),
            Self::Wgpu(WgpuChoice::Cpu) => write!(f, "wgpu:cpu"),
        }
    }
}

/// A command body that runs on whichever backend the user chose.
pub trait OnBackend {
    /// What the command returns.
    type Output;
    /// Runs on backend `B` (an autodiff backend; use `B::InnerBackend` for inference).
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output>;
}

/// Runs `task` on the backend and device named by `spec`.
pub fn dispatch<T: OnBackend>(spec: &DeviceSpec, task: T) -> Result<T::Output> {
    match spec {
        DeviceSpec::Cpu => task.run::<Autodiff<Flex>>(Default::default()),
        DeviceSpec::Wgpu(choice) => run_wgpu(*choice, spec, task),
        DeviceSpec::Cuda(index) => run_cuda(*index, spec, task),
    }
}

#[cfg(feature = "wgpu")]
fn run_wgpu<T: OnBackend>(choice: WgpuChoice, spec: &DeviceSpec, task: T) -> Result<T::Output> {
    use burn::backend::Wgpu;
    use burn::backend::wgpu::WgpuDevice;
    let device = match choice {
        WgpuChoice::Default => WgpuDevice::DefaultDevice,
        WgpuChoice::Discrete(n) => WgpuDevice::DiscreteGpu(n),
        WgpuChoice::Integrated(n) => WgpuDevice::IntegratedGpu(n),
        WgpuChoice::Cpu => WgpuDevice::Cpu,
    };
    probe::<Wgpu>(&device, spec)?;
    task.run::<Autodiff<Wgpu>>(device)
}

#[cfg(not(feature = "wgpu"))]
fn run_wgpu<T: OnBackend>(_: WgpuChoice, spec: &DeviceSpec, _: T) -> Result<T::Output> {
    anyhow::bail!(
        "device '{spec}': this mocoop was built without WGPU support (rebuild with `--features wgpu`)"
    )
}

#[cfg(feature = "cuda")]
fn run_cuda<T: OnBackend>(index: usize, spec: &DeviceSpec, task: T) -> Result<T::Output> {
    use burn::backend::Cuda;
    use burn::backend::cuda::CudaDevice;
    let device = CudaDevice::new(index);
    probe::<Cuda>(&device, spec)?;
    task.run::<Autodiff<Cuda>>(device)
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<T: OnBackend>(_: usize, spec: &DeviceSpec, _: T) -> Result<T::Output> {
    anyhow::bail!(
        "device '{spec}': this mocoop was built without CUDA support (rebuild with `--features cuda`)"
    )
}

/// Touches the device once so that a missing driver or adapter becomes an error here, not a panic
/// deep inside the first real computation.
#[allow(dead_code)] // unused when neither GPU backend is compiled in
fn probe<B: Backend>(device: &B::Device, spec: &DeviceSpec) -> Result<()> {
    catch_panic(|| Tensor::<B, 1>::ones([1], device).sum().into_scalar())
        .map_err(|message| anyhow::anyhow!("device '{spec}' is not available: {message}"))?;
    Ok(())
}

/// Runs `f`, turning a panic (how Burn's backends report an unsupported device or type) into the
/// first line of its message, printed by nobody.
pub fn catch_panic<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous_hook);
    outcome.map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("unknown error");
        message.lines().next().unwrap_or(message).to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("CUDA:1".parse(), Ok(DeviceSpec::Cuda(1)));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("wgpu".parse(), Ok(DeviceSpec::Wgpu(WgpuChoice::Default)));
        assert_eq!(
            "wgpu:2".parse(),
            Ok(DeviceSpec::Wgpu(WgpuChoice::Discrete(2)))
        );
        assert_eq!("wgpu:cpu".parse(), Ok(DeviceSpec::Wgpu(WgpuChoice::Cpu)));
        assert_eq!(
            "wgpu:integrated".parse(),
            Ok(DeviceSpec::Wgpu(WgpuChoice::Integrated(0)))
        );
        assert!(
            "tpu"
                .parse::<DeviceSpec>()
                .unwrap_err()
                .contains("unknown device")
        );
        assert!(
            "cuda:x"
                .parse::<DeviceSpec>()
                .unwrap_err()
                .contains("invalid device index")
        );
    }

    #[test]
    fn display_round_trips() {
        for name in [
            "cpu",
            "cuda:3",
            "wgpu",
            "wgpu:1",
            "wgpu:cpu",
            "wgpu:integrated:0",
        ] {
            assert_eq!(name.parse::<DeviceSpec>().unwrap().to_string(), name);
        }
    }
}
