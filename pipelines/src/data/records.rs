//! The records of a data file, whatever its format, as JSON objects: the one reader behind
//! labelled sets and instruction data. CSV / TSV (a header row; every field a string), JSONL, a
//! JSON list of objects, or parquet (read in record batches, only the columns asked for; numbers,
//! lists and structs keep their JSON shape, so a parquet `messages` column is a list of objects).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Map, Value};

use super::{excerpt, json_kind, parquet_file};

/// The extensions [`read_records`] reads, in the order a directory's split files are looked for.
pub const EXTENSIONS: [&str; 5] = ["parquet", "jsonl", "json", "csv", "tsv"];
/// Rows a parquet record batch holds.
const BATCH_ROWS: usize = 4096;

/// One record: a JSON object, the file it is in, and where in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub file: Arc<Path>,
    /// `line N` (CSV, TSV, JSONL; the header is line 1), `record N` (a JSON list, from 1),
    /// `row N` (parquet, from 1).
    pub at: String,
    pub value: Value,
}

impl Record {
    /// `FILE: line N`, for error messages.
    pub fn location(&self) -> String {
        format!("{}: {}", self.file.display(), self.at)
    }

    /// The record as an object, or an error naming it.
    pub fn object(&self) -> Result<&Map<String, Value>> {
        self.value.as_object().with_context(|| format!("{}: expected an object, got {}", self.location(), json_kind(&self.value)))
    }
}

/// Whether `path`'s extension is one [`read_records`] reads.
pub fn is_data_file(path: &Path) -> bool {
    extension(path).is_some_and(|e| EXTENSIONS.contains(&e.as_str()))
}

fn extension(path: &Path) -> Option<String> {
    path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase)
}

/// Reads every record of `path`, its format from the extension. `columns`: the ones the caller
/// needs; a CSV or parquet file without one of them is an error naming it (parquet reads only
/// those), JSON files are not checked here (their records may differ).
pub fn read_records(path: &Path, columns: Option<&[String]>) -> Result<Vec<Record>> {
    let file: Arc<Path> = Arc::from(path);
    let records = match extension(path).as_deref() {
        Some("csv") => read_delimited(file, b',', columns),
        Some("tsv") => read_delimited(file, b'\t', columns),
        Some("jsonl") => read_jsonl(file),
        Some("json") => read_json_list(file),
        Some("parquet") => read_parquet(file, columns),
        _ => bail!("{}: unknown format: expected a .csv, .tsv, .jsonl, .json or .parquet file", path.display()),
    }?;
    ensure!(!records.is_empty(), "{}: no records", path.display());
    Ok(records)
}

fn read_delimited(file: Arc<Path>, delimiter: u8, columns: Option<&[String]>) -> Result<Vec<Record>> {
    let path = &*file;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_path(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let header: Vec<String> = reader.headers().with_context(|| format!("{}: cannot read the header", path.display()))?.iter().map(str::to_string).collect();
    for name in columns.unwrap_or_default() {
        ensure!(
            header.contains(name),
            "{}: line 1: no column `{name}` (the header has {})",
            path.display(),
            excerpt(&header.join(", "), 200)
        );
    }
    let mut records = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| {
            let line = e.position().map(|p| format!("line {}: ", p.line())).unwrap_or_default();
            anyhow::anyhow!("{}: {line}{e}", path.display())
        })?;
        let at = format!("line {}", row.position().map_or(0, |p| p.line()));
        let value = header.iter().zip(row.iter()).map(|(name, field)| (name.clone(), Value::String(field.to_string()))).collect();
        records.push(Record { file: file.clone(), at, value: Value::Object(value) });
    }
    Ok(records)
}

/// A line of a JSON-lines file that is not UTF-8 or not JSON: its 1-based number and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonlError {
    pub line: usize,
    pub message: String,
}

/// The values of a JSON-lines file's bytes, one a line, in order, with their 1-based line numbers:
/// blank lines are skipped (and counted), a UTF-8 BOM at the start is ignored, a line that is not
/// UTF-8 or not JSON is an error naming it. The one JSONL parser behind [`read_records`] and the
/// HellaSwag files.
pub fn jsonl_values(bytes: &[u8]) -> impl Iterator<Item = std::result::Result<(usize, Value), JsonlError>> + '_ {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    bytes.split(|&b| b == b'\n').enumerate().filter_map(|(index, raw)| {
        let line = index + 1;
        let error = |message: String| Some(Err(JsonlError { line, message }));
        let text = match std::str::from_utf8(raw) {
            Ok(text) => text,
            Err(e) => return error(format!("not UTF-8 ({e})")),
        };
        if text.trim().is_empty() {
            return None;
        }
        match serde_json::from_str(text) {
            Ok(value) => Some(Ok((line, value))),
            Err(e) => error(format!("not valid JSON: {e}")),
        }
    })
}

