//! GPU memory stress test through the CUDA driver API (`libcuda.so.1`, loaded at run time):
//! allocate the requested memory on one GPU, fill it several times with a pattern, read samples
//! back, and report the fill time and bandwidth.

use libloading::{Library, Symbol};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::time::Instant;

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut c_void;
type CuDevicePtr = u64;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StressError {
    #[error("CUDA driver unavailable: {0}")]
    Unavailable(String),
    #[error("no CUDA device has UUID {0}")]
    NoSuchDevice(String),
    #[error("CUDA call {call} failed: {message}")]
    Cuda { call: &'static str, message: String },
}

/// What the test measured.
#[derive(Clone, Debug, PartialEq)]
pub struct StressReport {
    pub allocated_bytes: u64,
    pub passes: u32,
    pub fill_seconds: f64,
    pub bandwidth_gib_per_s: f64,
    pub verified: bool,
    /// Whatever the `during` callback measured while the memory was allocated.
    pub during: Option<u64>,
}

/// NVML-style UUID text (`GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`) of CUDA's 16 UUID bytes.
pub fn format_gpu_uuid(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Fill bandwidth in GiB/s: bytes written over all passes divided by the time.
pub fn bandwidth_gib_per_s(bytes: u64, passes: u32, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    bytes as f64 * passes as f64 / seconds / (1024.0 * 1024.0 * 1024.0)
}

struct Cuda {
    lib: Library,
}

impl Cuda {
    fn load() -> Result<Self, StressError> {
        let mut errs = Vec::new();
        for name in ["libcuda.so.1", "libcuda.so"] {
            // SAFETY: loading the NVIDIA driver library runs its initializers, which is what any
            // CUDA program does; no Rust invariants depend on it.
            match unsafe { Library::new(name) } {
                Ok(lib) => return Ok(Cuda { lib }),
                Err(e) => errs.push(format!("{name}: {e}")),
            }
        }
        Err(StressError::Unavailable(errs.join("; ")))
    }

    fn sym<T>(&self, name: &'static str) -> Result<Symbol<'_, T>, StressError> {
        // SAFETY: every symbol is looked up with the C signature the CUDA driver API documents.
        unsafe { self.lib.get(name.as_bytes()) }
            .map_err(|e| StressError::Unavailable(format!("{name}: {e}")))
    }

    fn check(&self, call: &'static str, r: CuResult) -> Result<(), StressError> {
        if r == 0 {
            return Ok(());
        }
        let mut msg = format!("CUresult {r}");
        if let Ok(f) = self.sym::<unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult>(
            "cuGetErrorString",
        ) {
            let mut p: *const c_char = std::ptr::null();
            // SAFETY: cuGetErrorString writes a pointer to a static NUL-terminated string.
            if unsafe { f(r, &mut p) } == 0 && !p.is_null() {
                msg = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
            }
        }
        Err(StressError::Cuda { call, message: msg })
    }
}

/// Runs the test on the CUDA device whose UUID is `uuid`. `during` is called once while the
/// memory is allocated and filled (e.g. to read NVML's used memory).
pub fn run(
    uuid: &str,
    bytes: u64,
    passes: u32,
    during: impl FnOnce() -> Option<u64>,
) -> Result<StressReport, StressError> {
    let cuda = Cuda::load()?;
    let cu_init = cuda.sym::<unsafe extern "C" fn(c_uint) -> CuResult>("cuInit")?;
    let count_fn = cuda.sym::<unsafe extern "C" fn(*mut c_int) -> CuResult>("cuDeviceGetCount")?;
    let get_dev =
        cuda.sym::<unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult>("cuDeviceGet")?;
    let get_uuid =
        cuda.sym::<unsafe extern "C" fn(*mut [u8; 16], CuDevice) -> CuResult>("cuDeviceGetUuid")?;
    let retain = cuda.sym::<unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult>(
        "cuDevicePrimaryCtxRetain",
    )?;
    let release =
        cuda.sym::<unsafe extern "C" fn(CuDevice) -> CuResult>("cuDevicePrimaryCtxRelease_v2")?;
    let set_current = cuda.sym::<unsafe extern "C" fn(CuContext) -> CuResult>("cuCtxSetCurrent")?;
    let alloc =
        cuda.sym::<unsafe extern "C" fn(*mut CuDevicePtr, usize) -> CuResult>("cuMemAlloc_v2")?;
    let free = cuda.sym::<unsafe extern "C" fn(CuDevicePtr) -> CuResult>("cuMemFree_v2")?;
    let memset =
        cuda.sym::<unsafe extern "C" fn(CuDevicePtr, u8, usize) -> CuResult>("cuMemsetD8_v2")?;
    let sync = cuda.sym::<unsafe extern "C" fn() -> CuResult>("cuCtxSynchronize")?;
    let dtoh = cuda.sym::<unsafe extern "C" fn(*mut c_void, CuDevicePtr, usize) -> CuResult>(
        "cuMemcpyDtoH_v2",
    )?;

    let size = usize::try_from(bytes)
        .map_err(|_| StressError::Unavailable("size does not fit in memory".into()))?;
    // SAFETY (all calls below): arguments follow the CUDA driver API; out-pointers point at
    // live locals; the device pointer is used only between cuMemAlloc and cuMemFree.
    unsafe {
        cuda.check("cuInit", cu_init(0))?;
        let mut n: c_int = 0;
        cuda.check("cuDeviceGetCount", count_fn(&mut n))?;
        let mut device = None;
        for ordinal in 0..n {
            let mut d: CuDevice = 0;
            cuda.check("cuDeviceGet", get_dev(&mut d, ordinal))?;
            let mut u = [0u8; 16];
            cuda.check("cuDeviceGetUuid", get_uuid(&mut u, d))?;
            if format_gpu_uuid(&u).eq_ignore_ascii_case(uuid) {
                device = Some(d);
                break;
            }
        }
        let dev = device.ok_or_else(|| StressError::NoSuchDevice(uuid.into()))?;
        let mut ctx: CuContext = std::ptr::null_mut();
        cuda.check("cuDevicePrimaryCtxRetain", retain(&mut ctx, dev))?;
        let result = (|| {
            cuda.check("cuCtxSetCurrent", set_current(ctx))?;
            let mut ptr: CuDevicePtr = 0;
            cuda.check("cuMemAlloc", alloc(&mut ptr, size))?;
            let measured = (|| {
                let passes = passes.max(1);
                let t = Instant::now();
                let mut pattern = 0u8;
                for p in 0..passes {
                    pattern = 0xA5 ^ (p as u8);
                    cuda.check("cuMemsetD8", memset(ptr, pattern, size))?;
                }
                cuda.check("cuCtxSynchronize", sync())?;
                let secs = t.elapsed().as_secs_f64();
                let seen = during();
                // Read back 16 samples of 4 KiB spread over the allocation.
                let chunk = size.min(4096);
                let mut buf = vec![0u8; chunk];
                let mut verified = chunk > 0;
                for i in 0..16u64 {
                    let off = if size > chunk {
                        (size - chunk) as u64 * i / 15
                    } else {
                        0
                    };
                    cuda.check(
                        "cuMemcpyDtoH",
                        dtoh(buf.as_mut_ptr().cast(), ptr + off, chunk),
                    )?;
                    verified &= buf.iter().all(|b| *b == pattern);
                }
                Ok(StressReport {
                    allocated_bytes: bytes,
                    passes,
                    fill_seconds: secs,
                    bandwidth_gib_per_s: bandwidth_gib_per_s(bytes, passes, secs),
                    verified,
                    during: seen,
                })
            })();
            let freed = cuda.check("cuMemFree", free(ptr));
            let report = measured?;
            freed.map(|_| report)
        })();
        let _ = release(dev);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_matches_nvml_format() {
        let b = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        assert_eq!(
            format_gpu_uuid(&b),
            "GPU-12345678-9abc-def0-0123-456789abcdef"
        );
    }

    #[test]
    fn bandwidth_is_bytes_over_time() {
        assert_eq!(bandwidth_gib_per_s(1 << 30, 4, 2.0), 2.0);
        assert_eq!(bandwidth_gib_per_s(1 << 30, 1, 0.0), 0.0);
    }

    #[test]
    fn without_a_driver_the_test_is_unavailable_not_a_crash() {
        // On a machine without libcuda this must say Unavailable; with one and a bogus UUID,
        // it must say so.
        match run(
            "GPU-00000000-0000-0000-0000-000000000000",
            1 << 20,
            1,
            || None,
        ) {
            Err(StressError::Unavailable(_))
            | Err(StressError::NoSuchDevice(_))
            | Err(StressError::Cuda { .. }) => {}
            Ok(r) => panic!("a bogus UUID cannot be stressed: {r:?}"),
        }
    }
}
