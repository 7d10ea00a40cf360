//! Labelled texts of any classification set, from any [`DataSource`] (a CSV / TSV / JSONL / JSON /
//! parquet file, a directory of split files, an `hf:` data set); the text from one or more
//! columns (joined with a newline), the label from another (a string or an integer). With them: the label set, a seeded stratified split, and
//! down-sampling to the smallest class (the book's spam recipe, for any number of classes).

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::Value;

use super::records::{Record, read_records};
use super::source::DataSource;
use super::spam::{Message, Splits};
use super::{excerpt, json_kind};

/// Which columns (CSV) or keys (JSON) hold the text and the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// Several are joined with a newline, in this order.
    pub text: Vec<String>,
    pub label: String,
}

impl Columns {
    /// From the flags' text: `text` a comma-separated list of columns, `label` one column.
    pub fn from_flags(text: &str, label: &str) -> Result<Self> {
        let text: Vec<String> = text.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
        ensure!(!text.is_empty(), "--text-column names no column");
        ensure!(!label.trim().is_empty(), "--label-column names no column");
        Ok(Self { text, label: label.trim().to_string() })
    }

    /// Every column these name (what a parquet file needs to read).
    pub fn all(&self) -> Vec<String> {
        self.text.iter().chain([&self.label]).cloned().collect()
    }
}

impl Default for Columns {
    fn default() -> Self {
        Self { text: vec!["text".into()], label: "label".into() }
    }
}

/// One labelled text, and where it came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledText {
    pub text: String,
    /// As written (an integer label as its digits).
    pub label: String,
    /// `FILE: line N` (CSV, TSV, JSONL), `FILE: record N` (a JSON list), `FILE: row N` (parquet).
    pub at: String,
}

/// Reads a labelled file of any format [`records`](super::records) reads.
pub fn read_labelled(path: &Path, columns: &Columns) -> Result<Vec<LabelledText>> {
    labelled_texts(read_records(path, Some(&columns.all()))?, columns)
}

/// The labelled texts of `records`: strings (or numbers, as written) under the columns' keys.
pub fn labelled_texts(records: Vec<Record>, columns: &Columns) -> Result<Vec<LabelledText>> {
    records.iter().map(|record| from_record(record, columns)).collect()
}

fn from_record(record: &Record, columns: &Columns) -> Result<LabelledText> {
    let at = record.location();
    let object = record.object()?;
    let field = |name: &str| -> Result<String> {
        match object.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Bool(b)) => Ok(b.to_string()),
            Some(other) => bail!("{at}: `{name}` is {}, expected a string", json_kind(other)),
            None => bail!("{at}: no `{name}` (the record has {})", excerpt(&object.keys().cloned().collect::<Vec<_>>().join(", "), 200)),
        }
    };
    let label = field(&columns.label)?;
    ensure!(!label.trim().is_empty(), "{at}: the label (`{}`) is empty", columns.label);
    let text = columns.text.iter().map(|name| field(name)).collect::<Result<Vec<_>>>()?.join("\n");
    Ok(LabelledText { text, label, at })
}

