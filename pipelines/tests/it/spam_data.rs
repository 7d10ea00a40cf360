//! SMS spam preparation and the download helper, against a loopback HTTP server (no network).
//! The fixture zip holds 300 messages: 220 ham, 80 spam.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::common_http::{Reply, Server, fixtures};
use gpt::burn::data::dataset::Dataset;
use gpt::{EOT_TOKEN, Tokenizer};
use pipelines::data::spam::{
    self, HAM, Message, SPAM, SkipReason, SkippedLine, SpamDataset, Splits, parse_collection, prepare_spam,
    read_split_csv, read_splits, write_splits,
};
use pipelines::download::{self, DownloadError};

const ZIP_ROUTE: &str = "/static/public/228/sms+spam+collection.zip";

fn fixture_zip() -> Vec<u8> {
    std::fs::read(fixtures().join("data/sms_spam_collection.zip")).unwrap()
}

fn fixture_messages() -> Vec<Message> {
    let tsv = std::fs::read(fixtures().join("data/sms_spam_300.tsv")).unwrap();
    parse_collection(&tsv).messages
}

fn serve_zip(bytes: Vec<u8>) -> Server {
    Server::start(vec![(ZIP_ROUTE, vec![Reply::Ok(bytes)])])
}

fn csv_files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".csv"))
        .collect();
    names.sort();
    names
}

/// A zip with `entries` (name → bytes), deflated.
fn make_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        writer.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

#[test]
fn prepare_gives_the_exact_counts_and_balanced_splits() {
    let server = serve_zip(fixture_zip());
    let out = tempfile::tempdir().unwrap();
    let report = prepare_spam(&server.url(ZIP_ROUTE), out.path(), 123).unwrap();

    assert_eq!((report.lines, report.skipped, report.invalid_utf8_lines), (300, 0, 0));
    assert!(report.skipped_lines.is_empty());
    assert_eq!((report.ham, report.spam, report.balanced), (220, 80, 160));
    assert_eq!((report.train, report.validation, report.test), (112, 16, 32));
    assert_eq!(report.zip, out.path().join(spam::ZIP_FILE_NAME));
    assert!(!report.reused_download);
    assert_eq!(std::fs::read(&report.zip).unwrap(), fixture_zip(), "the download is kept byte for byte");
    assert_eq!(csv_files_in(out.path()), ["test.csv", "train.csv", "validation.csv"], "no temporary files left");

    for name in spam::SPLIT_FILES {
        let text = std::fs::read_to_string(out.path().join(name)).unwrap();
        assert!(text.starts_with("Label,Text\n"), "{name}: {:?}", &text[..20]);
    }
    let splits = read_splits(out.path()).unwrap();
    assert_eq!([splits.train.len(), splits.validation.len(), splits.test.len()], [112, 16, 32]);

    // The union is every spam message once and 80 distinct ham messages of the collection.
    let all: Vec<&Message> = splits.train.iter().chain(&splits.validation).chain(&splits.test).collect();
    let count = |label| all.iter().filter(|m| m.label == label).count();
    assert_eq!((count(HAM), count(SPAM)), (80, 80));
    let originals = fixture_messages();
    assert!(
        all.iter().all(|m| originals.contains(m)),
        "every message comes from the collection, label and text intact"
    );
    let distinct: BTreeSet<&str> = all.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(distinct.len(), 160);
    assert!(originals.iter().filter(|m| m.label == SPAM).all(|m| all.contains(&m)), "all spam is kept");
    // Shuffled: the training split is not all ham then all spam.
    assert!(splits.train[..56].iter().any(|m| m.label == SPAM) && splits.train[56..].iter().any(|m| m.label == HAM));
}

#[test]
fn a_second_run_reuses_the_download() {
    let server = serve_zip(fixture_zip());
    let out = tempfile::tempdir().unwrap();
    let url = server.url(ZIP_ROUTE);
    prepare_spam(&url, out.path(), 123).unwrap();
    let again = prepare_spam(&url, out.path(), 123).unwrap();
    assert!(again.reused_download);
    assert_eq!(server.request_count(), 1);
    assert_eq!(again.train, 112);
}

#[test]
fn the_same_seed_gives_the_same_files_another_seed_other_ones() {
    let zip = fixtures().join("data/sms_spam_collection.zip");
    let source = zip.to_str().unwrap();
    let read_all = |dir: &Path| spam::SPLIT_FILES.map(|name| std::fs::read(dir.join(name)).unwrap());
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    prepare_spam(source, a.path(), 123).unwrap();
    prepare_spam(source, b.path(), 123).unwrap();
    let other = prepare_spam(source, c.path(), 7).unwrap();
    assert_eq!(read_all(a.path()), read_all(b.path()));
    assert_ne!(read_all(a.path())[0], read_all(c.path())[0]);
    assert_eq!((other.train, other.validation, other.test), (112, 16, 32), "same sizes whatever the seed");
    assert!(!a.path().join(spam::ZIP_FILE_NAME).exists(), "a local zip is read in place, not copied");
}

