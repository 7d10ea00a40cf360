//! Reading parquet files safely: the one place that opens them (FineWeb shards, labelled sets,
//! instruction data, `hf:` data sets). The parquet crate asserts (panics) on some corrupt
//! metadata instead of returning an error, so a file is checked before it is read and any other
//! panic of the reader becomes an error naming the file.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Opens `path` for reading record batches, its column chunks checked ([`check_column_chunks`]).
pub fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let context = || format!("cannot read {}", path.display());
    let opened = File::open(path).with_context(context)?;
    let file_len = opened.metadata().with_context(context)?.len();
    let builder = guard(path, || ParquetRecordBatchReaderBuilder::try_new(opened).with_context(context))?;
    check_column_chunks(path, builder.metadata(), file_len)?;
    Ok(builder)
}

/// The projection on the top-level columns `names` (in the file's order), or an error naming the
/// file, the missing column and the columns it has.
pub fn project(path: &Path, builder: &ParquetRecordBatchReaderBuilder<File>, names: &[&str]) -> Result<ProjectionMask> {
    let schema = builder.schema();
    let indices = names
        .iter()
        .map(|name| {
            schema.index_of(name).map_err(|_| {
                let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                anyhow!("{}: no `{name}` column (it has: {})", path.display(), columns.join(", "))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ProjectionMask::roots(builder.parquet_schema(), indices))
}

/// Runs `read` (which reads `path`), turning a panic of the parquet reader into an error.
pub fn guard<T>(path: &Path, read: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
        Ok(result) => result,
        Err(panic) => {
            let reason = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
            bail!("{}: not a readable parquet file (the parquet reader failed: {reason})", path.display());
        }
    }
}

/// Every column chunk must lie inside the file (the parquet crate asserts that offsets and sizes
/// are not negative, and panics on a file where they are).
fn check_column_chunks(path: &Path, metadata: &parquet::file::metadata::ParquetMetaData, file_len: u64) -> Result<()> {
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for (c, column) in group.columns().iter().enumerate() {
            let start = column.dictionary_page_offset().unwrap_or_else(|| column.data_page_offset());
            let len = column.compressed_size();
            let inside = start >= 0 && len >= 0 && (start as u64).checked_add(len as u64).is_some_and(|end| end <= file_len);
            ensure!(
                inside,
                "{}: corrupt parquet metadata: row group {g}, column {c} claims bytes {start}..+{len} of a {file_len}-byte file",
                path.display()
            );
        }
    }
    Ok(())
}

/// A string column of a batch, whichever Arrow string type the file uses.
pub enum Texts<'a> {
    Utf8(&'a arrow_array::StringArray),
    Large(&'a arrow_array::LargeStringArray),
    View(&'a arrow_array::StringViewArray),
}

impl<'a> Texts<'a> {
    pub fn of(array: &'a ArrayRef) -> Result<Self> {
        if let Some(a) = array.as_string_opt::<i32>() {
            return Ok(Self::Utf8(a));
        }
        if let Some(a) = array.as_string_opt::<i64>() {
            return Ok(Self::Large(a));
        }
        if let Some(a) = array.as_string_view_opt() {
            return Ok(Self::View(a));
        }
        bail!("expected strings, found {}", array.data_type())
    }

    /// Row `i`, `None` when null.
    pub fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Self::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            Self::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Self::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}
