//! FineWeb-Edu token shards against build-nanogpt's `fineweb.py`, and the shard reader/loader.
//!
//! `tests/fixtures/fineweb_edu_shards.json` holds what `fineweb.py` (run by
//! `scripts/reference/fineweb_shards.py --fixture`, tiktoken 0.14 `gpt2`, numpy 2.4 `np.save`)
//! wrote for `tests/fixtures/data/fineweb_edu_sample.parquet`: file names, sizes and sha256 of the
//! shards at three settings, and the token count of every document.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common_http::fixtures;
use pipelines::data::fineweb::{self, MANIFEST_FILE, Manifest, PrepareOptions, PrepareReport, Source, StopReason};
use pipelines::data::shards::{
    self, LoaderState, ShardError, ShardLoader, Split, TokenFile, TokenType, npy_header, read_tokens, shard_file_name, sha256_file, write_tokens,
};
use serde_json::Value;

const EOT: u32 = 50256;

fn sample_parquet() -> PathBuf {
    fixtures().join("data/fineweb_edu_sample.parquet")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("fineweb_edu_shards.json")).unwrap()).unwrap()
}

/// The reference run with this shard size and document limit.
fn reference_run(shard_size: u64, max_docs: Option<u64>) -> Value {
    let reference = reference();
    let runs = reference["runs"].as_array().unwrap();
    runs.iter().find(|r| r["shard_size"] == shard_size && r["max_docs"].as_u64() == max_docs).unwrap().clone()
}

fn document_tokens() -> Vec<u64> {
    reference()["document_tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
}

fn options(shard_size: usize) -> PrepareOptions {
    PrepareOptions { shard_size, workers: Some(2), ..PrepareOptions::default() }
}

fn prepare(input: &Path, out: &Path, options: &PrepareOptions) -> anyhow::Result<PrepareReport> {
    fineweb::prepare_fineweb(&Source::Local(input.to_path_buf()), out, options)
}

/// (name, bytes, sha256) of the `.npy` files in `dir`, by name.
fn npy_files(dir: &Path) -> Vec<(String, u64, String)> {
    let mut files: Vec<(String, u64, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "npy"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::metadata(&p).unwrap().len(), sha256_file(&p).unwrap()))
        .collect();
    files.sort();
    files
}

fn expected_files(run: &Value) -> Vec<(String, u64, String)> {
    let mut files: Vec<(String, u64, String)> = run["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["bytes"].as_u64().unwrap(), s["sha256"].as_str().unwrap().to_string()))
        .collect();
    files.sort();
    files
}

/// All tokens of the shards in shard order.
fn all_tokens(dir: &Path, shards: usize) -> Vec<u32> {
    (0..shards).flat_map(|i| read_tokens(&dir.join(shard_file_name("edufineweb", i))).unwrap()).collect()
}

#[test]
fn shards_are_byte_identical_to_fineweb_py() {
    for (shard_size, max_docs, workers) in [(25_000u64, None, 2), (25_000, Some(120), 1), (15_736, Some(120), 2)] {
        let run = reference_run(shard_size, max_docs);
        let out = tempfile::tempdir().unwrap();
        let options = PrepareOptions { max_docs, workers: Some(workers), ..options(shard_size as usize) };
        let report = prepare(&sample_parquet(), out.path(), &options).unwrap();
        assert_eq!(npy_files(out.path()), expected_files(&run), "shard size {shard_size}, max docs {max_docs:?}");
        assert_eq!(report.documents, run["documents"].as_u64().unwrap());
        assert_eq!(report.tokens, run["tokens"].as_u64().unwrap());
        assert_eq!(report.tokens_processed, report.tokens);
        assert_eq!(report.stop, Some(if max_docs.is_some() { StopReason::MaxDocs } else { StopReason::EndOfInput }));
        assert_eq!((report.reused_shards, report.written_shards, report.workers), (0, run["shards"].as_array().unwrap().len(), workers));
        // The manifest lists the same shards with the same hashes.
        let manifest = Manifest::load(&out.path().join(MANIFEST_FILE)).unwrap();
        assert!(manifest.finished);
        let listed: Vec<(String, u64, String)> = manifest.shards.iter().map(|s| (s.name.clone(), s.bytes, s.sha256.clone())).collect();
        let mut listed_sorted = listed.clone();
        listed_sorted.sort();
        assert_eq!(listed_sorted, expected_files(&run));
    }
}

#[test]
fn every_document_is_eot_then_its_gpt2_tokens() {
    let out = tempfile::tempdir().unwrap();
    let report = prepare(&sample_parquet(), out.path(), &options(25_000)).unwrap();
    // 300 documents, 118,414 text tokens (the parquet's token_count column) + one <|endoftext|> each.
    assert_eq!((report.documents, report.tokens), (300, 118_714));
    assert_eq!(report.shards.iter().map(|s| s.tokens).collect::<Vec<_>>(), [25_000, 25_000, 25_000, 25_000, 18_714]);
    let tokens = all_tokens(out.path(), 5);
    assert_eq!(tokens.len(), 118_714);
    assert_eq!(tokens[0], EOT);
    // Split at every <|endoftext|> (encode_ordinary never produces it): the documents' lengths.
    let lengths: Vec<u64> = tokens.split(|&t| t == EOT).skip(1).map(|d| d.len() as u64 + 1).collect();
    assert_eq!(lengths, document_tokens(), "tiktoken's per-document token counts");
    assert_eq!(lengths.iter().map(|l| l - 1).collect::<Vec<_>>(), parquet_token_counts());
    // The first document, decoded, is the first row's text.
    let first_end = tokens[1..].iter().position(|&t| t == EOT).unwrap() + 1;
    let ids: Vec<u32> = tokens[1..first_end].to_vec();
    assert_eq!(gpt::Tokenizer::gpt2().decode(&ids).unwrap(), first_text());
}

/// The fixture's `token_count` column (tiktoken `gpt2`, no <|endoftext|>), read independently.
fn parquet_token_counts() -> Vec<u64> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(sample_parquet()).unwrap()).unwrap();
    let mut counts = Vec::new();
    for row in reader.get_row_iter(None).unwrap() {
        let row = row.unwrap();
        let (_, value) = row.get_column_iter().find(|(name, _)| name.as_str() == "token_count").unwrap();
        counts.push(value.to_string().parse().unwrap());
    }
    assert_eq!(counts.iter().sum::<u64>(), 118_414);
    counts
}

