//! Choosing where tensors live: `auto`, `cpu`, `cuda`, `cuda:N`.
use anyhow::{bail, Context, Result};
use tch::Device;

/// What the user asked for, before checking the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceRequest {
    Auto,
    Cpu,
    Cuda(usize),
}

pub(crate) fn parse_device(text: &str) -> Result<DeviceRequest> {
    let t = text.trim().to_ascii_lowercase();
    Ok(match t.as_str() {
        "auto" => DeviceRequest::Auto,
        "cpu" => DeviceRequest::Cpu,
        "cuda" | "gpu" => DeviceRequest::Cuda(0),
        _ => {
            match t.strip_prefix("cuda:") {
                Some(n) => DeviceRequest::Cuda(n.parse().with_context(|| {
                    format!("device {text:?}: expected cuda:N with N a GPU index")
                })?),
                None => bail!("unknown device {text:?}; expected auto, cpu, cuda or cuda:N"),
            }
        }
    })
}

/// Resolves a device request against the machine; asking for a GPU that is not there is an error.
pub(crate) fn resolve_device(text: &str) -> Result<Device> {
    let gpus = if tch::Cuda::is_available() {
        tch::Cuda::device_count().max(0) as usize
    } else {
        0
    };
    choose_device(text, parse_device(text)?, gpus)
}

/// The device for `request` on a machine with `gpus` CUDA devices (`text`: as written,
/// for the message).
pub(crate) fn choose_device(text: &str, request: DeviceRequest, gpus: usize) -> Result<Device> {
    match request {
        DeviceRequest::Cpu => Ok(Device::Cpu),
        DeviceRequest::Auto => Ok(if gpus > 0 { Device::Cuda(0) } else { Device::Cpu }),
        DeviceRequest::Cuda(_) if gpus == 0 => bail!(
            "device {text:?}: CUDA is not available on this machine (libtorch sees no GPU); use --device cpu or auto"
        ),
        DeviceRequest::Cuda(n) if n >= gpus => bail!(
            "device {text:?}: this machine has {gpus} CUDA device(s), cuda:0 to cuda:{}",
            gpus - 1
        ),
        DeviceRequest::Cuda(n) => Ok(Device::Cuda(n)),
    }
}

pub(crate) fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
    }
}

/// Physical cores of this machine (hyper-threads share matmul units, so libtorch runs
/// fastest with one thread per core), never more than the CPUs this process may use.
/// `num_cpus` reads the topology (it falls back to the logical count where it cannot).
pub(crate) fn physical_cores() -> usize {
    let allowed = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    num_cpus::get_physical().clamp(1, allowed)
}

/// Tells glibc's allocator to keep freed memory for reuse instead of handing it back to
/// the kernel: a training step frees and reallocates activations of a few MB each, and
/// every round trip through the kernel comes back as fresh pages to fault in and clear
/// (`clear_page_erms` was 4% of a benchmark step). Blocks up to 32 MB (glibc's ceiling)
/// come from the heap, and up to 1 GiB of free heap is kept. Call once, at start-up.
/// Does nothing on other C libraries.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads
    // allocate, with values glibc documents as valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Part length for a hand-written pass over `len` elements split across libtorch's
/// thread count, with at least ~64k elements a part (below that, a thread costs more
/// than it saves).
pub(crate) fn pass_part_len(len: usize) -> usize {
    let threads = (tch::get_num_threads().max(1) as usize).min(len.div_ceil(65_536).max(1));
    len.div_ceil(threads).max(1)
}

/// Runs `work` on every item and returns the results in order: all items but the last
/// on scoped threads, the last on the calling thread (so one item spawns nothing).
pub(crate) fn split_work<T: Send, R: Send>(
    mut items: Vec<T>,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let work = &work;
    std::thread::scope(|s| {
        let last = items.pop();
        let spawned: Vec<_> = items
            .into_iter()
            .map(|item| s.spawn(move || work(item)))
            .collect();
        let last = last.map(work);
        let mut results: Vec<R> = spawned
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        results.extend(last);
        results
    })
}

/// The CPU threads `requested` means: 0 is one per physical core.
pub(crate) fn threads_for(requested: usize) -> usize {
    if requested == 0 {
        physical_cores()
    } else {
        requested
    }
}

/// Sets libtorch's CPU thread count (0 = one per physical core) and returns it.
pub(crate) fn set_threads(requested: usize) -> usize {
    let n = threads_for(requested);
    tch::set_num_threads(n as i32);
    n
}

/// Sets the threads for inference on one sequence — generation, inspection,
/// classification — and returns them: 0 means one. Measured on the 2-core machine
/// (`bench generate`): one thread is as fast as two (6.5 vs 6.6 ms/token for gpt-mini's
/// shape, 35.6 vs 36.1 for GPT-2 124M: products of one token are memory-bound), and
/// 2.6x / 2.1x faster when another process keeps a core busy (6.4 vs 16.9, 38.0 vs 80.4).
pub(crate) fn set_inference_threads(requested: usize) -> usize {
    set_threads(requested.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_index_beyond_the_machine_is_an_error() {
        let one = |t: &str| choose_device(t, parse_device(t).unwrap(), 1);
        assert_eq!(one("cuda:0").unwrap(), Device::Cuda(0));
        assert_eq!(one("auto").unwrap(), Device::Cuda(0));
        let err = one("cuda:1").unwrap_err().to_string();
        assert!(
            err.contains("\"cuda:1\"") && err.contains("1 CUDA device(s), cuda:0 to cuda:0"),
            "{err}"
        );
        let none = choose_device("cuda", DeviceRequest::Cuda(0), 0)
            .unwrap_err()
            .to_string();
        assert!(none.contains("not available"), "{none}");
        assert_eq!(
            choose_device("auto", DeviceRequest::Auto, 0).unwrap(),
            Device::Cpu
        );
    }

    #[test]
    fn parses_device_names() {
        assert_eq!(parse_device("auto").unwrap(), DeviceRequest::Auto);
        assert_eq!(parse_device("CPU").unwrap(), DeviceRequest::Cpu);
        assert_eq!(parse_device("cuda").unwrap(), DeviceRequest::Cuda(0));
        assert_eq!(parse_device("cuda:3").unwrap(), DeviceRequest::Cuda(3));
        assert!(parse_device("cuda:x").is_err());
        assert!(parse_device("tpu").is_err());
    }

    #[test]
    fn cuda_is_used_when_present_and_a_clear_error_when_not() {
        if tch::Cuda::is_available() {
            assert_eq!(resolve_device("cuda").unwrap(), Device::Cuda(0));
            assert_eq!(resolve_device("auto").unwrap(), Device::Cuda(0));
        } else {
            let msg = format!("{:#}", resolve_device("cuda").unwrap_err());
            assert!(msg.contains("CUDA is not available"), "{msg}");
            assert_eq!(resolve_device("auto").unwrap(), Device::Cpu);
        }
    }
}
