//! Where the forward pass runs: `--device auto|cpu|cuda[:N]`, and why CUDA is refused today.
//!
//! Archives depend on the exact bits of every logit, which the numeric backend fixes. The
//! backends are defined by lmzip's own CPU kernels (fixed reduction order, no fused
//! multiply-add); GPU libraries reorder reductions and fuse operations, so their results
//! differ in the last bits and differ again between batch shapes. Until CUDA kernels that
//! reproduce a backend's bits exist, a CUDA device is refused rather than producing
//! archives no CPU could decode.

use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// A device request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// The best device that gives the backend's exact results (the CPU, today).
    #[default]
    Auto,
    Cpu,
    /// A CUDA GPU by ordinal.
    Cuda(usize),
}

/// What is supported, for messages.
pub const SUPPORTED_DEVICES: &str = "cpu (auto picks it); CUDA needs exact GPU kernels that \
lmzip does not have yet (see docs/MODELS.md)";

impl FromStr for DeviceRequest {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("'{s}' is not a device (auto, cpu, cuda, cuda:N)")),
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceRequest {
    /// Checks that this build can run the request (the CPU, today), or a typed refusal
    /// naming what is supported. Nothing is set up: the engine always runs on the CPU.
    pub fn validate(self) -> Result<()> {
        match self {
            Self::Auto | Self::Cpu => Ok(()),
            Self::Cuda(_) => Err(Error::unsupported(
                "device",
                format!(
                    "{self}{}",
                    if cfg!(feature = "cuda") {
                        ""
                    } else {
                        " (this build also lacks the cuda feature)"
                    }
                ),
                SUPPORTED_DEVICES,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_cuda_is_refused() {
        assert_eq!("auto".parse(), Ok(DeviceRequest::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceRequest::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceRequest::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceRequest::Cuda(3)));
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", "metal"] {
            assert!(bad.parse::<DeviceRequest>().is_err(), "{bad}");
        }
        assert!(DeviceRequest::Auto.validate().is_ok());
        let e = DeviceRequest::Cuda(1).validate().unwrap_err();
        assert!(matches!(
            e.kind(),
            crate::ErrorKind::UnsupportedModel { what: "device", .. }
        ));
        assert!(e.to_string().contains("cuda:1"), "{e}");
    }
}