fn first_text() -> String {
    texts(1).remove(0)
}

/// The first `n` rows' `text`, read independently of the code under test.
fn texts(n: usize) -> Vec<String> {
    column_strings("text", n)
}

/// The first `n` rows of string column `column`, read independently of the code under test.
fn column_strings(column: &str, n: usize) -> Vec<String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(sample_parquet()).unwrap()).unwrap();
    let rows = reader.get_row_iter(None).unwrap().take(n);
    rows.map(|row| {
        let row = row.unwrap();
        let (_, value) = row.get_column_iter().find(|(name, _)| name.as_str() == column).unwrap();
        match value {
            parquet::record::Field::Str(s) => s.clone(),
            other => panic!("{other:?}"),
        }
    })
    .collect()
}

/// Another column than `text` (`--text-column`): its strings are the documents, and the manifest
/// says which; a column the files lack is an error naming the file and the columns it has.
#[test]
fn another_text_column_makes_the_documents() {
    let out = tempfile::tempdir().unwrap();
    let urls = PrepareOptions { max_docs: Some(30), text_column: "url".into(), ..options(1_000) };
    let report = prepare(&sample_parquet(), out.path(), &urls).unwrap();
    let gpt2 = gpt::Tokenizer::gpt2();
    let expected: Vec<u32> = column_strings("url", 30).iter().flat_map(|url| std::iter::once(EOT).chain(gpt2.encode_ordinary(url))).collect();
    assert_eq!(all_tokens(out.path(), report.shards.len()), expected);
    assert_eq!(Manifest::load(&out.path().join(MANIFEST_FILE)).unwrap().settings.text_column, "url");
    // The same directory with the default column: other settings.
    let error = prepare(&sample_parquet(), out.path(), &PrepareOptions { max_docs: Some(30), ..options(1_000) }).unwrap_err();
    assert!(format!("{error:#}").contains("text column url vs text"), "{error:#}");
    let error = prepare(&sample_parquet(), tempfile::tempdir().unwrap().path(), &PrepareOptions { text_column: "body".into(), ..options(1_000) }).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("fineweb_edu_sample.parquet: no `body` column (it has: text, id, dump, url"), "{message}");
}