#[test]
fn csv_quotes_commas_quotes_and_newlines_and_reads_back() {
    let tricky = Message { label: SPAM, text: "Win £100, \"free\" now!\nReply YES".to_string() };
    let plain = Message { label: HAM, text: "ok lar".to_string() };
    let splits = Splits { train: vec![tricky.clone(), plain.clone()], validation: vec![plain.clone()], test: vec![] };
    let dir = tempfile::tempdir().unwrap();
    write_splits(dir.path(), &splits).unwrap();

    let train = std::fs::read_to_string(dir.path().join("train.csv")).unwrap();
    assert_eq!(train, "Label,Text\n1,\"Win £100, \"\"free\"\" now!\nReply YES\"\n0,ok lar\n");
    assert_eq!(std::fs::read_to_string(dir.path().join("test.csv")).unwrap(), "Label,Text\n");
    assert_eq!(read_split_csv(&dir.path().join("train.csv")).unwrap(), vec![tricky, plain]);
    assert_eq!(read_splits(dir.path()).unwrap(), splits);
}

#[test]
fn split_csv_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.csv");
    std::fs::write(&path, "Label,Text\n0,fine\n1,\"multi\nline\"\n2,bad label\n").unwrap();
    let error = format!("{:#}", read_split_csv(&path).unwrap_err());
    assert!(error.contains("train.csv") && error.contains("line 5") && error.contains("`2`"), "{error}");

    std::fs::write(&path, "label,text\n0,fine\n").unwrap();
    let error = format!("{:#}", read_split_csv(&path).unwrap_err());
    assert!(error.contains("train.csv") && error.contains("header"), "{error}");

    std::fs::write(&path, "Label,Text\n0,fine\n1,one,too many\n").unwrap();
    let error = format!("{:#}", read_split_csv(&path).unwrap_err());
    assert!(error.contains("train.csv") && error.contains("line 3"), "{error}");
}

#[test]
fn malformed_lines_are_skipped_and_reported_with_line_numbers() {
    let text = b"ham\tfine\r\n\
                 no tab here\n\
                 \n\
                 spam\tfree \tprize\n\
                 eggs\tunknown label\n\
                 ham\t   \n\
                 Spam \tcase and spaces in the label are fine\n\
                 ham\tbad byte \xff here\n";
    let parsed = parse_collection(text);
    assert_eq!(parsed.lines, 7, "the blank line is not counted");
    assert_eq!(parsed.skipped, 3);
    assert_eq!(
        parsed.first_skipped,
        vec![
            SkippedLine { line: 2, reason: SkipReason::NoTab },
            SkippedLine { line: 5, reason: SkipReason::UnknownLabel },
            SkippedLine { line: 6, reason: SkipReason::EmptyText },
        ]
    );
    assert_eq!(parsed.invalid_utf8_lines, 1);
    let texts: Vec<(usize, &str)> = parsed.messages.iter().map(|m| (m.label, m.text.as_str())).collect();
    assert_eq!(
        texts,
        [
            (HAM, "fine"),
            (SPAM, "free \tprize"),
            (SPAM, "case and spaces in the label are fine"),
            (HAM, "bad byte \u{FFFD} here")
        ]
    );

    // The same through prepare_spam, with the entry in a folder of the zip: reported, not fatal.
    let mut tsv = std::fs::read(fixtures().join("data/sms_spam_300.tsv")).unwrap();
    tsv.extend_from_slice(b"no tab\nham\t\nspam\t\"quoted\", with comma\n");
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("collection.zip");
    std::fs::write(&zip_path, make_zip(&[("readme", b"hi"), ("smsspam/SMSSpamCollection", &tsv)])).unwrap();
    let out = dir.path().join("out");
    let report = prepare_spam(zip_path.to_str().unwrap(), &out, 123).unwrap();
    assert_eq!((report.lines, report.skipped, report.ham, report.spam, report.balanced), (303, 2, 220, 81, 162));
    assert_eq!(report.skipped_lines.iter().map(|s| s.line).collect::<Vec<_>>(), [301, 302]);
    let splits = read_splits(&out).unwrap();
    let quoted = Message { label: SPAM, text: "\"quoted\", with comma".to_string() };
    assert!([&splits.train, &splits.validation, &splits.test].iter().any(|s| s.contains(&quoted)));
}