/// The classes: `explicit` in its order (`--labels`), else the training labels sorted
/// (integers numerically, as transformers' datasets number them). At least two, no repeats.
pub fn label_set(train: &[LabelledText], explicit: Option<&[String]>) -> Result<Vec<String>> {
    let labels: Vec<String> = match explicit {
        Some(labels) => {
            let mut seen = std::collections::HashSet::new();
            if let Some(repeated) = labels.iter().find(|l| !seen.insert(l.as_str())) {
                bail!("--labels names `{repeated}` twice");
            }
            labels.to_vec()
        }
        None => {
            let mut labels: Vec<String> = train.iter().map(|r| r.label.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            if labels.iter().all(|l| l.parse::<i64>().is_ok()) {
                labels.sort_by_key(|l| l.parse::<i64>().unwrap_or(0));
            }
            labels
        }
    };
    ensure!(labels.len() >= 2, "a classifier needs at least 2 classes, got {labels:?}");
    Ok(labels)
}

/// The class index of every record; a label outside `labels` is an error naming its file and row.
pub fn class_indices(records: &[LabelledText], labels: &[String]) -> Result<Vec<usize>> {
    records
        .iter()
        .map(|r| {
            labels.iter().position(|l| *l == r.label).with_context(|| {
                format!("{}: the label `{}` is not one of the classes ({})", r.at, excerpt(&r.label, 80), labels.join(", "))
            })
        })
        .collect()
}

/// `records` as messages: texts with class indices into `labels`; a label outside them is an
/// error naming the file and row.
pub fn messages(records: Vec<LabelledText>, labels: &[String]) -> Result<Vec<Message>> {
    let classes = class_indices(&records, labels)?;
    Ok(records.into_iter().zip(classes).map(|(r, label)| Message { label, text: r.text }).collect())
}

/// How the splits a source does not have are cut from its training data.
#[derive(Debug, Clone, Copy)]
pub struct SplitPlan {
    /// Fractions of a seeded [`stratified_split`] of the training data (`--split`); the rest is test.
    pub train: f64,
    pub validation: f64,
    /// Down-sample the training data to its smallest class first (`--balance`).
    pub balance: bool,
    pub seed: u64,
}

/// The classes, the three splits, and where they came from (for run.json).
#[derive(Debug, Clone)]
pub struct LabelledSplits {
    pub labels: Vec<String>,
    pub splits: Splits<Vec<Message>>,
    pub source: Value,
}

/// The labelled splits of `data`: its main split (`@split`, `train`, or a file's records) is the
/// training data; validation and test are the `validation` / `test` sources when given, else
/// `data`'s own validation / test splits (a directory or hub data set that has them), and what
/// is still missing is cut from the training data by a seeded [`stratified_split`] with `plan`'s
/// fractions (both missing: train / validation / rest test; one missing: the training data cut
/// in the proportion of its fraction to `plan.train`). The classes are `labels` in that order,
/// else the training labels sorted ([`label_set`]). Validation and test must not come out empty.
pub fn labelled_splits(
    data: &DataSource,
    columns: &Columns,
    labels: Option<&[String]>,
    validation: Option<&DataSource>,
    test: Option<&DataSource>,
    plan: SplitPlan,
) -> Result<LabelledSplits> {
    let read = |source: &DataSource, split: &str| labelled_texts(source.read(split, Some(&columns.all()))?, columns);
    let train_split = data.main_split("train")?;
    let train = read(data, &train_split)?;
    // A split given as its own source, or the data's own split of that name.
    let given = |explicit: Option<&DataSource>, which: &str| -> Result<Option<(Vec<LabelledText>, Value)>> {
        let (source, split) = match explicit {
            Some(source) => (source, source.main_split(which)?),
            None => match data.other_split(which) {
                Some(split) => (data, split),
                None => return Ok(None),
            },
        };
        Ok(Some((read(source, &split)?, serde_json::json!({ "source": source.name, "split": split }))))
    };
    let (validation, test) = (given(validation, "validation")?, given(test, "test")?);
    let rows = train.len();
    let labels = label_set(&train, labels)?;
    let mut train: Vec<Option<Message>> = messages(train, &labels)?.into_iter().map(Some).collect();
    let classes: Vec<usize> = train.iter().flatten().map(|m| m.label).collect();
    let rest = 1.0 - plan.train - plan.validation;
    let (cut_train, cut_validation) = match (&validation, &test) {
        (None, None) => (plan.train, plan.validation),
        (Some(_), None) => (plan.train / (plan.train + rest), 0.0),
        (None, Some(_)) => {
            let share = plan.train / (plan.train + plan.validation);
            (share, 1.0 - share)
        }
        (Some(_), Some(_)) => (1.0, 0.0),
    };
    let cut = stratified_split(&classes, cut_train, cut_validation, plan.balance, plan.seed)?;
    // Each index is in one part once: every message moves out exactly once.
    let mut take = |part: &[usize]| part.iter().filter_map(|&i| train[i].take()).collect::<Vec<_>>();
    let (train_part, validation_part, test_part) = (take(&cut.train), take(&cut.validation), take(&cut.test));
    let cut_from_train = serde_json::json!({ "cut_from": train_split });
    let (validation, validation_from) = match validation {
        Some((records, from)) => (messages(records, &labels)?, from),
        // With a test source, the rounding rest of the cut goes to validation too.
        None => (validation_part.into_iter().chain(if test.is_some() { test_part.clone() } else { Vec::new() }).collect(), cut_from_train.clone()),
    };
    let (test, test_from) = match test {
        Some((records, from)) => (messages(records, &labels)?, from),
        None => (test_part, cut_from_train),
    };
    let splits = Splits { train: train_part, validation, test };
    ensure!(
        !splits.validation.is_empty() && !splits.test.is_empty(),
        "{}: {rows} training rows leave no validation or test texts after the split; use more data or --validation/--test",
        data.name
    );
    let source = serde_json::json!({
        "data": data.describe(), "train": { "source": data.name, "split": train_split }, "validation": validation_from, "test": test_from,
        "text_columns": columns.text, "label_column": columns.label,
        "split": [plan.train, plan.validation], "balance": plan.balance, "seed": plan.seed,
    });
    Ok(LabelledSplits { labels, splits, source })
}

/// A seeded stratified split of `classes` (one class index per example) into train / validation /
/// test example indices: each class's examples shuffled and cut at ⌊train·n⌋ and ⌊validation·n⌋
/// (integers, exact), the rest test; each split then shuffled. With `balance`, every class is
/// first down-sampled to the smallest one's size.
pub fn stratified_split(classes: &[usize], train: f64, validation: f64, balance: bool, seed: u64) -> Result<Splits<Vec<usize>>> {
    ensure!(
        train > 0.0 && validation >= 0.0 && train + validation <= 1.0 + 1e-9,
        "--split {train},{validation}: the train and validation fractions must be positive and sum to at most 1"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let n_classes = classes.iter().max().map_or(0, |&c| c + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (i, &c) in classes.iter().enumerate() {
        by_class[c].push(i);
    }
    let smallest = by_class.iter().map(Vec::len).filter(|&n| n > 0).min().unwrap_or(0);
    let mut splits = Splits { train: Vec::new(), validation: Vec::new(), test: Vec::new() };
    for mut members in by_class {
        members.shuffle(&mut rng);
        if balance {
            members.truncate(smallest);
        }
        let n = members.len();
        // ⌊f·n⌋ in integers where f is a whole percentage (the usual case), else in floating point.
        let cut = |f: f64| {
            let percent = (f * 100.0).round();
            if (f * 100.0 - percent).abs() < 1e-9 { n * percent as usize / 100 } else { (f * n as f64).floor() as usize }
        };
        let (n_train, n_validation) = (cut(train), cut(validation));
        splits.train.extend_from_slice(&members[..n_train]);
        splits.validation.extend_from_slice(&members[n_train..n_train + n_validation]);
        splits.test.extend_from_slice(&members[n_train + n_validation..]);
    }
    for split in [&mut splits.train, &mut splits.validation, &mut splits.test] {
        split.shuffle(&mut rng);
    }
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn columns() -> Columns {
        Columns { text: vec!["title".into(), "body".into()], label: "topic".into() }
    }

    /// The same three records as CSV, TSV, JSONL and a JSON list read the same: text columns
    /// joined with a newline, integer labels as their digits, quoted fields with commas and newlines.
    #[test]
    fn every_format_reads_the_same_records() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(dir.path(), "a.csv", "id,title,body,topic\n1,Rain,\"Wet, cold\",2\n2,Sun,\"hot\nand dry\",0\n3,Fog,grey,1\n");
        let tsv = write(dir.path(), "a.tsv", "id\ttitle\tbody\ttopic\n1\tRain\tWet, cold\t2\n2\tSun\t\"hot\nand dry\"\t0\n3\tFog\tgrey\t1\n");
        let jsonl = write(
            dir.path(),
            "a.jsonl",
            "{\"title\":\"Rain\",\"body\":\"Wet, cold\",\"topic\":2}\n\n{\"title\":\"Sun\",\"body\":\"hot\\nand dry\",\"topic\":0}\n{\"title\":\"Fog\",\"body\":\"grey\",\"topic\":1}\n",
        );
        let json = write(
            dir.path(),
            "a.json",
            "[{\"title\":\"Rain\",\"body\":\"Wet, cold\",\"topic\":2},{\"title\":\"Sun\",\"body\":\"hot\\nand dry\",\"topic\":0},{\"title\":\"Fog\",\"body\":\"grey\",\"topic\":1}]",
        );
        let pairs = |path: &Path| read_labelled(path, &columns()).unwrap().into_iter().map(|r| (r.text, r.label)).collect::<Vec<_>>();
        let expected = vec![("Rain\nWet, cold".to_string(), "2".to_string()), ("Sun\nhot\nand dry".into(), "0".into()), ("Fog\ngrey".into(), "1".into())];
        for path in [&csv, &tsv, &jsonl, &json] {
            assert_eq!(pairs(path), expected, "{}", path.display());
        }
        let records = read_labelled(&jsonl, &columns()).unwrap();
        assert_eq!(records[1].at, format!("{}: line 3", jsonl.display()), "blank lines keep the numbering");
        // Integer labels sort numerically, not as text.
        let many: Vec<LabelledText> = ["10", "2", "1"].iter().map(|l| LabelledText { text: String::new(), label: l.to_string(), at: String::new() }).collect();
        assert_eq!(label_set(&many, None).unwrap(), ["1", "2", "10"]);
    }

    #[test]
    fn bad_files_and_labels_name_the_file_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(dir.path(), "b.csv", "title,topic\nRain,wet\nSun,\n");
        let err = read_labelled(&csv, &Columns { text: vec!["body".into()], label: "topic".into() }).unwrap_err().to_string();
        assert!(err.contains("b.csv") && err.contains("no column `body`") && err.contains("title, topic"), "{err}");
        let err = read_labelled(&csv, &Columns { text: vec!["title".into()], label: "topic".into() }).unwrap_err().to_string();
        assert!(err.contains("b.csv: line 3") && err.contains("empty"), "{err}");
        let jsonl = write(dir.path(), "b.jsonl", "{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":[1],\"label\":\"y\"}\n");
        let err = read_labelled(&jsonl, &Columns::default()).unwrap_err().to_string();
        assert!(err.contains("b.jsonl: line 2") && err.contains("`text` is a list"), "{err}");
        let err = read_labelled(&write(dir.path(), "b.txt", "x"), &Columns::default()).unwrap_err().to_string();
        assert!(err.contains("unknown format"), "{err}");

        let records = read_labelled(&write(dir.path(), "c.jsonl", "{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"b\",\"label\":\"z\"}\n"), &Columns::default()).unwrap();
        let labels = label_set(&records[..1], Some(&["x".to_string(), "y".to_string()])).unwrap();
        let err = class_indices(&records, &labels).unwrap_err().to_string();
        assert!(err.contains("c.jsonl: line 2") && err.contains("`z`") && err.contains("x, y"), "{err}");
        assert!(label_set(&records[..1], None).unwrap_err().to_string().contains("at least 2"));
        assert!(label_set(&records, Some(&["x".into(), "x".into()])).unwrap_err().to_string().contains("twice"));
    }

    /// Every class is cut at ⌊0.7·n⌋ / ⌊0.1·n⌋ exactly; balancing cuts every class to the smallest;
    /// the same seed gives the same split.
    #[test]
    fn stratified_splits_have_exact_counts_per_class() {
        // Class sizes 50, 31, 9 and 20.
        let classes: Vec<usize> = [(0, 50), (1, 31), (2, 9), (3, 20)].iter().flat_map(|&(c, n)| std::iter::repeat_n(c, n)).collect();
        let splits = stratified_split(&classes, 0.7, 0.1, false, 7).unwrap();
        let count = |split: &[usize], c: usize| split.iter().filter(|&&i| classes[i] == c).count();
        for (c, n) in [(0, 50), (1, 31), (2, 9), (3, 20)] {
            let (train, validation) = (n * 7 / 10, n / 10);
            assert_eq!((count(&splits.train, c), count(&splits.validation, c), count(&splits.test, c)), (train, validation, n - train - validation), "class {c}");
        }
        let mut all: Vec<usize> = splits.train.iter().chain(&splits.validation).chain(&splits.test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..classes.len()).collect::<Vec<_>>(), "every example once");
        assert_eq!(stratified_split(&classes, 0.7, 0.1, false, 7).unwrap().train, splits.train);
        assert_ne!(stratified_split(&classes, 0.7, 0.1, false, 8).unwrap().train, splits.train);

        let balanced = stratified_split(&classes, 0.7, 0.1, true, 7).unwrap();
        for c in 0..4 {
            assert_eq!((count(&balanced.train, c), count(&balanced.validation, c), count(&balanced.test, c)), (6, 0, 3), "class {c}: 9 each");
        }
        assert!(stratified_split(&classes, 0.9, 0.2, false, 7).is_err());
    }
}