/// JSONL, JSON, CSV and plain-text inputs make the shards the same documents make from parquet,
/// byte for byte; a run resumed or extended part-way through a JSONL file goes on from the right
/// record; a record without the column is an error naming its line.
#[test]
fn jsonl_and_text_files_make_the_shards_parquet_makes() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = texts(40);
    let jsonl = tmp.path().join("docs.jsonl");
    let lines: Vec<String> = docs.iter().map(|t| serde_json::json!({ "id": 1, "text": t }).to_string()).collect();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let from_parquet = tmp.path().join("parquet");
    prepare(&sample_parquet(), &from_parquet, &PrepareOptions { max_docs: Some(40), ..options(3_000) }).unwrap();
    let from_jsonl = tmp.path().join("jsonl");
    // 15 documents first (its full shards are kept), then the rest: the extension starts from the
    // record after the last full shard's end.
    prepare(&jsonl, &from_jsonl, &PrepareOptions { max_docs: Some(15), ..options(3_000) }).unwrap();
    let report = prepare(&jsonl, &from_jsonl, &options(3_000)).unwrap();
    assert!(report.reused_shards > 0, "the first run's full shards are kept");
    assert_eq!(npy_files(&from_jsonl), npy_files(&from_parquet));
    assert_eq!(report.documents, 40);

    // A directory of .txt files: each is one document, in name order.
    let txt = tmp.path().join("txt");
    std::fs::create_dir_all(&txt).unwrap();
    for (i, doc) in docs[..3].iter().enumerate() {
        std::fs::write(txt.join(format!("{}.txt", 3 - i)), doc).unwrap();
    }
    let out = tmp.path().join("from-txt");
    let report = prepare(&txt, &out, &options(100_000)).unwrap();
    let gpt2 = gpt::Tokenizer::gpt2();
    let expected: Vec<u32> = docs[..3].iter().rev().flat_map(|d| std::iter::once(EOT).chain(gpt2.encode_ordinary(d))).collect();
    assert_eq!(all_tokens(&out, report.shards.len()), expected);

    // A record without the column.
    std::fs::write(&jsonl, format!("{}\n{{\"body\": \"x\"}}\n", lines[0])).unwrap();
    let error = prepare(&jsonl, &tmp.path().join("bad"), &options(3_000)).unwrap_err();
    assert!(format!("{error:#}").contains("docs.jsonl: line 2: no `text`"), "{error:#}");
}