#[test]
fn a_download_that_is_not_a_zip_is_a_clear_error_and_leaves_nothing() {
    let server = serve_zip(b"<html><body>Service moved</body></html>".to_vec());
    let out = tempfile::tempdir().unwrap();
    let error = format!("{:#}", prepare_spam(&server.url(ZIP_ROUTE), out.path(), 123).unwrap_err());
    assert!(error.contains("sms_spam_collection.zip is not a zip archive"), "{error}");
    assert!(error.contains(&server.url(ZIP_ROUTE)), "{error}");
    assert!(csv_files_in(out.path()).is_empty());
    assert!(
        !out.path().join(spam::ZIP_FILE_NAME).exists(),
        "the bad download is deleted, so a new run fetches it again"
    );
}

#[test]
fn a_truncated_zip_is_a_clear_error_and_leaves_nothing() {
    let zip = fixture_zip();
    let server = serve_zip(zip[..zip.len() / 2].to_vec());
    let out = tempfile::tempdir().unwrap();
    let error = format!("{:#}", prepare_spam(&server.url(ZIP_ROUTE), out.path(), 123).unwrap_err());
    assert!(error.contains("is not a zip archive, or is truncated"), "{error}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "no CSV, no zip, no temporary file");

    // A zip without the collection in it.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.zip");
    std::fs::write(&other, make_zip(&[("readme", b"not the data")])).unwrap();
    let error = format!("{:#}", prepare_spam(other.to_str().unwrap(), dir.path(), 123).unwrap_err());
    assert!(error.contains("other.zip has no file named SMSSpamCollection"), "{error}");
    assert!(csv_files_in(dir.path()).is_empty());
}

#[test]
fn http_404_names_the_url_and_status_and_is_not_retried() {
    let server = Server::start(vec![]);
    let out = tempfile::tempdir().unwrap();
    let url = server.url("/missing.zip");
    let error = prepare_spam(&url, out.path(), 123).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains(&url) && message.contains("404"), "{message}");
    match error.downcast_ref::<DownloadError>() {
        Some(DownloadError::Status { status: 404, attempts: 1, .. }) => {}
        other => panic!("expected a 404 status error, got {other:?}"),
    }
    assert_eq!(server.request_count(), 1);
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn server_errors_and_cut_bodies_are_retried() {
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let server = Server::start(vec![
        ("/flaky", vec![Reply::Status(503, "Service Unavailable"), Reply::Ok(body.clone())]),
        ("/cut-once", vec![Reply::CutShort { body: body.clone(), sent: 1000 }, Reply::Ok(body.clone())]),
        ("/always-cut", vec![Reply::CutShort { body: body.clone(), sent: 1000 }]),
    ]);
    let dir = tempfile::tempdir().unwrap();

    let dest = dir.path().join("nested/flaky.bin");
    download::download_to(&server.url("/flaky"), &dest).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);

    let dest = dir.path().join("cut-once.bin");
    download::download_to(&server.url("/cut-once"), &dest).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);

    let dest = dir.path().join("always-cut.bin");
    let error = download::download_to(&server.url("/always-cut"), &dest).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&server.url("/always-cut")) && message.contains("tried 4 times"), "{message}");
    assert!(!dest.exists(), "never a half-written file");

    let requests = server.requests.lock().unwrap().clone();
    let count = |path: &str| requests.iter().filter(|r| *r == path).count();
    assert_eq!((count("/flaky"), count("/cut-once"), count("/always-cut")), (2, 2, 1 + download::RETRIES as usize));
    let mut left: Vec<PathBuf> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    left.sort();
    assert_eq!(left, [dir.path().join("cut-once.bin"), dir.path().join("nested")], "no temporary files");
}

#[test]
fn local_paths_and_file_urls_are_sources_too() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.txt");
    std::fs::write(&source, "hello").unwrap();

    download::download_to(source.to_str().unwrap(), &dir.path().join("copy1.txt")).unwrap();
    download::download_to(&format!("file://{}", source.display()), &dir.path().join("copy2.txt")).unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join("copy1.txt")).unwrap(), "hello");
    assert_eq!(std::fs::read_to_string(dir.path().join("copy2.txt")).unwrap(), "hello");

    let cached = download::fetch_cached(source.to_str().unwrap(), &dir.path().join("cache.txt")).unwrap();
    assert_eq!(cached, source, "a local source is used where it is");
    let missing = dir.path().join("missing.zip");
    let error = download::fetch_cached(missing.to_str().unwrap(), &dir.path().join("cache.zip")).unwrap_err();
    assert!(error.to_string().contains("missing.zip"), "{error}");

    // A cached download is reused without asking the server.
    let server = Server::start(vec![("/f", vec![Reply::Ok(b"v1".to_vec())])]);
    let cache = dir.path().join("cache/f.bin");
    assert_eq!(download::fetch_cached(&server.url("/f"), &cache).unwrap(), cache);
    assert_eq!(download::fetch_cached(&server.url("/f"), &cache).unwrap(), cache);
    assert_eq!(server.request_count(), 1);
    assert_eq!(std::fs::read(&cache).unwrap(), b"v1");
}

