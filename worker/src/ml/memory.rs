//! The C allocator's settings for libtorch.
//!
//! libtorch takes every step's activations and gradients from `malloc` and gives them back by
//! the end of the step. Under glibc's defaults blocks of a few megabytes come from a fresh
//! `mmap` each time (or from a heap top that `free` trimmed back to the kernel), so every step
//! pays again for page faults and for the kernel zeroing those pages: with one libtorch thread
//! the CNN of `toucan-worker train` spent a third of its time in the kernel. Served from the
//! heap and never trimmed below 1 GiB of free memory, the same blocks are simply reused, and
//! the kernel's share falls to a few percent.
//!
//! Settings a user gives the allocator (`GLIBC_TUNABLES` with `glibc.malloc.*`, or the
//! `MALLOC_*_` variables) are left as they are.

/// Blocks up to this size come from the heap (glibc's largest allowed threshold).
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the heap's top is returned to the kernel beyond this.
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Applies the settings above to this process's allocator, unless the user set their own.
/// Does nothing where the C library is not glibc.
#[allow(unsafe_code)]
pub fn keep_freed_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let user_set = tunables.contains("glibc.malloc.")
            || std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_"));
        if user_set {
            return;
        }
        // SAFETY: mallopt only changes the allocator's parameters, under its own lock.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}