/// A Llama 3 tokenizer (the fixture's: 128,256 ids) makes uint32 shards: each document is its
/// `<|begin_of_text|>` and then the tokenizer's ids of its text, and the manifest says whose.
#[test]
fn a_llama_tokenizer_makes_uint32_shards_of_bos_then_its_ids() {
    let llama = gpt::Tokenizer::from_model_dir(&fixtures().join("llama-tiny")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let with_llama = PrepareOptions { max_docs: Some(20), tokenizer: ("llama-tiny".into(), llama.clone()), ..options(5_000) };
    let report = prepare(&sample_parquet(), out.path(), &with_llama).unwrap();
    let manifest = Manifest::load(&out.path().join(MANIFEST_FILE)).unwrap();
    assert_eq!((manifest.settings.tokenizer.as_str(), manifest.settings.token_type), ("llama-tiny", TokenType::Uint32));
    assert_eq!(manifest.settings.tokenizer_fingerprint, fineweb::tokenizer_fingerprint(&llama));
    assert_ne!(manifest.settings.tokenizer_fingerprint, fineweb::tokenizer_fingerprint(&gpt::Tokenizer::gpt2()));
    let tokens = all_tokens(out.path(), report.shards.len());
    let bos = 128_000; // <|begin_of_text|>
    let expected: Vec<u32> = texts(20).iter().flat_map(|text| std::iter::once(bos).chain(llama.encode_ordinary(text))).collect();
    assert_eq!(tokens.len(), expected.len());
    assert!(tokens == expected, "the shards are not [BOS] + the tokenizer's ids of each document");
    assert!(tokens.iter().any(|&t| t > 65_535), "ids past uint16 (why the shards are uint32)");
    assert!(report.shards.iter().all(|s| TokenFile::open(&out.path().join(&s.name)).unwrap().token_type() == TokenType::Uint32));
    // GPT-2's tokens into the same directory: other settings, refused.
    let error = prepare(&sample_parquet(), out.path(), &PrepareOptions { max_docs: Some(20), ..options(5_000) }).unwrap_err();
    assert!(format!("{error:#}").contains("tokenizer llama-tiny vs gpt2"), "{error:#}");
}

#[test]
fn max_tokens_stops_after_the_document_that_reaches_it() {
    let cumulative: Vec<u64> = document_tokens().iter().scan(0, |sum, n| { *sum += n; Some(*sum) }).collect();
    let out = tempfile::tempdir().unwrap();
    let report = prepare(&sample_parquet(), out.path(), &PrepareOptions { max_tokens: Some(30_000), ..options(25_000) }).unwrap();
    let docs = cumulative.iter().position(|&c| c >= 30_000).unwrap() + 1;
    assert_eq!((report.documents, report.tokens), (docs as u64, cumulative[docs - 1]));
    assert_eq!(report.stop, Some(StopReason::MaxTokens));
    assert_eq!(report.shards.len(), 2);
    // The same as a fresh run limited to that many documents.
    let by_docs = tempfile::tempdir().unwrap();
    prepare(&sample_parquet(), by_docs.path(), &PrepareOptions { max_docs: Some(docs as u64), ..options(25_000) }).unwrap();
    assert_eq!(npy_files(out.path()), npy_files(by_docs.path()));
}

#[test]
fn a_small_run_then_a_full_run_gives_the_full_shards() {
    let out = tempfile::tempdir().unwrap();
    let small = prepare(&sample_parquet(), out.path(), &PrepareOptions { max_docs: Some(120), ..options(25_000) }).unwrap();
    assert_eq!(npy_files(out.path()), expected_files(&reference_run(25_000, Some(120))));
    assert_eq!(small.shards.len(), 2);

    let full = prepare(&sample_parquet(), out.path(), &options(25_000)).unwrap();
    assert_eq!(npy_files(out.path()), expected_files(&reference_run(25_000, None)));
    // Shard 0 was full and kept; the partial shard 1 was rewritten, and so on to the end.
    assert_eq!((full.reused_shards, full.written_shards), (1, 4));
    assert_eq!(full.documents, 300);
    // It tokenised from the document that crossed into shard 1, not from the start.
    let crossing = full.shards[0].end;
    assert!(crossing.offset > 0 && crossing.documents < 120, "{crossing:?}");
    let skipped: u64 = document_tokens()[..crossing.documents as usize].iter().sum();
    assert_eq!(full.tokens_processed, 118_714 - skipped);
}

#[test]
fn an_interrupted_run_resumes_and_a_finished_one_is_not_redone() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path();
    prepare(&sample_parquet(), dir, &options(25_000)).unwrap();
    let expected = expected_files(&reference_run(25_000, None));

    // Rerun: nothing to do, nothing rewritten.
    let modified = std::fs::metadata(dir.join("edufineweb_val_000000.npy")).unwrap().modified().unwrap();
    let again = prepare(&sample_parquet(), dir, &options(25_000)).unwrap();
    assert!(again.already_complete);
    assert_eq!((again.written_shards, again.tokens_processed, again.tokens), (0, 0, 118_714));
    assert_eq!(std::fs::metadata(dir.join("edufineweb_val_000000.npy")).unwrap().modified().unwrap(), modified);

    // Simulate a crash after shard 2: shards 3 and 4 missing, the manifest not finished.
    let manifest_path = dir.join(MANIFEST_FILE);
    let mut manifest: Value = serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["shards"].as_array_mut().unwrap().truncate(3);
    manifest["finished"] = Value::Bool(false);
    manifest["stop"] = Value::Null;
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    std::fs::remove_file(dir.join("edufineweb_train_000003.npy")).unwrap();
    std::fs::remove_file(dir.join("edufineweb_train_000004.npy")).unwrap();
    let resumed = prepare(&sample_parquet(), dir, &options(25_000)).unwrap();
    assert_eq!((resumed.reused_shards, resumed.written_shards), (3, 2));
    assert_eq!(npy_files(dir), expected);

    // A listed shard that went missing (or was cut short) is written again, with all after it.
    std::fs::remove_file(dir.join("edufineweb_train_000002.npy")).unwrap();
    let truncated = dir.join("edufineweb_train_000003.npy");
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 2]).unwrap();
    let repaired = prepare(&sample_parquet(), dir, &PrepareOptions { workers: Some(1), ..options(25_000) }).unwrap();
    assert_eq!((repaired.reused_shards, repaired.written_shards), (2, 3));
    assert_eq!(npy_files(dir), expected);
    assert!(!std::fs::read_dir(dir).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp.")));
}