fn read_jsonl(file: Arc<Path>) -> Result<Vec<Record>> {
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    jsonl_values(&bytes)
        .map(|line| {
            let (line, value) = line.map_err(|e| anyhow::anyhow!("{}: line {}: {}", file.display(), e.line, e.message))?;
            Ok(Record { file: file.clone(), at: format!("line {line}"), value })
        })
        .collect()
}

fn read_json_list(file: Arc<Path>) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let list = super::instruction::parse_json_list(&text, &file)?;
    Ok(list.into_iter().enumerate().map(|(i, value)| Record { file: file.clone(), at: format!("record {}", i + 1), value }).collect())
}

/// Parquet rows through arrow-json's encoder (nulls kept as `null`), batch by batch.
fn read_parquet(file: Arc<Path>, columns: Option<&[String]>) -> Result<Vec<Record>> {
    let path = &*file;
    parquet_file::guard(path, || {
        let context = || format!("cannot read {}", path.display());
        let mut builder = parquet_file::open(path)?;
        if let Some(columns) = columns {
            let names: Vec<&str> = columns.iter().map(String::as_str).collect();
            let mask = parquet_file::project(path, &builder, &names)?;
            builder = builder.with_projection(mask);
        }
        let reader = builder.with_batch_size(BATCH_ROWS).build().with_context(context)?;
        let mut records = Vec::new();
        for batch in reader {
            let batch = batch.with_context(context)?;
            let mut writer = arrow_json::WriterBuilder::new().with_explicit_nulls(true).build::<_, arrow_json::writer::LineDelimited>(Vec::new());
            writer.write(&batch).with_context(|| format!("{}: a column has a type JSON cannot hold", path.display()))?;
            writer.finish().with_context(context)?;
            let lines = writer.into_inner();
            for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let at = format!("row {}", records.len() + 1);
                let value: Value = serde_json::from_slice(line).with_context(|| format!("{}: {at}: cannot convert the row", path.display()))?;
                records.push(Record { file: file.clone(), at, value });
            }
        }
        Ok(records)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc as StdArc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};

    use super::*;

    /// Writes `columns` (name, values) as a parquet file, integers where every value parses.
    pub(crate) fn write_parquet(path: &Path, columns: &[(&str, Vec<String>)]) {
        let arrays: Vec<(String, ArrayRef)> = columns
            .iter()
            .map(|(name, values)| {
                let array: ArrayRef = match values.iter().map(|v| v.parse::<i64>()).collect::<std::result::Result<Vec<_>, _>>() {
                    Ok(numbers) => StdArc::new(Int64Array::from(numbers)),
                    Err(_) => StdArc::new(StringArray::from(values.clone())),
                };
                (name.to_string(), array)
            })
            .collect();
        let batch = RecordBatch::try_from_iter(arrays).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    #[test]
    fn every_format_gives_objects_with_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("a.csv");
        std::fs::write(&csv, "text,label\n\"a, b\",1\nc,2\n").unwrap();
        let parquet = dir.path().join("a.parquet");
        write_parquet(&parquet, &[("id", vec!["7".into(), "8".into()]), ("text", vec!["a, b".into(), "c".into()]), ("label", vec!["1".into(), "2".into()])]);
        let records = read_records(&csv, Some(&["text".into()])).unwrap();
        assert_eq!(records[1].value, serde_json::json!({"text": "c", "label": "2"}));
        assert_eq!(records[1].location(), format!("{}: line 3", csv.display()));
        let records = read_records(&parquet, Some(&["text".into(), "label".into()])).unwrap();
        assert_eq!(records.iter().map(|r| r.value.clone()).collect::<Vec<_>>(), [serde_json::json!({"text": "a, b", "label": 1}), serde_json::json!({"text": "c", "label": 2})]);
        assert_eq!(records[1].at, "row 2");
        assert_eq!(read_records(&parquet, None).unwrap()[0].value["id"], 7, "no projection: every column");
        let err = read_records(&parquet, Some(&["body".into()])).unwrap_err().to_string();
        assert!(err.contains("a.parquet") && err.contains("no `body` column") && err.contains("id, text, label"), "{err}");
        let err = read_records(&csv, Some(&["body".into()])).unwrap_err().to_string();
        assert!(err.contains("a.csv: line 1: no column `body`"), "{err}");
        let broken = dir.path().join("b.parquet");
        std::fs::write(&broken, b"PAR1 not really").unwrap();
        let err = read_records(&broken, None).unwrap_err().to_string();
        assert!(err.contains("b.parquet"), "{err}");
    }
}
