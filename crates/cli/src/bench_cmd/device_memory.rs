//! Device memory of a GPU backend, where Burn's runtime exposes it.
//!
//! Burn 0.21's `Backend` trait has no memory query; cubecl's `ComputeClient::memory_usage` (the
//! runtime under Burn's CUDA and WGPU backends) reports the current use and reservation of its
//! memory pools. It is read here for CUDA through cubecl directly.

use std::any::Any;

/// MiB reserved on the device at the end of a case, and what that figure means or why it is
/// missing. `device` is the backend's device value.
pub fn device_memory<D: Any>(device: &D) -> (Option<f64>, Option<String>) {
    let device: &dyn Any = device;
    #[cfg(feature = "cuda")]
    if let Some(cuda) = device.downcast_ref::<burn::backend::cuda::CudaDevice>() {
        use cubecl::Runtime;
        return match cubecl::cuda::CudaRuntime::client(cuda).memory_usage() {
            Ok(usage) => (
                Some(usage.bytes_reserved as f64 / (1024.0 * 1024.0)),
                Some(
                    "device memory = bytes reserved by cubecl's pools at the end (pools keep \
                     their pages, so this is the peak reservation)"
                        .to_string(),
                ),
            ),
            Err(e) => (None, Some(format!("device memory n/a: {e:?}"))),
        };
    }
    let on_cpu = device.is::<burn::backend::flex::FlexDevice>();
    let note = (!on_cpu).then(|| {
        "device memory n/a: read only on CUDA (Burn 0.21's Backend has no memory query)".to_string()
    });
    (None, note)
}