#[test]
fn other_settings_are_an_error_unless_forced_and_stale_shards_go() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path();
    prepare(&sample_parquet(), dir, &options(25_000)).unwrap();
    let error = prepare(&sample_parquet(), dir, &options(50_000)).unwrap_err().to_string();
    assert!(error.contains(MANIFEST_FILE) && error.contains("shard size 25000 vs 50000") && error.contains("--force"), "{error}");
    assert_eq!(npy_files(dir), expected_files(&reference_run(25_000, None)), "nothing touched");

    let forced = prepare(&sample_parquet(), dir, &PrepareOptions { force: true, ..options(50_000) }).unwrap();
    assert_eq!(forced.shards.iter().map(|s| s.tokens).collect::<Vec<_>>(), [50_000, 50_000, 18_714]);
    assert_eq!(forced.removed_files, ["edufineweb_train_000003.npy", "edufineweb_train_000004.npy"]);
    assert_eq!(npy_files(dir).len(), 3);
    // Same token stream, cut differently.
    let reference_dir = tempfile::tempdir().unwrap();
    prepare(&sample_parquet(), reference_dir.path(), &options(25_000)).unwrap();
    assert_eq!(all_tokens(dir, 3), all_tokens(reference_dir.path(), 5));

    // Shards without a manifest (another tool's, or a lost manifest) are not overwritten silently.
    std::fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
    let error = prepare(&sample_parquet(), dir, &options(50_000)).unwrap_err().to_string();
    assert!(error.contains("edufineweb_val_000000.npy") && error.contains("--force"), "{error}");

    // Other input files are other settings too.
    let two = tempfile::tempdir().unwrap();
    std::fs::copy(sample_parquet(), two.path().join("a.parquet")).unwrap();
    let out2 = tempfile::tempdir().unwrap();
    prepare(two.path(), out2.path(), &options(50_000)).unwrap();
    std::fs::copy(sample_parquet(), two.path().join("b.parquet")).unwrap();
    let error = prepare(two.path(), out2.path(), &options(50_000)).unwrap_err().to_string();
    assert!(error.contains("input files [a.parquet] vs [a.parquet, b.parquet]"), "{error}");
    let both = prepare(two.path(), out2.path(), &PrepareOptions { force: true, ..options(50_000) }).unwrap();
    assert_eq!((both.documents, both.tokens), (600, 2 * 118_714));
}

#[test]
fn input_errors_name_the_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let missing = dir.path().join("nothing.parquet");
    let error = format!("{:#}", prepare(&missing, &out, &options(1000)).unwrap_err());
    assert!(error.contains("nothing.parquet"), "{error}");

    let empty_dir = dir.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let error = format!("{:#}", prepare(&empty_dir, &out, &options(1000)).unwrap_err());
    assert!(error.contains("no data files (*.parquet, *.jsonl, *.json, *.csv, *.tsv, *.txt) in") && error.contains("empty"), "{error}");
    // A file of another kind.
    let pdf = dir.path().join("paper.pdf");
    std::fs::write(&pdf, "%PDF").unwrap();
    let error = format!("{:#}", prepare(&pdf, &out, &options(1000)).unwrap_err());
    assert!(error.contains("paper.pdf: not a data file this reads"), "{error}");

    let not_parquet = dir.path().join("notes.parquet");
    std::fs::write(&not_parquet, "just text").unwrap();
    let error = format!("{:#}", prepare(&not_parquet, &out, &PrepareOptions { force: true, ..options(1000) }).unwrap_err());
    assert!(error.contains("notes.parquet"), "{error}");

    let no_text = dir.path().join("no_text.parquet");
    write_parquet(&no_text, "body", vec![Some("a"), Some("b")]);
    let error = format!("{:#}", prepare(&no_text, &out, &PrepareOptions { force: true, ..options(1000) }).unwrap_err());
    assert!(error.contains("no_text.parquet") && error.contains("no `text` column (it has: body)"), "{error}");

    let with_null = dir.path().join("with_null.parquet");
    write_parquet(&with_null, "text", vec![Some("one"), Some("two"), None, Some("four")]);
    let error = format!("{:#}", prepare(&with_null, &out, &PrepareOptions { force: true, ..options(1000) }).unwrap_err());
    assert!(error.contains("with_null.parquet: row 2: `text` is null"), "{error}");
}

/// A parquet file with one string column.
fn write_parquet(path: &Path, column: &str, values: Vec<Option<&str>>) {
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    let array: ArrayRef = Arc::new(StringArray::from(values));
    let batch = RecordBatch::try_from_iter([(column, array)]).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

// ---- .npy files ---------------------------------------------------------------------------------

#[test]
fn npy_header_is_what_np_save_writes() {
    // np.save(f, np.arange(5, dtype=np.uint16)) with numpy 2.4.6: 128 bytes of header.
    let mut expected = b"\x93NUMPY\x01\x00\x76\x00{'descr': '<u2', 'fortran_order': False, 'shape': (5,), }".to_vec();
    expected.extend([b' '; 128 - 10 - 57 - 1]);
    expected.push(b'\n');
    assert_eq!(expected.len(), 128);
    assert_eq!(npy_header(5, TokenType::Uint16), expected);
    // Every 1-D length gives a 128-byte header (numpy leaves room for 21 digits).
    for len in [0, 25_000, 100_000_000, usize::MAX] {
        let header = npy_header(len, TokenType::Uint16);
        assert_eq!(header.len(), 128, "{len}");
        assert!(String::from_utf8_lossy(&header).contains(&format!("'shape': ({len},), }}")));
        assert_eq!(header[127], b'\n');
    }
    // A shard numpy wrote (the reference's sha256) is read back and rewritten to the same bytes.
    let out = tempfile::tempdir().unwrap();
    prepare(&sample_parquet(), out.path(), &PrepareOptions { max_docs: Some(120), ..options(25_000) }).unwrap();
    let shard = out.path().join("edufineweb_train_000001.npy");
    let tokens = read_tokens(&shard).unwrap();
    assert_eq!(tokens.len(), 21_553);
    let copy = out.path().join("copy.npy");
    let written = write_tokens(&copy, &tokens, TokenType::Uint16).unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&shard).unwrap());
    assert_eq!(written.sha256, sha256_file(&shard).unwrap());
    assert_eq!(written.bytes, 128 + 2 * 21_553);
}

