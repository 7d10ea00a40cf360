//! Where a data set is (`--data SOURCE`), and its splits:
//!
//! - a file (any format [`records`](super::records) reads): one split, the data itself;
//! - a directory with split files: `train.*`, `validation.*`, `test.*`, or several parquet
//!   files per split (`train-00000-of-00002.parquet`, also under `data/` as hub repos keep them);
//! - `hf:owner/name[:config][@split]`: a data set on the Hugging Face hub, through the same hub
//!   code as models (cache, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`, progress bars, resumed
//!   downloads). Its files are the repo's own data files, or else the hub's parquet export
//!   (the `refs/convert/parquet` branch); a split's files are downloaded when it is read.
//!
//! Files are told apart by the layouts the hub uses: `{config}/{split}-*.parquet`,
//! `data/{split}-*.parquet` (config `default`), `{config}/{split}/0000.parquet` and
//! `{config}/{name}-{split}.parquet` (the parquet export), `{split}.jsonl`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};
use gpt::io::HubOptions;
use gpt::io::hub::{DatasetFiles, hub_error, is_not_found, list_dataset};
use serde_json::{Value, json};

use super::records::{Record, is_data_file, read_records};

/// The hub's parquet export of every public data set.
pub const PARQUET_EXPORT: &str = "refs/convert/parquet";
/// The config of files that name none (`data/train-*.parquet`, `train.jsonl`).
pub const DEFAULT_CONFIG: &str = "default";
/// Other names of the validation split.
const VALIDATION_NAMES: [&str; 4] = ["validation", "valid", "val", "dev"];

/// A data set's splits: split name → files, and how to get them.
pub struct DataSource {
    /// As the user wrote it.
    pub name: String,
    /// The split `@split` chose, or `None` (a plain file's data is its only split, `train`).
    pub chosen_split: Option<String>,
    /// A single file, not a directory or a data set.
    is_file: bool,
    splits: BTreeMap<String, Vec<String>>,
    place: Place,
}

enum Place {
    /// Files relative to `root` (a file's own directory for a single file).
    Local { root: PathBuf },
    Hub { dataset: String, config: String, files: Box<DatasetFiles>, options: HubOptions },
}

impl DataSource {
    /// Resolves `text`: `hf:owner/name[:config][@split]`, a directory, or a file.
    pub fn open(text: &str, options: &HubOptions) -> Result<Self> {
        if let Some(spec) = text.strip_prefix("hf:") {
            return Self::hub(text, spec, options);
        }
        let path = Path::new(text);
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read the data {text}"))?;
        if meta.is_file() {
            ensure!(is_data_file(path), "{text}: unknown format: expected a .csv, .tsv, .jsonl, .json or .parquet file (or a directory, or hf:owner/name)");
            let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let splits = BTreeMap::from([("train".to_string(), vec![name])]);
            return Ok(Self { name: text.to_string(), chosen_split: None, is_file: true, splits, place: Place::Local { root } });
        }
        let files = list_local(path)?;
        let config = default_config(&configs_of(&files)).map_err(|e| anyhow!("{text}: {e}"))?;
        let splits = splits_of(&files, config.as_deref(), "").with_context(|| format!("{text}: a directory of split files"))?;
        ensure!(
            !splits.is_empty(),
            "{text}: no split files (expected train.csv / train.jsonl / train.parquet …, and optionally validation.* and test.*)"
        );
        Ok(Self { name: text.to_string(), chosen_split: None, is_file: false, splits, place: Place::Local { root: path.to_path_buf() } })
    }

