//! `_native.inspect_main`: the arena-inspect commands for pip users (`python -m shmarena`,
//! `shmarena-inspect`), run by arena-inspect's own library, so the output and the exit status
//! are the binary's.

use std::ffi::OsString;
use std::io::{self, Write};

use pyo3::exceptions::{PyBrokenPipeError, PyException};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A `Write` over a Python binary stream (an object with `write(bytes)` and maybe `flush()`).
/// A Python exception becomes an `io::Error` for arena-inspect (a `BrokenPipeError` one of kind
/// `BrokenPipe`, which arena-inspect treats as the binary does); the first exception that is not
/// an `Exception` (`KeyboardInterrupt`, `SystemExit`) is kept to raise once the command returns.
struct PyStream<'py> {
    stream: Bound<'py, PyAny>,
    interrupt: Option<PyErr>,
}

impl PyStream<'_> {
    fn io_error(&mut self, err: PyErr) -> io::Error {
        let py = self.stream.py();
        if err.is_instance_of::<PyBrokenPipeError>(py) {
            return io::Error::new(io::ErrorKind::BrokenPipe, err.to_string());
        }
        let text = err.to_string();
        if !err.is_instance_of::<PyException>(py) && self.interrupt.is_none() {
            self.interrupt = Some(err);
        }
        io::Error::other(text)
    }
}

impl Write for PyStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bytes = PyBytes::new(self.stream.py(), buf);
        match self.stream.call_method1("write", (bytes,)) {
            // A raw stream may take fewer bytes than offered; a buffered one returns the length
            // or, for some file-likes, None (all written).
            Ok(n) => Ok(n.extract::<usize>().map_or(buf.len(), |n| n.min(buf.len()))),
            Err(e) => Err(self.io_error(e)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.stream.hasattr("flush").unwrap_or(false) {
            return Ok(());
        }
        match self.stream.call_method0("flush") {
            Ok(_) => Ok(()),
            Err(e) => Err(self.io_error(e)),
        }
    }
}

/// Runs the arena-inspect command line `argv` (`argv[0]` is the program name shown in usage
/// text) and returns its exit status: 0 ok; 1 the arena is corrupt, truncated, not an arena or
/// (verify) not sealed; 2 usage error, not found, permission denied or another error.
///
/// With no streams, output goes straight to file descriptors 1 and 2, as the binary's does, and
/// the GIL is released while the command runs (flush `sys.stdout` first). With `stdout` or
/// `stderr` given (binary streams), that output is written to them instead.
#[pyfunction]
#[pyo3(signature = (argv, stdout = None, stderr = None))]
pub(crate) fn inspect_main(
    py: Python<'_>,
    argv: Vec<OsString>,
    stdout: Option<Bound<'_, PyAny>>,
    stderr: Option<Bound<'_, PyAny>>,
) -> PyResult<i32> {
    if stdout.is_none() && stderr.is_none() {
        return Ok(py.detach(move || arena_inspect::run(argv)));
    }
    let mut out = stdout.map(|stream| PyStream {
        stream,
        interrupt: None,
    });
    let mut err = stderr.map(|stream| PyStream {
        stream,
        interrupt: None,
    });
    let (mut fd_out, mut fd_err) = (io::stdout(), io::stderr());
    let code = arena_inspect::run_with_output(
        argv,
        match out.as_mut() {
            Some(s) => s as &mut dyn Write,
            None => &mut fd_out,
        },
        match err.as_mut() {
            Some(s) => s as &mut dyn Write,
            None => &mut fd_err,
        },
    );
    let _ = fd_out.flush();
    for stream in [out, err].into_iter().flatten() {
        if let Some(e) = stream.interrupt {
            return Err(e);
        }
    }
    Ok(code)
}