#[test]
fn npy_round_trip_and_token_access() {
    let dir = tempfile::tempdir().unwrap();
    let tokens: Vec<u16> = (0..70_000u32).map(|i| (i * 7919 % 65_536) as u16).collect();
    let wide: Vec<u32> = tokens.iter().map(|&t| u32::from(t)).collect();
    let path = dir.path().join("t.npy");
    write_tokens(&path, &tokens, TokenType::Uint16).unwrap();
    let file = TokenFile::open(&path).unwrap();
    assert_eq!((file.len(), file.token_type()), (70_000, TokenType::Uint16));
    assert_eq!(file.to_vec(), wide);
    assert_eq!(file.get(69_999), Some(wide[69_999]));
    assert_eq!(file.get(70_000), None);
    assert_eq!(file.tokens(10..13).collect::<Vec<_>>(), wide[10..13]);
    // Little-endian on disk.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[128..132], &[tokens[0].to_le_bytes(), tokens[1].to_le_bytes()].concat()[..]);
    write_tokens::<u32>(&path, &[], TokenType::Uint16).unwrap();
    assert!(TokenFile::open(&path).unwrap().is_empty());

    // uint32 (Llama 3's 128,256 ids): numpy's '<u4', 4 bytes a token.
    let ids: Vec<u32> = (0..1000u32).map(|i| i * 128_249 % 128_256).collect();
    let written = write_tokens(&path, &ids, TokenType::Uint32).unwrap();
    assert_eq!(written.bytes, 128 + 4 * 1000);
    let bytes = std::fs::read(&path).unwrap();
    assert!(String::from_utf8_lossy(&bytes[..128]).contains("{'descr': '<u4', 'fortran_order': False, 'shape': (1000,), }"));
    assert_eq!(&bytes[128..136], &[ids[0].to_le_bytes(), ids[1].to_le_bytes()].concat()[..]);
    let file = TokenFile::open(&path).unwrap();
    assert_eq!((file.to_vec(), file.token_type()), (ids.clone(), TokenType::Uint32));
    assert_eq!(file.tokens(998..1000).collect::<Vec<_>>(), ids[998..]);
    // An id past 65,535 in a uint16 shard: an error naming it, and the file as it was.
    let error = write_tokens(&path, &[7u32, 70_000], TokenType::Uint16).unwrap_err().to_string();
    assert!(error.contains("token 1 is 70000, which does not fit in uint16"), "{error}");
    assert_eq!(TokenFile::open(&path).unwrap().len(), 1000);
}

#[test]
fn bad_npy_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = {
        let mut b = npy_header(3, TokenType::Uint16);
        b.extend([1, 0, 2, 0, 3, 0]);
        b
    };
    let with_header = |dict: &str| {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let text = format!("{dict:<117}\n");
        b.extend((text.len() as u16).to_le_bytes());
        b.extend(text.as_bytes());
        b.extend([0u8; 24]);
        b
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.npy", vec![], "too short for a .npy header"),
        ("magic.npy", b"PK\x03\x04 not numpy at all".to_vec(), "bad magic"),
        ("dtype.npy", with_header("{'descr': '<i4', 'fortran_order': False, 'shape': (6,), }"), "dtype is \"<i4\""),
        ("big_endian.npy", with_header("{'descr': '>u2', 'fortran_order': False, 'shape': (12,), }"), "expected '<u2'"),
        ("matrix.npy", with_header("{'descr': '<u2', 'fortran_order': False, 'shape': (3, 4), }"), "2-D"),
        ("scalar.npy", with_header("{'descr': '<u2', 'fortran_order': False, 'shape': (), }"), "0-D"),
        ("fortran.npy", with_header("{'descr': '<u2', 'fortran_order': True, 'shape': (12,), }"), "Fortran order"),
        ("truncated.npy", good[..good.len() - 1].to_vec(), "truncated: the header announces 3 tokens (6 bytes of data) but only 5 bytes"),
        ("trailing.npy", [good.clone(), vec![0]].concat(), "1 unexpected bytes after the 3 tokens"),
        ("version.npy", [b"\x93NUMPY\x09\x00".to_vec(), good[8..].to_vec()].concat(), "unsupported .npy version 9.0"),
        ("garbled.npy", with_header("{'descr': '<u2', 'shape': (12,"), "unreadable header"),
    ];
    for (name, bytes, reason) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let error = TokenFile::open(&path).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, ShardError::Format { .. }), "{name}: {message}");
        assert!(message.contains(&path.display().to_string()) && message.contains(reason), "{name}: {message}");
    }
    std::fs::write(dir.path().join("good.npy"), &good).unwrap();
    assert_eq!(read_tokens(&dir.path().join("good.npy")).unwrap(), [1, 2, 3]);
    let missing = dir.path().join("missing.npy");
    assert!(TokenFile::open(&missing).unwrap_err().to_string().contains("missing.npy"));
}

