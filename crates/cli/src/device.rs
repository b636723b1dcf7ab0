//! Choosing the compute backend at run time: `--device cpu | wgpu[:N|:cpu|:integrated] | cuda[:N]`,
//! or for training a comma-separated list of devices of one backend (`cuda:0,cuda:1`).
//!
//! Commands are written once, generic over an autodiff backend ([`OnBackend`], or [`OnDevices`]
//! for those that use several devices); [`dispatch`] and [`dispatch_all`] pick the concrete
//! backend. A backend that was not compiled in, or a device that does not exist, is a one-line
//! error rather than a panic.

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

/// Several devices of one backend, named on the command line as a comma-separated list (the
/// first is the main device): data-parallel training splits each batch across them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList(Vec<DeviceSpec>);

impl DeviceList {
    /// The devices, main device first.
    pub fn specs(&self) -> &[DeviceSpec] {
        &self.0
    }

    /// The main device (the model lives there between steps; evaluation runs there).
    pub fn main(&self) -> &DeviceSpec {
        &self.0[0]
    }
}

impl FromStr for DeviceList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let specs = s
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<DeviceSpec>, _>>()?;
        let kind = std::mem::discriminant(&specs[0]);
        if specs
            .iter()
            .any(|spec| std::mem::discriminant(spec) != kind)
        {
            return Err(format!(
                "devices '{s}' mix backends: list devices of one kind (e.g. cuda:0,cuda:1)"
            ));
        }
        for (i, spec) in specs.iter().enumerate() {
            // Several CPU workers share the one CPU device: allowed, as a test of the path.
            if *spec != DeviceSpec::Cpu && specs[..i].contains(spec) {
                return Err(format!("device '{spec}' is listed twice in '{s}'"));
            }
        }
        Ok(Self(specs))
    }
}

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "{}", names.join(","))
    }
}

/// A command body that runs on one device of whichever backend the user chose.
pub trait OnBackend {
    /// What the command returns.
    type Output;
    /// Runs on backend `B` (an autodiff backend; use `B::InnerBackend` for inference).
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output>;
}

/// A command body that can use several devices of one backend.
pub trait OnDevices {
    /// What the command returns.
    type Output;
    /// Runs on backend `B` with `devices` (at least one; the first is the main device).
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<Self::Output>;
}

/// A one-device command as a command of a one-element device list.
struct OneDevice<T>(T);

impl<T: OnBackend> OnDevices for OneDevice<T> {
    type Output = T::Output;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<T::Output> {
        let device = devices.into_iter().next().expect("one device");
        self.0.run::<B>(device)
    }
}

/// Runs `task` on the backend and device named by `spec`.
pub fn dispatch<T: OnBackend>(spec: &DeviceSpec, task: T) -> Result<T::Output> {
    dispatch_all(&DeviceList(vec![spec.clone()]), OneDevice(task))
}

/// Runs `task` on the backend and devices named by `list`.
pub fn dispatch_all<T: OnDevices>(list: &DeviceList, task: T) -> Result<T::Output> {
    match list.main() {
        DeviceSpec::Cpu => task.run::<Autodiff<Flex>>(vec![Default::default(); list.specs().len()]),
        DeviceSpec::Wgpu(_) => run_wgpu(list, task),
        DeviceSpec::Cuda(_) => run_cuda(list, task),
    }
}

#[cfg(feature = "wgpu")]
fn run_wgpu<T: OnDevices>(list: &DeviceList, task: T) -> Result<T::Output> {
    use burn::backend::Wgpu;
    use burn::backend::wgpu::WgpuDevice;
    let mut devices = Vec::with_capacity(list.specs().len());
    for spec in list.specs() {
        let device = match spec {
            DeviceSpec::Wgpu(WgpuChoice::Discrete(n)) => WgpuDevice::DiscreteGpu(*n),
            DeviceSpec::Wgpu(WgpuChoice::Integrated(n)) => WgpuDevice::IntegratedGpu(*n),
            DeviceSpec::Wgpu(WgpuChoice::Cpu) => WgpuDevice::Cpu,
            _ => WgpuDevice::DefaultDevice,
        };
        probe::<Wgpu>(&device, spec)?;
        devices.push(device);
    }
    task.run::<Autodiff<Wgpu>>(devices)
}

#[cfg(not(feature = "wgpu"))]
fn run_wgpu<T: OnDevices>(list: &DeviceList, _: T) -> Result<T::Output> {
    anyhow::bail!(
        "device '{list}': this mocoop was built without WGPU support (rebuild with `--features wgpu`)"
    )
}

#[cfg(feature = "cuda")]
fn run_cuda<T: OnDevices>(list: &DeviceList, task: T) -> Result<T::Output> {
    use burn::backend::Cuda;
    use burn::backend::cuda::CudaDevice;
    let mut devices = Vec::with_capacity(list.specs().len());
    for spec in list.specs() {
        let index = match spec {
            DeviceSpec::Cuda(index) => *index,
            _ => 0,
        };
        let device = CudaDevice::new(index);
        probe::<Cuda>(&device, spec)?;
        devices.push(device);
    }
    task.run::<Autodiff<Cuda>>(devices)
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<T: OnDevices>(list: &DeviceList, _: T) -> Result<T::Output> {
    anyhow::bail!(
        "device '{list}': this mocoop was built without CUDA support (rebuild with `--features cuda`)"
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
    fn parses_device_lists() {
        let list: DeviceList = "cuda:0,cuda:1".parse().unwrap();
        assert_eq!(list.specs(), [DeviceSpec::Cuda(0), DeviceSpec::Cuda(1)]);
        assert_eq!(list.main(), &DeviceSpec::Cuda(0));
        assert_eq!(list.to_string(), "cuda:0,cuda:1");
        assert_eq!("cpu".parse::<DeviceList>().unwrap().specs().len(), 1);
        assert_eq!("cpu,cpu".parse::<DeviceList>().unwrap().specs().len(), 2);
        let mixed = "cpu,cuda:0".parse::<DeviceList>().unwrap_err();
        assert!(mixed.contains("mix backends"), "{mixed}");
        let twice = "cuda:1,cuda:1".parse::<DeviceList>().unwrap_err();
        assert!(twice.contains("listed twice"), "{twice}");
        let empty = "cuda:0,".parse::<DeviceList>().unwrap_err();
        assert!(empty.contains("unknown device ''"), "{empty}");
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