    fn hub(text: &str, spec: &str, options: &HubOptions) -> Result<Self> {
        let (spec, split) = match spec.split_once('@') {
            Some((spec, split)) => (spec, Some(split.to_string())),
            None => (spec, None),
        };
        let (dataset, config) = match spec.split_once(':') {
            Some((dataset, config)) => (dataset, Some(config.to_string())),
            None => (spec, None),
        };
        ensure!(
            gpt::io::hub::is_repo_id(dataset) && dataset.contains('/') && split.as_deref() != Some("") && config.as_deref() != Some(""),
            "{text}: expected hf:owner/name, hf:owner/name:config, hf:owner/name@split or hf:owner/name:config@split"
        );
        if options.offline {
            return Self::cached(text, dataset, config, split, options);
        }
        let short_name = dataset.rsplit('/').next().unwrap_or(dataset);
        let mut tried = Vec::new();
        for revision in [options.revision.as_str(), PARQUET_EXPORT] {
            let files = match list_dataset(dataset, revision, options) {
                Ok(files) => files,
                // Not every data set has a parquet export.
                Err(e) if revision == PARQUET_EXPORT && is_not_found(&e) => {
                    tried.push(format!("{revision}: none"));
                    continue;
                }
                Err(e) => return Err(anyhow!(hub_error(dataset, "", options, e))),
            };
            let data: Vec<String> = files.files.iter().filter(|f| is_data_file(Path::new(f))).cloned().collect();
            let configs = configs_of(&data);
            if let Some(chosen) = choose_config(&configs, config.as_deref()).map_err(|e| anyhow!("{text}: {e}"))? {
                let splits = splits_of(&data, Some(&chosen), short_name)?;
                let source = Self {
                    name: text.to_string(),
                    chosen_split: split.clone(),
                    is_file: false,
                    splits,
                    place: Place::Hub { dataset: dataset.to_string(), config: chosen, files: Box::new(files), options: options.clone() },
                };
                source.check_chosen_split()?;
                return Ok(source);
            }
            tried.push(format!("{revision}: {}", if configs.is_empty() { "no data files".to_string() } else { format!("configs {}", configs.join(", ")) }));
        }
        match config {
            Some(config) => bail!("{text}: the data set has no config `{config}` ({})", tried.join("; ")),
            None => bail!("{text}: the data set has no data files llmfs reads ({})", tried.join("; ")),
        }
    }

    /// Offline: the newest snapshot of the data set in the HF cache, as far as it was downloaded.
    fn cached(text: &str, dataset: &str, config: Option<String>, split: Option<String>, options: &HubOptions) -> Result<Self> {
        let repo = hf_hub::Repo::new(dataset.to_string(), hf_hub::RepoType::Dataset);
        let snapshots = options.cache_dir.join(repo.folder_name()).join("snapshots");
        let newest = std::fs::read_dir(&snapshots)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
        let Some(snapshot) = newest.map(|e| e.path()) else {
            bail!(
                "{text}: HF_HUB_OFFLINE is set and the data set is not in the Hugging Face cache ({}). Run once with \
                 the network (same HF_HOME) to download it, or pass --data with local files",
                snapshots.display()
            );
        };
        let files = list_local(&snapshot)?;
        let configs = configs_of(&files);
        let chosen = choose_config(&configs, config.as_deref()).map_err(|e| anyhow!("{text}: {e}"))?.with_context(|| match &config {
            Some(config) => format!("{text}: the cached copy in {} has no config `{config}` (it has {})", snapshot.display(), configs.join(", ")),
            None => format!("{text}: the cached copy in {} has no data files", snapshot.display()),
        })?;
        let short_name = dataset.rsplit('/').next().unwrap_or(dataset);
        let splits = splits_of(&files, Some(&chosen), short_name)?;
        let source = Self { name: text.to_string(), chosen_split: split, is_file: false, splits, place: Place::Local { root: snapshot } };
        source.check_chosen_split()?;
        Ok(source)
    }

    fn check_chosen_split(&self) -> Result<()> {
        if let Some(split) = &self.chosen_split {
            ensure!(self.splits.contains_key(split), "{}: no split `{split}` (it has {})", self.name, self.split_names().join(", "));
        }
        Ok(())
    }

    /// The splits found, sorted.
    pub fn split_names(&self) -> Vec<String> {
        self.splits.keys().cloned().collect()
    }

    /// The split a job reads by default: the one `@split` chose, else `preferred` (`train` to
    /// train on, `test` to evaluate) when there is one, else a plain file's data.
    pub fn main_split(&self, preferred: &str) -> Result<String> {
        if let Some(split) = &self.chosen_split {
            return Ok(split.clone());
        }
        if self.splits.contains_key(preferred) {
            return Ok(preferred.to_string());
        }
        match self.splits.keys().collect::<Vec<_>>()[..] {
            [only] => Ok(only.clone()),
            _ => bail!("{}: no `{preferred}` split (it has {}); name one with @split", self.name, self.split_names().join(", ")),
        }
    }