// ---- the loader ---------------------------------------------------------------------------------

/// Shards whose token at position p of shard s is `1000 * s + p`.
fn numbered_shards(dir: &Path, lens: &[usize]) -> Vec<PathBuf> {
    lens.iter()
        .enumerate()
        .map(|(s, &len)| {
            let path = dir.join(shard_file_name("test", s));
            write_tokens(&path, &(0..len).map(|p| (1000 * s + p) as u16).collect::<Vec<_>>(), TokenType::Uint16).unwrap();
            path
        })
        .collect()
}

fn ids(shard: usize, start: usize, n: usize) -> Vec<u32> {
    (start..start + n).map(|p| (1000 * shard + p) as u32).collect()
}

#[test]
fn loader_batches_like_data_loader_lite() {
    let dir = tempfile::tempdir().unwrap();
    // B=2, T=4: 8 tokens a batch. Train shards 1 (30 tokens) and 2 (20 tokens); val shard 0.
    numbered_shards(dir.path(), &[17, 30, 20]);
    let mut loader = ShardLoader::new(dir.path(), Split::Train, 2, 4, 0, 1).unwrap();
    assert_eq!(loader.shards().len(), 2);
    assert_eq!(loader.tokens_per_step(), 8);
    // Shard 1: positions 0, 8, then 16 (16 + 8 + 1 = 25 <= 30), then 24 + 9 > 30 → shard 2.
    let mut seen = Vec::new();
    for _ in 0..7 {
        let state = loader.state();
        let batch = loader.next_batch().unwrap();
        assert_eq!((batch.batch_size, batch.seq_len, batch.inputs.len(), batch.targets.len()), (2, 4, 8, 8));
        let shard = state.shard + 1;
        assert_eq!(batch.inputs, ids(shard, state.position, 8), "{state:?}");
        let targets: Vec<i64> = ids(shard, state.position + 1, 8).into_iter().map(i64::from).collect();
        assert_eq!(batch.targets, targets);
        seen.push((state.shard, state.position));
    }
    // Shard 2 (20 tokens): 0, 8 (8 + 9 = 17 <= 20), then 16 + 9 > 20 → back to shard 1.
    assert_eq!(seen, [(0, 0), (0, 8), (0, 16), (1, 0), (1, 8), (0, 0), (0, 8)]);

    // Row-major: row 1 of the batch at position 8 starts at token 12.
    loader.reset().unwrap();
    loader.next_batch().unwrap();
    let batch = loader.next_batch().unwrap();
    assert_eq!(&batch.inputs[4..], &ids(1, 12, 4)[..]);
    assert_eq!(loader.state(), LoaderState { shard: 0, position: 16 });

    let mut val = ShardLoader::new(dir.path(), Split::Val, 2, 4, 0, 1).unwrap();
    assert_eq!(val.shards(), [dir.path().join("test_val_000000.npy")]);
    // 17 tokens: after the batch at 0, 8 + 8 + 1 = 17 is not > 17, so the next batch is at 8.
    assert_eq!(val.next_batch().unwrap().inputs, ids(0, 0, 8));
    assert_eq!(val.state(), LoaderState { shard: 0, position: 8 });
    assert_eq!(val.next_batch().unwrap().inputs, ids(0, 8, 8));
    assert_eq!(val.state(), LoaderState { shard: 0, position: 0 }, "wraps to its only shard");
}

