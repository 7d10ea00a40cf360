//! Host buffers for model weights. On Linux, large ones ask for transparent huge pages (2 MiB)
//! before they are first written: decoding streams every weight once per token, and with 4 KiB
//! pages a TLB miss every 4 KiB costs a quarter to a third of the achievable memory bandwidth
//! (README, "Speed").

/// Buffers smaller than this gain nothing from huge pages.
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// An empty `Vec<f32>` with room for `len` values, backed by huge pages where the OS allows.
pub fn f32_buffer(len: usize) -> Vec<f32> {
    host_buffer(len)
}

/// An empty `Vec<T>` with room for `len` values, backed by huge pages where the OS allows.
pub fn host_buffer<T>(len: usize) -> Vec<T> {
    let buffer = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    advise_huge_pages(buffer.as_ptr() as usize, len * std::mem::size_of::<T>());
    buffer
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(start: usize, bytes: usize) {
    const HUGE_PAGE: usize = 2 << 20;
    if bytes < HUGE_PAGE_MIN_BYTES {
        return;
    }
    // Only whole huge pages inside the allocation; the ends stay on normal pages.
    let first = start.next_multiple_of(HUGE_PAGE);
    let end = (start + bytes) / HUGE_PAGE * HUGE_PAGE;
    if end > first {
        // SAFETY: the range lies inside an allocation we own; MADV_HUGEPAGE is only a hint and
        // changes no contents. A kernel without THP answers EINVAL, which is fine to ignore.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn buffers_have_the_requested_capacity() {
        for len in [0, 10, 3 << 20] {
            let mut buffer = super::f32_buffer(len);
            assert!(buffer.capacity() >= len);
            buffer.extend((0..len).map(|i| i as f32));
            assert_eq!(buffer.len(), len);
            assert_eq!(buffer.last().copied(), len.checked_sub(1).map(|i| i as f32));
        }
    }
}