    /// The source's own validation or test split (`which` is `validation` or `test`), when it has
    /// one and no `@split` narrowed it to one split.
    pub fn other_split(&self, which: &str) -> Option<String> {
        if self.chosen_split.is_some() {
            return None;
        }
        let names: &[&str] = if which == "validation" { &VALIDATION_NAMES } else { &[which] };
        names.iter().find(|n| self.splits.contains_key(**n)).map(|n| n.to_string())
    }

    /// `split` of this source for messages: `data.csv` for a file (its data is its one split),
    /// `hf:owner/name (test)` for a split of a directory or a data set.
    pub fn split_label(&self, split: &str) -> String {
        if self.is_file { self.name.clone() } else { format!("{} ({split})", self.name) }
    }

    /// The records of `split`, its files downloaded first when they are on the hub.
    pub fn read(&self, split: &str, columns: Option<&[String]>) -> Result<Vec<Record>> {
        let names = self.splits.get(split).with_context(|| format!("{}: no split `{split}`", self.name))?;
        let mut records = Vec::new();
        for name in names {
            records.extend(read_records(&self.fetch(name)?, columns)?);
        }
        Ok(records)
    }

    fn fetch(&self, name: &str) -> Result<PathBuf> {
        match &self.place {
            Place::Local { root } => Ok(root.join(name)),
            Place::Hub { dataset, files, options, .. } => gpt::io::hub::get_shared(&files.repo, name).map_err(|e| anyhow!(hub_error(dataset, name, options, e))),
        }
    }

    /// What the source was, for run.json: the files of every split (and the hub commit).
    pub fn describe(&self) -> Value {
        match &self.place {
            Place::Local { root } => json!({ "source": self.name, "root": root, "splits": self.splits }),
            Place::Hub { dataset, config, files, .. } => {
                json!({ "source": self.name, "dataset": dataset, "config": config, "commit": files.commit, "splits": self.splits })
            }
        }
    }
}

/// The data files under `dir` (two levels down at most, hidden ones left out), relative, sorted.
fn list_local(dir: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<String>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                continue;
            }
            if path.is_dir() && depth < 2 {
                walk(root, &path, depth + 1, out)?;
            } else if path.is_file() && is_data_file(&path) {
                let relative = path.strip_prefix(root).unwrap_or(&path);
                out.push(relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, 0, &mut files)?;
    files.sort();
    Ok(files)
}

/// The config of a repo file: its first folder, except `data/` and the top level (`default`).
fn config_of(file: &str) -> &str {
    match file.split_once('/') {
        Some(("data", _)) | None => DEFAULT_CONFIG,
        Some((config, _)) => config,
    }
}

fn configs_of(files: &[String]) -> Vec<String> {
    let mut configs: Vec<String> = files.iter().map(|f| config_of(f).to_string()).collect();
    configs.sort();
    configs.dedup();
    configs
}

/// The config to read when none is named: the only one, or `default`; several others are an error.
fn default_config(configs: &[String]) -> Result<Option<String>> {
    match configs {
        [] => Ok(None),
        [only] => Ok(Some(only.clone())),
        _ if configs.iter().any(|c| c == DEFAULT_CONFIG) => Ok(Some(DEFAULT_CONFIG.to_string())),
        _ => bail!("the data set has several configs ({}): name one, hf:owner/name:CONFIG", configs.join(", ")),
    }
}

/// The config to read: `named` when the files have it (else `None`), or [`default_config`].
fn choose_config(configs: &[String], named: Option<&str>) -> Result<Option<String>> {
    match named {
        Some(config) => Ok(configs.iter().find(|c| *c == config).cloned()),
        None => default_config(configs),
    }
}

