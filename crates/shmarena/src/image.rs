//! Arena image files: saving an arena as one. Loading one (`Arena::load_file`) is in `open.rs`.

use std::io::Write;
use std::path::Path;

use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::os;

impl Arena {
    /// Writes the arena's bytes to `path` atomically: to a temporary file beside it (mode
    /// 0600), synced, then renamed over `path`. A reader of `path` sees the old image or the new
    /// one, never a part. [`Arena::load_file`] reads it back.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let what = format!("file {}", path.display());
        let file_name = path.file_name().ok_or_else(|| Error::InvalidName {
            name: path.display().to_string(),
            reason: "the path has no file name".into(),
        })?;
        let id = os::random_id().map_err(|e| Error::os("drawing a random name", &what, e))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(
            ".tmp-{:02x}{:02x}{:02x}{:02x}",
            id[0], id[1], id[2], id[3]
        ));
        let tmp = path.with_file_name(tmp_name);
        let write = || -> std::io::Result<()> {
            let mut f = os::create_excl(&tmp)?;
            f.write_all(self.as_bytes())?;
            f.sync_all()?;
            os::rename_replace(&tmp, path)
        };
        write().map_err(|e| {
            let _ = os::unlink(&tmp);
            Error::os(format!("saving {what}"), &what, e)
        })
    }
}