fn message(label: usize, text: &str) -> Message {
    Message { label, text: text.to_string() }
}

#[test]
fn the_tokenised_dataset_pads_to_the_longest_training_text() {
    let tokenizer = Tokenizer::gpt2();
    let train = vec![message(HAM, "Hi"), message(SPAM, "You won a prize, call now to claim it!"), message(HAM, "ok")];
    let longest = tokenizer.encode(&train[1].text);
    let dataset = SpamDataset::for_training(&train, None, 1024, &gpt::Tokenizer::gpt2()).unwrap();
    assert_eq!(dataset.length, longest.len());
    assert_eq!(dataset.labels, [HAM, SPAM, HAM]);
    assert_eq!(dataset.token_ids[1], longest);
    let hi = tokenizer.encode("Hi");
    assert_eq!(dataset.token_ids[0][..hi.len()], hi[..]);
    assert!(dataset.token_ids[0][hi.len()..].iter().all(|&t| t == EOT_TOKEN));
    assert!(dataset.token_ids.iter().all(|ids| ids.len() == dataset.length));

    // max_length cuts, keeping the start; the context caps the derived length.
    let cut = SpamDataset::for_training(&train, Some(3), 1024, &gpt::Tokenizer::gpt2()).unwrap();
    assert_eq!(cut.length, 3);
    assert_eq!(cut.token_ids[1], longest[..3]);
    let capped = SpamDataset::for_training(&train, None, 4, &gpt::Tokenizer::gpt2()).unwrap();
    assert_eq!(capped.length, 4);
    assert_eq!(capped.token_ids[1], longest[..4]);
    let error = SpamDataset::for_training(&train, Some(2000), 1024, &gpt::Tokenizer::gpt2()).unwrap_err().to_string();
    assert!(error.contains("2000") && error.contains("1024"), "{error}");

    // Validation/test at the training length: cut or padded.
    let validation = SpamDataset::with_length(
        &[message(SPAM, "a much longer message than any in training, really it is long"), message(HAM, "k")],
        5,
        &gpt::Tokenizer::gpt2(),
    )
    .unwrap();
    assert!(validation.token_ids.iter().all(|ids| ids.len() == 5));
    assert_eq!(validation.token_ids[1][1..], [EOT_TOKEN; 4]);

    // The Burn view: (ids, label) items.
    assert_eq!(Dataset::len(&dataset), 3);
    assert_eq!(dataset.get(1).unwrap(), (longest, SPAM));
}

#[test]
fn tokenised_splits_from_the_prepared_files_share_the_training_length() {
    let dir = tempfile::tempdir().unwrap();
    let zip = fixtures().join("data/sms_spam_collection.zip");
    prepare_spam(zip.to_str().unwrap(), dir.path(), 123).unwrap();
    let messages = read_splits(dir.path()).unwrap();
    let tokenizer = Tokenizer::gpt2();
    let longest_train = messages.train.iter().map(|m| tokenizer.encode(&m.text).len()).max().unwrap();

    let datasets = Splits::<SpamDataset>::tokenize(&messages, None, 1024, &gpt::Tokenizer::gpt2()).unwrap();
    let lengths: HashMap<&str, usize> =
        [("train", &datasets.train), ("validation", &datasets.validation), ("test", &datasets.test)]
            .into_iter()
            .map(|(name, d)| {
                assert!(d.token_ids.iter().all(|ids| ids.len() == d.length), "{name}");
                (name, d.length)
            })
            .collect();
    assert_eq!(lengths["train"], longest_train);
    assert_eq!(lengths["validation"], longest_train);
    assert_eq!(lengths["test"], longest_train);
    assert_eq!((datasets.train.len(), datasets.validation.len(), datasets.test.len()), (112, 16, 32));
    assert_eq!(datasets.test.labels, messages.test.iter().map(|m| m.label).collect::<Vec<_>>());
}

#[test]
fn the_real_collection_sizes_give_the_books_splits() {
    // 4,827 ham and 747 spam, as in the UCI file: balanced 1,494, split 1045/149/300 as in the book.
    let messages: Vec<Message> = (0..4827)
        .map(|i| message(HAM, &format!("ham {i}")))
        .chain((0..747).map(|i| message(SPAM, &format!("spam {i}"))))
        .collect();
    let splits = spam::balance_and_split(messages, 123);
    assert_eq!([splits.train.len(), splits.validation.len(), splits.test.len()], [1045, 149, 300]);
    let spam_count = splits.as_array().iter().flat_map(|s| s.iter()).filter(|m| m.label == SPAM).count();
    assert_eq!(spam_count, 747);
}