/// The split of a data file: the folder below the config (`train/`, `partial-train/`), else the
/// file name before its shard numbers (`train-00000-of-00002-…`) or extension, without the data
/// set's name in front (`imdb-train.parquet`).
fn split_of(file: &str, short_name: &str) -> String {
    let mut parts: Vec<&str> = file.split('/').collect();
    let name = parts.pop().unwrap_or_default();
    // Folders: the config (or `data`), then perhaps a split folder.
    if parts.len() >= 2 {
        let folder = parts[parts.len() - 1];
        return folder.strip_prefix("partial-").unwrap_or(folder).to_string();
    }
    let stem = name.split('.').next().unwrap_or(name);
    let stem = shard_prefix(stem).unwrap_or(stem);
    let stem = stem.strip_prefix(&format!("{short_name}-")).filter(|s| !s.is_empty() && !short_name.is_empty()).unwrap_or(stem);
    stem.to_string()
}

/// `train` of `train-00000-of-00002` or `train-00000-of-00002-5a1f…`.
fn shard_prefix(stem: &str) -> Option<&str> {
    let at = stem.find("-of-")?;
    let (before, after) = (&stem[..at], &stem[at + 4..]);
    let (prefix, index) = before.rsplit_once('-')?;
    let numbered = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (numbered(index) && numbered(after.split('-').next().unwrap_or(""))).then_some(prefix)
}

/// The files of `config` (every file when `None`) by split.
fn splits_of(files: &[String], config: Option<&str>, short_name: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let mut splits: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files.iter().filter(|f| config.is_none_or(|c| config_of(f) == c)) {
        splits.entry(split_of(file, short_name)).or_default().push(file.clone());
    }
    for (split, files) in &splits {
        let formats: std::collections::BTreeSet<_> = files.iter().filter_map(|f| Path::new(f).extension()).collect();
        ensure!(formats.len() == 1, "split `{split}` has files of several formats ({}): keep one", files.join(", "));
    }
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// The layouts of real hub repos and of the parquet export.
    #[test]
    fn splits_and_configs_follow_the_hub_layouts() {
        // fancyzhx/ag_news, tatsu-lab/alpaca: data/{split}-*.parquet.
        let ag = names(&["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]);
        assert_eq!(configs_of(&ag), ["default"]);
        let splits = splits_of(&ag, Some("default"), "ag_news").unwrap();
        assert_eq!(splits.keys().collect::<Vec<_>>(), ["test", "train"]);
        // stanfordnlp/imdb: {config}/{split}-*.parquet.
        let imdb = names(&["plain_text/test-00000-of-00001.parquet", "plain_text/train-00000-of-00001.parquet", "plain_text/unsupervised-00000-of-00001.parquet"]);
        assert_eq!(default_config(&configs_of(&imdb)).unwrap().as_deref(), Some("plain_text"));
        assert_eq!(splits_of(&imdb, Some("plain_text"), "imdb").unwrap().keys().collect::<Vec<_>>(), ["test", "train", "unsupervised"]);
        // The parquet export, new and old naming, partial exports.
        let export = names(&["plain_text/train/0000.parquet", "plain_text/train/0001.parquet", "plain_text/partial-test/0000.parquet", "other/imdb-train.parquet"]);
        let splits = splits_of(&export, Some("plain_text"), "imdb").unwrap();
        assert_eq!(splits["train"], ["plain_text/train/0000.parquet", "plain_text/train/0001.parquet"]);
        assert_eq!(splits["test"], ["plain_text/partial-test/0000.parquet"]);
        assert_eq!(splits_of(&export, Some("other"), "imdb").unwrap().keys().collect::<Vec<_>>(), ["train"]);
        assert!(default_config(&configs_of(&export)).unwrap_err().to_string().contains("other, plain_text"));
        // A local directory: train.csv, validation.csv, test.csv.
        let local = names(&["test.csv", "train.csv", "validation.csv"]);
        assert_eq!(splits_of(&local, None, "").unwrap().keys().collect::<Vec<_>>(), ["test", "train", "validation"]);
        assert!(splits_of(&names(&["train.csv", "train.jsonl"]), None, "").unwrap_err().to_string().contains("several formats"));
        assert_eq!(shard_prefix("train-00000-of-00002-5a1f"), Some("train"));
        assert_eq!(shard_prefix("my-data"), None);
    }
}