#[test]
fn ranks_stride_through_the_shards() {
    let dir = tempfile::tempdir().unwrap();
    let shards = numbered_shards(dir.path(), &[40, 30]);
    // B=1, T=4, world 3: each step takes 12 tokens; rank r starts at 4r.
    let positions = |rank: usize| {
        let mut loader = ShardLoader::from_files(shards.clone(), 1, 4, rank, 3).unwrap();
        (0..5)
            .map(|_| {
                let state = loader.state();
                assert_eq!(loader.next_batch().unwrap().inputs, ids(state.shard, state.position, 4));
                (state.shard, state.position)
            })
            .collect::<Vec<_>>()
    };
    // Shard 0 (40): rank 0 at 0, 12, 24 (24 + 13 = 37 <= 40), 36 + 13 > 40 → shard 1 (30): 0, 12 + 13 = 25 <= 30.
    assert_eq!(positions(0), [(0, 0), (0, 12), (0, 24), (1, 0), (1, 12)]);
    // Rank 1 at 4, 16, then 28 + 13 = 41 > 40 → shard 1 at 4, 16 + 13 = 29 <= 30, then 28 + 13 > 30 → shard 0.
    assert_eq!(positions(1), [(0, 4), (0, 16), (1, 4), (1, 16), (0, 4)]);
    assert_eq!(positions(2), [(0, 8), (0, 20), (1, 8), (0, 8), (0, 20)]);
}

#[test]
fn state_and_restore_resume_on_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let shards = numbered_shards(dir.path(), &[50, 41, 33]);
    let mut loader = ShardLoader::from_files(shards.clone(), 2, 3, 1, 2).unwrap();
    for _ in 0..5 {
        loader.next_batch().unwrap();
    }
    let state = loader.state();
    let json = serde_json::to_string(&state).unwrap();
    let expected: Vec<_> = (0..6).map(|_| loader.next_batch().unwrap()).collect();

    let mut resumed = ShardLoader::from_files(shards.clone(), 2, 3, 1, 2).unwrap();
    resumed.restore(serde_json::from_str(&json).unwrap()).unwrap();
    let got: Vec<_> = (0..6).map(|_| resumed.next_batch().unwrap()).collect();
    assert_eq!(got, expected);

    assert!(matches!(resumed.restore(LoaderState { shard: 3, position: 0 }), Err(ShardError::State(_))));
    assert!(matches!(resumed.restore(LoaderState { shard: 0, position: 45 }), Err(ShardError::State(_))));
    assert!(matches!(resumed.restore(LoaderState { shard: 0, position: 5 }), Err(ShardError::State(_))));
    resumed.reset().unwrap();
    assert_eq!(resumed.state(), LoaderState { shard: 0, position: 6 });
}

#[test]
fn loader_errors_name_the_directory_or_shard() {
    let dir = tempfile::tempdir().unwrap();
    let error = ShardLoader::new(dir.path(), Split::Train, 2, 4, 0, 1).unwrap_err();
    assert!(matches!(error, ShardError::NoShards { .. }));
    assert!(error.to_string().contains(&dir.path().display().to_string()) && error.to_string().contains("_train_"), "{error}");

    numbered_shards(dir.path(), &[100, 100, 16]);
    let error = ShardLoader::new(dir.path(), Split::Train, 2, 4, 0, 2).unwrap_err().to_string();
    // World 2: a step needs 2*4*2 + 1 = 17 tokens; shard 2 has 16.
    assert!(error.contains("test_train_000002.npy") && error.contains("16 tokens") && error.contains("needs 17"), "{error}");
    assert!(ShardLoader::new(dir.path(), Split::Train, 2, 4, 0, 1).is_ok(), "one process needs 9");
    assert!(matches!(ShardLoader::new(dir.path(), Split::Train, 2, 4, 2, 2), Err(ShardError::Settings(_))));
    assert!(matches!(ShardLoader::new(dir.path(), Split::Train, 0, 4, 0, 1), Err(ShardError::Settings(_))));

    std::fs::write(dir.path().join("test_train_000003.npy"), b"garbage").unwrap();
    let error = ShardLoader::new(dir.path(), Split::Train, 2, 4, 0, 1).unwrap_err().to_string();
    assert!(error.contains("test_train_000003.npy"), "{error}");
}

#[test]
fn the_loader_reads_prepared_shards() {
    let out = tempfile::tempdir().unwrap();
    prepare(&sample_parquet(), out.path(), &options(25_000)).unwrap();
    let mut train = ShardLoader::new(out.path(), Split::Train, 4, 64, 0, 1).unwrap();
    assert_eq!(train.shards().len(), 4);
    assert_eq!(train.total_tokens(), 118_714 - 25_000);
    let expected = read_tokens(&out.path().join("edufineweb_train_000001.npy")).unwrap();
    let batch = train.next_batch().unwrap();
    assert_eq!(batch.inputs, expected[..256].to_vec());
    assert_eq!(batch.targets, expected[1..257].iter().map(|&t| t as i64).collect::<Vec<_>>());
    let val = ShardLoader::new(out.path(), Split::Val, 4, 64, 0, 1).unwrap();
    assert_eq!(val.shards(), [out.path().join("edufineweb_val_000000.npy")]);
    let _ = shards::find_shards(out.path(), Split::Val).unwrap();
}
