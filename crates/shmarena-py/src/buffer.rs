//! A read-only buffer-protocol object over a byte range of a sealed arena: what numpy arrays
//! read from. This file holds the buffer-protocol FFI's `unsafe` (the only others are handle.rs's
//! call that accepts a pickle's trust token and arena.rs's in-place opens behind
//! `no_concurrent_writers=True`).

use std::ffi::{c_int, c_void};

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

/// Bytes `start..start + len` of an arena, exported read-only through the buffer protocol.
/// numpy arrays made with `numpy.frombuffer` hold this object (through `.base`), and it holds
/// the arena, so the mapping outlives every array over it.
#[pyclass(frozen, module = "shmarena._native", name = "ArenaBuffer")]
pub(crate) struct ArenaBuffer {
    // INVARIANTS: `start..start + len` lies inside `arena.as_bytes()` (checked in `new`); the
    // arena's mapping is read-only and never remapped while `arena` lives.
    arena: shmarena::Arena,
    start: usize,
    len: usize,
}

impl ArenaBuffer {
    /// A buffer over `start..start + len`, or `None` if that range is not inside the arena.
    pub(crate) fn new(arena: shmarena::Arena, start: usize, len: usize) -> Option<ArenaBuffer> {
        let end = start.checked_add(len)?;
        arena.as_bytes().get(start..end)?;
        Some(ArenaBuffer { arena, start, len })
    }

    fn bytes(&self) -> &[u8] {
        self.arena
            .as_bytes()
            .get(self.start..self.start + self.len)
            .unwrap_or(&[])
    }
}

#[pymethods]
impl ArenaBuffer {
    /// The buffer protocol's `bf_getbuffer`: a read-only, contiguous byte buffer.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err(
                "shmarena: a NULL Py_buffer was passed",
            ));
        }
        let bytes = slf.get().bytes();
        let len = ffi::Py_ssize_t::try_from(bytes.len())
            .map_err(|_| PyBufferError::new_err("shmarena: buffer too large"))?;
        // SAFETY:
        // - `view` is non-NULL (checked above) and points to a `Py_buffer` that the caller of
        //   `bf_getbuffer` owns and asks us to fill, as the buffer protocol requires.
        // - `slf.as_ptr()` is a live object (we hold `slf`); PyBuffer_FillInfo takes a new
        //   reference to it in `view->obj`, which keeps the arena, and so the mapping, alive until
        //   the consumer calls PyBuffer_Release.
        // - `bytes` lies inside that read-only mapping, which is never written or remapped while
        //   the arena lives. We pass `readonly = 1`, so PyBuffer_FillInfo refuses PyBUF_WRITABLE
        //   requests with BufferError, and the `*mut` cast is only the C signature: no consumer
        //   that respects `readonly` writes through it (a write would fault: the pages are
        //   mapped PROT_READ).
        // - The GIL is held (we have a `Bound`).
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                bytes.as_ptr().cast_mut().cast::<c_void>(),
                len,
                1,
                flags,
            )
        };
        if rc == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    /// The buffer protocol's `bf_releasebuffer`: nothing to free (the mapping is shared).
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}

    /// Length in bytes.
    fn __len__(&self) -> usize {
        self.len
    }
}
